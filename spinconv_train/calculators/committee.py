"""A committee of trained models as one ASE calculator: the mean prediction and the
spread between members, the usual uncertainty estimate for molecular dynamics and active
learning (train the members with different seeds or data splits).

Results besides ``energy`` / ``forces`` (/ ``stress``), all means over the members:
``energy_std`` (eV), ``forces_std`` (N,) eV/Å (per atom, the norm of the component-wise
standard deviations), ``max_forces_std`` (eV/Å, the largest of those) and, with a stress,
``stress_std`` (6,). Standard deviations use ``n - 1`` (the sample spread).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from spinconv_train.calculators.calculator import ModelCalculator
from spinconv_train.calculators.predict import calculator_properties


def committee_statistics(predictions: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and spread of members' ``{"energy", "forces"[, "stress"]}`` predictions of one structure."""
    if len(predictions) < 2:
        raise ValueError(f"a committee needs at least 2 members, got {len(predictions)}")
    energies = np.array([float(p["energy"]) for p in predictions])
    forces = np.stack([np.asarray(p["forces"], dtype=np.float64) for p in predictions])
    force_std = np.linalg.norm(forces.std(axis=0, ddof=1), axis=-1)
    result = {"energy": float(energies.mean()), "energy_std": float(energies.std(ddof=1)),
              "forces": forces.mean(axis=0), "forces_std": force_std,
              "max_forces_std": float(force_std.max()) if force_std.size else 0.0}
    if all("energies" in p for p in predictions):
        result["energies"] = np.mean([np.asarray(p["energies"], dtype=np.float64) for p in predictions], axis=0)
    if all("stress" in p for p in predictions):
        stresses = np.stack([np.asarray(p["stress"], dtype=np.float64) for p in predictions])
        result["stress"] = stresses.mean(axis=0)
        result["stress_std"] = stresses.std(axis=0, ddof=1)
    return result


class CommitteeCalculator(Calculator):
    """The mean and spread of several :class:`ModelCalculator` members (module docstring)."""

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(self, members: Sequence[ModelCalculator], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if len(members) < 2:
            raise ValueError(f"a committee needs at least 2 members, got {len(members)}")
        self.members = list(members)
        self.implemented_properties = calculator_properties(all(m.supports_stress for m in self.members),
                                                            all(m.supports_atom_energies for m in self.members))

    @classmethod
    def from_checkpoints(cls, paths: Sequence[str], device: str = "cpu", use_ema: bool = True,
                         cuda_graphs: bool = False) -> CommitteeCalculator:
        """One member per checkpoint (EMA weights when saved and ``use_ema``; ``cuda_graphs``
        as ``ModelCalculator.from_checkpoint``)."""
        return cls([ModelCalculator.from_checkpoint(p, device=device, use_ema=use_ema, cuda_graphs=cuda_graphs)
                    for p in paths])

    @property
    def models(self) -> list[Any]:
        return [m.model for m in self.members]

    def calculate(self, atoms: Atoms | None = None, properties: Sequence[str] = ("energy",),
                  system_changes: Sequence[str] = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        predictions = []
        for member in self.members:
            member.calculate(self.atoms, properties, all_changes)
            predictions.append(member.results)
        result = committee_statistics(predictions)
        result["free_energy"] = result["energy"]
        self.results = result
