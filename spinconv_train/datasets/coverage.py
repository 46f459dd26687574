"""What a model was trained on against what it is given: elements and energy scale.

A model says nothing useful about an element it never saw (its embedding row is still the
random initialisation), and a normaliser fitted on one energy scale turns energies of
another into nonsense. Neither fails loudly by itself, so these checks say it.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase.data import chemical_symbols


class UnseenElementWarning(UserWarning):
    """A structure holds elements that the model's training data did not."""


class EnergyScaleWarning(UserWarning):
    """New training energies do not match the scale of a checkpoint's normaliser."""


def symbol(z: int) -> str:
    """``"Pt"``; numbers outside the periodic table as ``"Z=150"``."""
    return chemical_symbols[z] if 0 < z < len(chemical_symbols) else f"Z={z}"


def element_name(z: int) -> str:
    """``"Pt (78)"``; numbers outside the periodic table as ``"Z=150"``."""
    return f"{chemical_symbols[z]} ({z})" if 0 < z < len(chemical_symbols) else f"Z={z}"


def elements_of(atomic_numbers: torch.Tensor | np.ndarray | Sequence[int]) -> set[int]:
    """The distinct atomic numbers of one structure or a whole batch."""
    values = torch.as_tensor(atomic_numbers).reshape(-1)
    return {int(z) for z in torch.unique(values.long()).tolist()}


def elements_from_counts(counts: np.ndarray) -> set[int]:
    """The elements present in an (n, max_z + 1) matrix of element counts."""
    return {int(z) for z in np.flatnonzero(np.asarray(counts).sum(axis=0) > 0)}


def unseen_elements(seen: Iterable[int] | None, atomic_numbers: torch.Tensor | Sequence[int]) -> list[int]:
    """Elements of ``atomic_numbers`` missing from ``seen`` (sorted); none when ``seen`` is
    unknown (checkpoints written before elements were recorded)."""
    if seen is None:
        return []
    known = set(int(z) for z in seen)
    return sorted(elements_of(atomic_numbers) - known)


class ElementWatch:
    """Warns once per (elements, structure) that a model meets elements its training data
    lacked; the caller passes what the model has seen and what it is at each check."""

    def __init__(self) -> None:
        self._warned: set[tuple[tuple[int, ...], str]] = set()

    def check(self, atomic_numbers: torch.Tensor | Sequence[int], structure: str, seen: Iterable[int] | None,
              source: str) -> list[int]:
        """Return the elements of one structure missing from ``seen`` (None: unknown, never
        warns), warning the first time they appear; ``source`` names the model."""
        missing = unseen_elements(seen, atomic_numbers)
        key = (tuple(missing), structure)
        if missing and key not in self._warned:
            self._warned.add(key)
            warnings.warn(
                f"{structure}: elements {', '.join(element_name(z) for z in missing)} never occurred in the "
                f"training data of {source} (trained on {describe_elements(seen)}); its predictions for them are "
                "not learned. Fine-tune on labelled structures with these elements (finetune.checkpoint) before "
                "trusting them.", UnseenElementWarning, stacklevel=2)
        return missing

    def check_batch(self, atomic_numbers: torch.Tensor, batch: torch.Tensor, names: Sequence[str],
                    seen: Iterable[int] | None, source: str) -> None:
        """:meth:`check` every structure of a batch (``batch``: the structure index per atom)."""
        if not unseen_elements(seen, atomic_numbers):
            return
        for k, name in enumerate(names):
            self.check(atomic_numbers[batch == k], name, seen, source)


@dataclass
class EnergyScale:
    """Energy statistics, as the normaliser sees them: after element references are subtracted."""

    mean: float
    std: float
    count: int


def referenced_energy_scale(energies: np.ndarray, counts: np.ndarray,
                            references: np.ndarray | None) -> EnergyScale:
    """Mean and spread of ``energies - counts @ references`` (references None: the energies)."""
    energies = np.asarray(energies, dtype=np.float64)
    if references is not None:
        refs = np.zeros(counts.shape[1], dtype=np.float64)
        given = np.asarray(references, dtype=np.float64)[: counts.shape[1]]
        refs[: given.size] = given
        energies = energies - np.asarray(counts, dtype=np.float64) @ refs
    std = float(energies.std()) if energies.size > 1 else 0.0
    return EnergyScale(float(energies.mean()), std, int(energies.size))


def energy_scale_mismatch(new: EnergyScale, mean: float, std: float, max_shift: float = 3.0,
                          max_spread_ratio: float = 10.0) -> str | None:
    """Why a checkpoint's normaliser (``mean``, ``std``) does not fit ``new`` data, or None.

    The normalised energies of new data should look like training targets: centred within a
    few units with a spread of order one. A mean further than ``max_shift`` times the larger of
    the two spreads from the checkpoint's, or a spread more than ``max_spread_ratio`` times
    larger or smaller, is more than the data's spread explains.
    """
    spread = max(std, new.std, 1e-12)
    shift = abs(new.mean - mean) / spread
    ratio = max(new.std, 1e-12) / max(std, 1e-12)
    reasons = []
    if shift > max_shift:
        reasons.append(f"their mean {new.mean:.4g} eV is {shift:.3g} spreads from the normaliser's mean {mean:.4g} eV")
    if new.count > 1 and (ratio > max_spread_ratio or ratio < 1 / max_spread_ratio):
        reasons.append(f"their spread {new.std:.4g} eV is {ratio:.3g} times the normaliser's {std:.4g} eV")
    return "; ".join(reasons) or None


def describe_elements(elements: Iterable[int]) -> str:
    """``"C, H, O"`` for messages."""
    return ", ".join(symbol(z) for z in sorted(elements))


__all__ = [
    "ElementWatch", "EnergyScale", "dataset_elements", "EnergyScaleWarning", "UnseenElementWarning",
    "describe_elements", "element_name", "elements_from_counts", "elements_of", "energy_scale_mismatch",
    "referenced_energy_scale", "unseen_elements",
]


def dataset_elements(dataset, indices: Iterable[int] | None = None) -> set[int]:
    """The elements of ``indices`` of ``dataset`` (all records by default), read by the
    dataset's light pass (``raw_record``: no graphs, no transforms) where it has one."""
    read = getattr(dataset, "raw_record", None) or dataset.__getitem__
    found: set[int] = set()
    for index in range(len(dataset)) if indices is None else indices:
        found |= elements_of(read(int(index)).atomic_numbers)
    return found
