"""Atomic numbers against a model's element embedding, checked once when a dataset is built.

An embedding of ``max_num_elements`` rows indexes atomic numbers 0..max_num_elements-1,
and our datasets only hold 1..118; a record outside the model's range would otherwise pass
every dataset check and fail deep inside a batch, many steps later, naming no file.
"""
from __future__ import annotations

import numpy as np
from ase.data import chemical_symbols
from torch.utils.data import Dataset, Subset

from .errors import DatasetError


def _symbol(z: int) -> str:
    return chemical_symbols[z] if 0 < z < len(chemical_symbols) else "no element"


def element_range(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """``(z_min, z_max)`` per structure of ``dataset``: the dataset's own ``element_range()``
    when it has one (``LmdbDataset`` reads its ``metadata.npz``), through ``Subset``s,
    else a pass reading every structure."""
    if isinstance(dataset, Subset):
        low, high = element_range(dataset.dataset)
        indices = np.asarray(dataset.indices, dtype=np.int64)
        return low[indices], high[indices]
    own = getattr(dataset, "element_range", None)
    if own is not None:
        low, high = own()
        return np.asarray(low, dtype=np.int64), np.asarray(high, dtype=np.int64)
    low = np.zeros(len(dataset), dtype=np.int64)
    high = np.zeros(len(dataset), dtype=np.int64)
    for i in range(len(dataset)):
        z = np.asarray(dataset[i].atomic_numbers).reshape(-1)
        if z.size:
            low[i], high[i] = int(z.min()), int(z.max())
    return low, high


def record_origin(dataset: Dataset, index: int) -> tuple[str | None, int]:
    """``(file, record within it)`` of structure ``index``, as the dataset's errors name
    them; ``(None, index)`` for datasets that do not say."""
    if isinstance(dataset, Subset):
        return record_origin(dataset.dataset, int(dataset.indices[index]))
    own = getattr(dataset, "record_origin", None)
    return own(index) if own is not None else (None, int(index))


def check_atomic_numbers(dataset: Dataset, max_z: int, split_name: str) -> None:
    """Raise a ``DatasetError`` naming the file and record of the first structure of
    ``dataset`` with an atomic number outside ``1..max_z``, the elements a model embeds
    (SpinConv: ``max_z = model.max_num_elements - 1``). ``split_name`` (``train``,
    ``val``, ...) goes into the message. Structures without atoms are skipped."""
    max_z = int(max_z)
    low, high = element_range(dataset)
    bad = np.flatnonzero((high > 0) & ((low < 1) | (high > max_z)))
    if not bad.size:
        return
    first = int(bad[0])
    z = int(high[first]) if high[first] > max_z else int(low[first])
    path, record = record_origin(dataset, first)
    others = f"; {bad.size - 1} more structure(s) of the split too" if bad.size > 1 else ""
    raise DatasetError(
        f"atomic number {z} ({_symbol(z)}) in the {split_name} split is outside the elements the model embeds "
        f"(1..{max_z}, max_num_elements {max_z + 1}){others}: remove those structures, or train a model built "
        f"with max_num_elements > {max(z, max_z)}",
        path, record, "atomic_numbers",
    )
