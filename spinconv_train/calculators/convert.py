"""Structure records (docs/design.md layout) to ASE ``Atoms`` and back to a model batch."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.constraints import FixAtoms

from spinconv_train.datasets import DatasetError, collate
from spinconv_train.datasets.ase_convert import atoms_to_data


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def record_to_atoms(data: Any, source: str = "", index: int | None = None) -> Atoms:
    """``Atoms`` of a normalised record: positions, numbers, cell, pbc, tags, and a
    ``FixAtoms`` constraint on the atoms with ``fixed == 1``."""
    pos = getattr(data, "pos", None)
    if pos is None:
        raise DatasetError("record has no positions (needed to relax it)", source, index, "pos")
    pos = _numpy(pos).astype(np.float64).reshape(-1, 3)
    n = pos.shape[0]
    numbers = np.rint(_numpy(data.atomic_numbers).reshape(-1)).astype(np.int64)
    cell = getattr(data, "cell", None)
    cell = np.zeros((3, 3)) if cell is None else _numpy(cell).astype(np.float64).reshape(3, 3)
    pbc = getattr(data, "pbc", None)
    pbc = np.full(3, bool(np.any(cell))) if pbc is None else _numpy(pbc).astype(bool).reshape(3)
    atoms = Atoms(numbers=numbers, positions=pos, cell=cell, pbc=pbc)
    tags = getattr(data, "tags", None)
    if tags is not None:
        atoms.set_tags(_numpy(tags).astype(np.int64).reshape(n))
    fixed = getattr(data, "fixed", None)
    if fixed is not None:
        mask = _numpy(fixed).reshape(n) != 0
        if mask.any():
            atoms.set_constraint(FixAtoms(mask=mask))
    return atoms


def atoms_to_batch(atoms: Atoms, device: torch.device, dtype: torch.dtype = torch.float32) -> Any:
    """A one-structure batch of ``atoms`` (the dataset's field layout) on ``device``, with
    positions and cell in ``dtype`` (taken from the Atoms' float64 values, so a float64
    model sees them unrounded)."""
    return collate([atoms_to_data(atoms, sid=0, dtype=dtype)]).to(device)


def free_atoms(atoms: Atoms) -> np.ndarray:
    """Boolean mask of the atoms no ``FixAtoms`` constraint holds."""
    mask = np.ones(len(atoms), dtype=bool)
    for constraint in atoms.constraints:
        if isinstance(constraint, FixAtoms):
            mask[constraint.get_indices()] = False
    return mask
