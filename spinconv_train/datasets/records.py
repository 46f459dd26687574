"""Bring structure records to the shared ``Data`` layout and check them.

The layout is fixed in docs/design.md ("A structure and a batch"). Records read from
OC20-style files are normalised in place (``natoms`` as a (1,) long tensor, ``cell`` as
(1,3,3), ``pbc`` (1,3) bool — added from the cell when absent, as docs/design.md says —
``tags``/``fixed`` present) and validated: shapes, finite values, known elements.
Checks run on numpy views of the tensors (no copies): a few µs per record.
"""
from __future__ import annotations

from typing import Iterable, Optional

import numpy as np
import torch
from torch_geometric.data import Data

from .errors import DatasetError

MAX_Z = 118

# Fields a structure must have whatever the task.
STRUCTURE_FIELDS = ("pos", "atomic_numbers")
# Target fields checked for shape and finiteness when present; None: any shape.
TARGET_SHAPES = {"y": None, "force": "n3", "y_init": None, "y_relaxed": None, "pos_relaxed": "n3"}


def _tensor(value) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.as_tensor(value)


def normalize_structure(data: Data, path: Optional[str] = None, index: Optional[int] = None) -> Data:
    """Fill in and reshape the structure fields of ``data`` (in place) and return it."""
    store = data._store
    for field in STRUCTURE_FIELDS:
        if store.get(field) is None:
            raise DatasetError("missing required field", path, index, field)
    pos = _tensor(store["pos"])
    if pos.dim() != 2 or pos.shape[1] != 3:
        raise DatasetError(f"expected shape (N, 3), got {tuple(pos.shape)}", path, index, "pos")
    n = pos.shape[0]
    z = _tensor(store["atomic_numbers"])
    if z.shape != (n,):
        raise DatasetError(f"expected shape ({n},), got {tuple(z.shape)}", path, index, "atomic_numbers")
    natoms = store.get("natoms")
    if natoms is None:
        store["natoms"] = torch.tensor([n], dtype=torch.long)
    else:
        natoms = _tensor(natoms).reshape(-1)
        if natoms.numel() != 1 or int(natoms[0]) != n:
            raise DatasetError(f"natoms {natoms.tolist()} does not match {n} positions", path, index, "natoms")
        store["natoms"] = natoms.long() if natoms.dtype != torch.long else natoms
    cell = store.get("cell")
    if cell is None:
        store["cell"] = torch.zeros(1, 3, 3, dtype=pos.dtype)
    else:
        cell = _tensor(cell)
        if cell.numel() != 9:
            raise DatasetError(f"expected shape (1, 3, 3), got {tuple(cell.shape)}", path, index, "cell")
        if cell.shape != (1, 3, 3):
            store["cell"] = cell.reshape(1, 3, 3)
    pbc = store.get("pbc")
    if pbc is None:  # OC20 files carry no pbc: periodic in all directions when the cell is non-zero
        store["pbc"] = torch.full((1, 3), bool(store["cell"].any()), dtype=torch.bool)
    else:
        pbc = _tensor(pbc)
        if pbc.numel() != 3:
            raise DatasetError(f"expected shape (1, 3), got {tuple(pbc.shape)}", path, index, "pbc")
        store["pbc"] = pbc.reshape(1, 3).bool()
    for field in ("tags", "fixed"):
        value = store.get(field)
        if value is None:
            store[field] = torch.zeros(n, dtype=torch.long if field == "tags" else torch.float32)
            continue
        value = _tensor(value)
        if value.shape != (n,):
            raise DatasetError(f"expected shape ({n},), got {tuple(value.shape)}", path, index, field)
        if field == "tags" and value.dtype != torch.long:
            value = value.long()
        store[field] = value
    return data


def validate_structure(
    data: Data,
    path: Optional[str] = None,
    index: Optional[int] = None,
    required: Iterable[str] = (),
    elements: Optional[Iterable[int]] = None,
) -> None:
    """Check a normalised structure: required fields, shapes, finite numbers, elements.

    Raises ``DatasetError`` naming ``path``, ``index`` and the offending field.
    """
    store = data._store
    n = int(store["pos"].shape[0])
    for field in required:
        if store.get(field) is None:
            raise DatasetError("missing field required by the task", path, index, field)
    z = _tensor(store["atomic_numbers"]).numpy()
    if z.size:
        if z.min() < 1 or z.max() > MAX_Z or (z.dtype.kind == "f" and (z != np.round(z)).any()):
            bad = z[(z < 1) | (z > MAX_Z) | (z != np.round(z))]
            raise DatasetError(f"unknown element(s) {bad.tolist()[:5]}", path, index, "atomic_numbers")
        if elements is not None:
            outside = ~np.isin(z.astype(np.int64), np.fromiter(elements, dtype=np.int64))
            if outside.any():
                raise DatasetError(
                    f"element(s) {sorted(set(z[outside].astype(int).tolist()))} not in the configured "
                    f"elements {sorted(set(elements))}", path, index, "atomic_numbers",
                )
    for field in ("pos", "cell"):
        if not np.isfinite(_tensor(store[field]).numpy()).all():
            raise DatasetError("contains NaN or infinite values", path, index, field)
    for field, shape in TARGET_SHAPES.items():
        value = store.get(field)
        if value is None:
            continue
        if isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                raise DatasetError("contains NaN or infinite values", path, index, field)
            continue
        arr = _tensor(value).numpy()
        if shape == "n3" and arr.shape != (n, 3):
            raise DatasetError(f"expected shape ({n}, 3), got {tuple(arr.shape)}", path, index, field)
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise DatasetError("contains NaN or infinite values", path, index, field)
