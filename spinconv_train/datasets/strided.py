"""Every k-th record of a dataset (``dataset.<split>.every: k``): a smaller, evenly spread
evaluation split without writing a new file, e.g. one frame in five of each relaxation."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch.utils.data import Dataset, Subset

from .element_refs import energies_and_counts


class EveryKth(Subset):
    """Records ``0, k, 2k, ...`` of ``dataset``. A ``Subset``, so error messages still name
    the file and record of the underlying dataset; its light passes (``get_natoms``,
    ``raw_record``, ``energies_and_counts``) are forwarded when the dataset has them."""

    def __init__(self, dataset: Dataset, every: int) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer (keep every k-th record), got {every!r}")
        super().__init__(dataset, range(0, len(dataset), every))

    def get_natoms(self) -> np.ndarray:
        if hasattr(self.dataset, "get_natoms"):
            return np.asarray(self.dataset.get_natoms())[np.asarray(self.indices, dtype=np.int64)]
        return np.array([int(self[i].pos.shape[0]) for i in range(len(self))], dtype=np.int64)

    def raw_record(self, index: int):
        read = getattr(self.dataset, "raw_record", None) or self.dataset.__getitem__
        return read(int(self.indices[index]))

    def energies_and_counts(self, field: str = "y", indices: Sequence[int] | None = None,
                            max_z: int = 118) -> tuple:
        chosen = range(len(self)) if indices is None else indices
        return energies_and_counts(self.dataset, field, [int(self.indices[i]) for i in chosen], max_z)
