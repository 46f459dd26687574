"""Energies and element counts over a split, and element reference energies fitted on them."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .errors import DatasetError

MAX_Z = 118


def scalar(value) -> float:
    """A stored energy as a Python float without a detour through float32."""
    if isinstance(value, torch.Tensor):
        return float(value.reshape(-1)[0])
    return float(value)


def energies_and_counts(
    dataset, field: str = "y", indices: Sequence[int] | None = None, max_z: int = MAX_Z
) -> tuple[np.ndarray, np.ndarray]:
    """``(energies (n,), element counts (n, max_z+1))`` for ``indices`` of ``dataset``.

    Uses the dataset's own light pass (``dataset.energies_and_counts``: no graphs, no
    transforms) when it has one, else reads ``dataset[i]``.
    """
    if hasattr(dataset, "energies_and_counts"):
        return dataset.energies_and_counts(field=field, indices=indices, max_z=max_z)
    indices = range(len(dataset)) if indices is None else indices
    energies = np.empty(len(indices), dtype=np.float64)
    counts = np.zeros((len(indices), max_z + 1), dtype=np.float64)
    for row, index in enumerate(indices):
        data = dataset[int(index)]
        value = getattr(data, field, None)
        if value is None:
            raise DatasetError("missing energy field", index=int(index), field=field)
        energies[row] = scalar(value)
        counts[row] = np.bincount(torch.as_tensor(data.atomic_numbers).long().numpy(), minlength=max_z + 1)
    return energies, counts


def fit_element_references(
    dataset, field: str = "y", indices: Sequence[int] | None = None, max_z: int = MAX_Z
) -> torch.Tensor:
    """Per-element energies (max_z+1,) from a least-squares fit of energy on element counts.

    Fit on the training split only (pass its ``indices`` or the training dataset).
    Elements absent from the data get 0. With a single composition (MD17) the system is
    rank deficient and the minimum-norm solution is returned: it still reproduces the
    mean energy exactly.
    """
    energies, counts = energies_and_counts(dataset, field=field, indices=indices, max_z=max_z)
    if len(energies) == 0:
        raise DatasetError("cannot fit element references on an empty split", field=field)
    present = np.flatnonzero(counts.sum(axis=0) > 0)
    coef, *_ = np.linalg.lstsq(counts[:, present], energies, rcond=None)
    refs = np.zeros(max_z + 1, dtype=np.float64)
    refs[present] = coef
    return torch.from_numpy(refs)
