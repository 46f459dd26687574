"""Relaxation metrics against the dataset's relaxed references (OC20 IS2RS / IS2RE).

- ``average_distance_within_threshold`` (ADwT): the evaluator's definition (free atoms,
  minimum image), of the relaxed positions against ``pos_relaxed``;
  ``average_distance_within_threshold_initial`` is the same for the unrelaxed input
  positions (the do-nothing baseline).
- ``energy_mae`` / ``energy_within_threshold``: model energy at the relaxed positions
  against ``y_relaxed``. Meaningful only when the model's training energies are referenced
  as ``y_relaxed`` is: in OC20 and data/oc20_mini both S2EF ``y`` and IS2RE ``y_relaxed``
  are adsorption energies with the same references, so they compare directly.
- ``converged`` (fraction of systems with max free-atom force norm < fmax) and
  ``steps_mean`` always.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from spinconv_train.relaxation.runner import RelaxResult
from spinconv_train.tasks.metrics import ENERGY_THRESHOLD, average_distance_within_threshold


def adwt(positions: np.ndarray, result: RelaxResult) -> float:
    """ADwT of ``positions`` against the result's ``pos_relaxed`` over its free atoms."""
    free = result.free
    return average_distance_within_threshold(positions[free], result.pos_relaxed[free], result.cell, result.pbc)


def relaxation_metrics(results: Sequence[RelaxResult]) -> dict[str, float]:
    """Metrics over ``results``; label metrics only when every result has the label."""
    if not results:
        return {}
    metrics = {"converged": float(np.mean([r.converged for r in results])),
               "steps_mean": float(np.mean([r.steps for r in results])),
               "final_fmax_mean": float(np.mean([r.fmax for r in results]))}
    if all(r.pos_relaxed is not None for r in results):
        metrics["average_distance_within_threshold"] = float(np.mean([adwt(r.positions, r) for r in results]))
        metrics["average_distance_within_threshold_initial"] = float(
            np.mean([adwt(r.initial_positions, r) for r in results]))
    if all(r.y_relaxed is not None for r in results):
        errors = np.abs(np.array([r.energy - r.y_relaxed for r in results]))
        metrics["energy_mae"] = float(errors.mean())
        metrics["energy_within_threshold"] = float((errors < ENERGY_THRESHOLD).mean())
    return metrics
