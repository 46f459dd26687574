"""Bring structure records to the shared ``Data`` layout and check them.

The layout is fixed in docs/design.md ("A structure and a batch"). Records read from
OC20-style files are normalised in place (``natoms`` as a (1,) long tensor, ``cell`` as
(1,3,3), ``pbc`` (1,3) bool — added from the cell when absent, as docs/design.md says —
``tags``/``fixed`` present) and validated: shapes, finite values, known elements.
Checks run on numpy views of the tensors (no copies), and a record that is already in
the layout (as the files ``preprocess_ef.py`` writes) is left untouched: ~15 µs per
record for both steps.
"""
from __future__ import annotations

from collections.abc import Iterable

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


def _set(store, mapping: dict, field: str, value) -> None:
    """Store ``value`` under ``field`` unless that exact object is already there (a write
    through the storage costs a few µs; a normalised record needs none)."""
    if mapping.get(field) is not value:
        store[field] = value


def normalize_structure(data: Data, path: str | None = None, index: int | None = None) -> Data:
    """Fill in and reshape the structure fields of ``data`` (in place) and return it."""
    store = data._store
    mapping = store._mapping  # read the dict directly; writes go through the storage
    for field in STRUCTURE_FIELDS:
        if mapping.get(field) is None:
            raise DatasetError("missing required field", path, index, field)
    pos = _tensor(mapping["pos"])
    if pos.dim() != 2 or pos.shape[1] != 3:
        raise DatasetError(f"expected shape (N, 3), got {tuple(pos.shape)}", path, index, "pos")
    n = pos.shape[0]
    z = _tensor(mapping["atomic_numbers"])
    if z.shape != (n,):
        raise DatasetError(f"expected shape ({n},), got {tuple(z.shape)}", path, index, "atomic_numbers")
    natoms = mapping.get("natoms")
    if natoms is None:
        store["natoms"] = torch.tensor([n], dtype=torch.long)
    else:
        natoms = _tensor(natoms)
        if natoms.numel() != 1 or int(natoms) != n:
            raise DatasetError(f"natoms {natoms.reshape(-1).tolist()} does not match {n} positions",
                               path, index, "natoms")
        if natoms.shape != (1,) or natoms.dtype != torch.long:
            natoms = natoms.reshape(-1).long()
        _set(store, mapping, "natoms", natoms)
    cell = mapping.get("cell")
    if cell is None:
        store["cell"] = torch.zeros(1, 3, 3, dtype=pos.dtype)
    else:
        cell = _tensor(cell)
        if cell.numel() != 9:
            raise DatasetError(f"expected shape (1, 3, 3), got {tuple(cell.shape)}", path, index, "cell")
        if cell.shape != (1, 3, 3):
            store["cell"] = cell.reshape(1, 3, 3)
    pbc = mapping.get("pbc")
    if pbc is None:  # OC20 files carry no pbc: periodic in all directions when the cell is non-zero
        store["pbc"] = torch.full((1, 3), bool(mapping["cell"].any()), dtype=torch.bool)
    else:
        pbc = _tensor(pbc)
        if pbc.numel() != 3:
            raise DatasetError(f"expected shape (1, 3), got {tuple(pbc.shape)}", path, index, "pbc")
        if pbc.shape != (1, 3) or pbc.dtype != torch.bool:
            pbc = pbc.reshape(1, 3).bool()
        _set(store, mapping, "pbc", pbc)
    for field in ("tags", "fixed"):
        value = mapping.get(field)
        if value is None:
            store[field] = torch.zeros(n, dtype=torch.long if field == "tags" else torch.float32)
            continue
        value = _tensor(value)
        if value.shape != (n,):
            raise DatasetError(f"expected shape ({n},), got {tuple(value.shape)}", path, index, field)
        if field == "tags" and value.dtype != torch.long:
            value = value.long()
        _set(store, mapping, field, value)
    return data


def _all_finite(arr: np.ndarray) -> bool:
    """Whether every value is finite (integer and bool arrays always are)."""
    return arr.dtype.kind not in "fc" or bool(np.isfinite(arr).all())


def _bad_elements(z: np.ndarray) -> bool:
    """Whether ``z`` holds a value outside 1..MAX_Z or (float) a non-integer or NaN."""
    if np.minimum.reduce(z) < 1 or np.maximum.reduce(z) > MAX_Z:
        return True
    return z.dtype.kind == "f" and bool(np.logical_or.reduce(np.not_equal(z, np.rint(z))))


def validate_structure(
    data: Data,
    path: str | None = None,
    index: int | None = None,
    required: Iterable[str] = (),
    elements: Iterable[int] | None = None,
) -> None:
    """Check a normalised structure: required fields, shapes, finite numbers, elements.

    Raises ``DatasetError`` naming ``path``, ``index`` and the offending field.
    """
    mapping = data._store._mapping
    n = int(mapping["pos"].shape[0])
    for field in required:
        if mapping.get(field) is None:
            raise DatasetError("missing field required by the task", path, index, field)
    z = _tensor(mapping["atomic_numbers"]).numpy().reshape(-1)
    if z.size:
        if _bad_elements(z):
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
        if not _all_finite(_tensor(mapping[field]).numpy()):
            raise DatasetError("contains NaN or infinite values", path, index, field)
    for field, shape in TARGET_SHAPES.items():
        value = mapping.get(field)
        if value is None:
            continue
        if isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                raise DatasetError("contains NaN or infinite values", path, index, field)
            continue
        arr = _tensor(value).numpy()
        if shape == "n3" and arr.shape != (n, 3):
            raise DatasetError(f"expected shape ({n}, 3), got {tuple(arr.shape)}", path, index, field)
        if arr.dtype.kind == "f" and not _all_finite(arr):
            raise DatasetError("contains NaN or infinite values", path, index, field)
