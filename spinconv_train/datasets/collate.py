"""Batching structures."""
from __future__ import annotations

from typing import Sequence

from torch_geometric.data import Batch, Data


def collate(data_list: Sequence[Data]) -> Batch:
    """Batch structures with ``Batch.from_data_list`` (``cell`` → (B,3,3), ``natoms`` → (B,))."""
    return Batch.from_data_list(list(data_list))
