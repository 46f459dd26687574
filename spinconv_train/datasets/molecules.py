"""Shared pieces of the in-memory molecule datasets (MD17, QM9)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch_geometric.data import Data

from .errors import DatasetError
from .records import MAX_Z


def check_array(value: np.ndarray, shape: tuple, path: str, field: str, what: str = "") -> np.ndarray:
    """``value`` as an array with ``shape`` (None = any length) and finite entries."""
    arr = np.asarray(value)
    ok = arr.ndim == len(shape) and all(s is None or s == a for s, a in zip(shape, arr.shape))
    if not ok:
        want = "(" + ", ".join("n" if s is None else str(s) for s in shape) + ")"
        raise DatasetError(f"expected shape {want}{what}, got {arr.shape}", path, field=field)
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1) if arr.ndim else ~np.isfinite(arr)
        if np.any(bad):
            first = int(np.flatnonzero(bad)[0]) if arr.ndim else None
            raise DatasetError("contains NaN or infinite values", path, first, field)
    return arr


def check_elements(z: np.ndarray, path: str, index: int | None = None,
                   elements: Sequence[int] | None = None) -> None:
    """Atomic numbers must lie in 1..118 (and in ``elements`` when given)."""
    z = np.asarray(z)
    bad = z[(z < 1) | (z > MAX_Z)]
    if bad.size:
        raise DatasetError(f"unknown element(s) {sorted(set(bad.tolist()))}", path, index, "atomic_numbers")
    if elements is not None:
        outside = sorted(set(z.tolist()) - set(int(e) for e in elements))
        if outside:
            raise DatasetError(f"element(s) {outside} not in the configured elements {sorted(elements)}",
                               path, index, "atomic_numbers")


def molecule_data(z: np.ndarray, pos: np.ndarray, sid, fid: int) -> Data:
    """A non-periodic structure: zero cell, ``pbc`` False, zero tags and fixed."""
    n = len(z)
    return Data(
        pos=torch.as_tensor(np.asarray(pos, dtype=np.float32)),
        atomic_numbers=torch.as_tensor(np.asarray(z, dtype=np.float32)),
        natoms=torch.tensor([n], dtype=torch.long),
        cell=torch.zeros(1, 3, 3),
        pbc=torch.zeros(1, 3, dtype=torch.bool),
        tags=torch.zeros(n, dtype=torch.long),
        fixed=torch.zeros(n),
        sid=sid,
        fid=int(fid),
    )
