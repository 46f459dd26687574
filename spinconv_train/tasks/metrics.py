"""OC20 metrics, accumulated as sums and counts so that a distributed run gives the
same numbers as a single process.

Definitions (OC20): energy_mae over structures; forces_mae (and forces_rmse) over every
component of the free atoms, in every command (``--mode validate``, ``spinconv-evaluate``),
and over all atoms only under the names ``forces_mae_all_atoms`` / ``forces_rmse_all_atoms``;
forces_cos per free atom, averaged; forces_magnitude = |‖F̂‖ − ‖F‖| per free atom, averaged;
EwT: |ΔE| < 0.02 eV; EFwT: |ΔE| < 0.02 eV and the largest |ΔF component|
over the structure's free atoms < 0.03 eV/Å; ADwT: per structure the mean minimum-image
distance of free atoms to the reference positions, success averaged over the thresholds
0.01, 0.011, …, 0.499 Å (the reference's ``np.arange(0.01, 0.5, 0.001)``).
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch

from spinconv_train.distributed import all_reduce_sum

ENERGY_THRESHOLD = 0.02
FORCE_THRESHOLD = 0.03
ADWT_THRESHOLDS = 0.01 + 0.001 * np.arange(490)

# Metrics where a larger value is better (ReduceLROnPlateau mode 'max', best checkpoint).
HIGHER_IS_BETTER = frozenset({
    "forces_cos", "energy_within_threshold", "energy_force_within_threshold",
    "average_distance_within_threshold",
})

SumCount = tuple[float, float]


def higher_is_better(metric: str) -> bool:
    return metric in HIGHER_IS_BETTER


def is_rmse(metric: str) -> bool:
    """Whether ``metric`` is a root-mean-square error (``*_rmse``, ``*_rmse_<subset>``), which
    accumulates squared errors and takes the root of their global mean."""
    return metric.endswith("_rmse") or "_rmse_" in metric


def energy_mae(pred: torch.Tensor, target: torch.Tensor) -> SumCount:
    return float((pred - target).abs().sum()), float(pred.shape[0])


def energy_per_atom_mae(pred: torch.Tensor, target: torch.Tensor, natoms: torch.Tensor) -> SumCount:
    """Mean over structures of |energy error| / atoms."""
    return float(((pred - target).abs() / natoms.to(pred.dtype)).sum()), float(pred.shape[0])


def energy_squared_error(pred: torch.Tensor, target: torch.Tensor) -> SumCount:
    """Sum and count of squared energy errors (an ``energy_rmse`` once the root is taken)."""
    return float(((pred - target) ** 2).sum()), float(pred.shape[0])


def forces_squared_error(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> SumCount:
    """Sum and count of squared force components of the ``mask`` atoms (``forces_rmse``)."""
    diff = pred[mask] - target[mask]
    return float((diff ** 2).sum()), float(diff.numel())


def energy_within_threshold(pred: torch.Tensor, target: torch.Tensor) -> SumCount:
    return float(((pred - target).abs() < ENERGY_THRESHOLD).sum()), float(pred.shape[0])


def forces_mae(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> SumCount:
    err = (pred[mask] - target[mask]).abs()
    return float(err.sum()), float(err.numel())


def forces_cos(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> SumCount:
    cos = torch.nn.functional.cosine_similarity(pred[mask], target[mask], dim=-1)
    return float(cos.sum()), float(cos.numel())


def forces_magnitude(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> SumCount:
    err = (pred[mask].norm(dim=-1) - target[mask].norm(dim=-1)).abs()
    return float(err.sum()), float(err.numel())


def energy_force_within_threshold(pred_e: torch.Tensor, target_e: torch.Tensor, pred_f: torch.Tensor,
                                  target_f: torch.Tensor, mask: torch.Tensor, batch: torch.Tensor) -> SumCount:
    """Structures whose energy and every free-atom force component are within threshold."""
    per_atom = (pred_f - target_f).abs().amax(dim=-1) * mask.to(pred_f.dtype)
    worst = torch.zeros(pred_e.shape[0], dtype=pred_f.dtype, device=pred_f.device)
    worst = worst.scatter_reduce(0, batch, per_atom, reduce="amax", include_self=True)
    ok = ((pred_e - target_e).abs() < ENERGY_THRESHOLD) & (worst < FORCE_THRESHOLD)
    return float(ok.sum()), float(pred_e.shape[0])


def minimum_image_distance(pos_a: np.ndarray, pos_b: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """Per-atom distance between two position sets under the minimum-image convention."""
    diff = np.asarray(pos_a, dtype=np.float64) - np.asarray(pos_b, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    if pbc.any() and abs(np.linalg.det(cell)) > 1e-12:
        frac = diff @ np.linalg.inv(cell)
        frac[:, pbc] -= np.round(frac[:, pbc])
        diff = frac @ cell
    return np.linalg.norm(diff, axis=-1)


def average_distance_within_threshold(pred_pos: np.ndarray, target_pos: np.ndarray, cell: np.ndarray,
                                      pbc: np.ndarray) -> float:
    """ADwT of one structure (free atoms only): the fraction of thresholds it meets."""
    mean_distance = minimum_image_distance(pred_pos, target_pos, cell, pbc).mean()
    return float((mean_distance < ADWT_THRESHOLDS).mean())


class MetricAccumulator:
    """Sums and counts per metric name; ``compute`` all-reduces them and divides."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        # Declaring the names up front keeps the all-reduce aligned on a rank with no data.
        self.sums: dict[str, float] = {n: 0.0 for n in names}
        self.counts: dict[str, float] = {n: 0.0 for n in names}

    def add(self, name: str, value: SumCount) -> None:
        total, count = value
        self.sums[name] = self.sums.get(name, 0.0) + total
        self.counts[name] = self.counts.get(name, 0.0) + count

    def compute(self, device: torch.device | None = None) -> dict[str, float]:
        """Metric values over every process (sum of sums / sum of counts)."""
        names = sorted(self.sums)
        packed = torch.tensor([[self.sums[n], self.counts[n]] for n in names] or [[0.0, 0.0]],
                              dtype=torch.float64, device=device)
        all_reduce_sum(packed)
        values = {n: float(packed[i, 0] / packed[i, 1]) if packed[i, 1] > 0 else float("nan")
                  for i, n in enumerate(names)}
        # ``*_rmse`` metrics accumulate squared errors: the root is taken of the global mean.
        return {n: math.sqrt(v) if is_rmse(n) and v == v else v for n, v in values.items()}
