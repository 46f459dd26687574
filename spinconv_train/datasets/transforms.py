"""Per-structure transforms applied in the dataset (e.g. in DataLoader workers)."""
from __future__ import annotations

import torch
from torch_geometric.data import Data


class RadiusGraph:
    """Attach ``edge_index`` and ``cell_offsets`` from ``spinconv_train.graph.radius_graph``.

    Follows the graph contract of docs/design.md; molecules (zero cell or ``pbc`` False)
    get a non-periodic graph.
    """

    def __init__(self, cutoff: float = 6.0, max_neighbors: int = 40) -> None:
        self.cutoff = float(cutoff)
        self.max_neighbors = int(max_neighbors)

    def __call__(self, data: Data) -> Data:
        from ..graph import radius_graph  # imported on use: the graph package is separate

        n = data.pos.shape[0]
        cell = data.cell.reshape(1, 3, 3).to(data.pos.dtype)
        pbc = getattr(data, "pbc", None)
        if pbc is None:
            periodic = bool(cell.abs().sum() > 0)
            pbc = torch.full((1, 3), periodic, dtype=torch.bool)
        batch = torch.zeros(n, dtype=torch.long)
        natoms = torch.tensor([n], dtype=torch.long)
        edge_index, cell_offsets = radius_graph(
            data.pos, batch, natoms, cell, pbc.reshape(1, 3), self.cutoff, self.max_neighbors
        )
        data.edge_index = edge_index
        data.cell_offsets = cell_offsets
        return data

    def __repr__(self) -> str:
        return f"RadiusGraph(cutoff={self.cutoff}, max_neighbors={self.max_neighbors})"
