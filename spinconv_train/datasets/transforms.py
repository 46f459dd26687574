"""Per-structure transforms applied in the dataset (e.g. in DataLoader workers)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch_geometric.data import Data

# pos dtypes the numpy path takes (others, and tensors off the CPU, go through radius_graph)
_NUMPY_FLOATS = (torch.float32, torch.float64)


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    """The numpy view of a CPU tensor (detached first only when it needs it)."""
    return tensor.detach().numpy() if tensor.requires_grad else tensor.numpy()


class RadiusGraph:
    """Attach ``edge_index`` and ``cell_offsets`` from ``spinconv_train.graph.radius_graph``.

    Follows the graph contract of docs/design.md; molecules (zero cell or ``pbc`` False)
    get a non-periodic graph. ``apply_many`` gives several structures their graphs at
    once (what a dataset's ``__getitems__`` uses for a DataLoader batch): the same
    edges, order and dtypes as calling the transform on each, with numpy's per-call
    cost paid once for all of them.
    """

    def __init__(self, cutoff: float = 6.0, max_neighbors: int = 40) -> None:
        self.cutoff = float(cutoff)
        self.max_neighbors = int(max_neighbors)

    def __call__(self, data: Data) -> Data:
        return self.apply_many([data])[0]

    def apply_many(self, items: Sequence[Data]) -> list[Data]:
        """Attach the graph of every structure in ``items`` (in place); returns them."""
        items = list(items)
        direct = []
        for data in items:
            if self._numpy_path(data):
                direct.append(data)
            else:
                self._attach(data, *self._through_radius_graph(data))
        if direct:
            self._graphs_numpy(direct)
        return items

    @staticmethod
    def _numpy_path(data: Data) -> bool:
        fields = data._store._mapping
        pos, cell = fields.get("pos"), fields.get("cell")
        return (isinstance(pos, torch.Tensor) and isinstance(cell, torch.Tensor) and pos.is_cpu and cell.is_cpu
                and pos.dtype in _NUMPY_FLOATS)

    @staticmethod
    def _attach(data: Data, edge_index: torch.Tensor, cell_offsets: torch.Tensor) -> None:
        """``data.edge_index = ...; data.cell_offsets = ...`` without PyG's attribute
        dispatch: straight into the storage's dict when it has no attribute-type cache
        to invalidate (records fresh from a file never do)."""
        store = data._store
        if "_cached_attr" in store.__dict__:
            store["edge_index"] = edge_index
            store["cell_offsets"] = cell_offsets
        else:
            store._mapping["edge_index"] = edge_index
            store._mapping["cell_offsets"] = cell_offsets

    def _graphs_numpy(self, items: list[Data]) -> None:
        """Graphs of CPU float32/float64 structures through ``structures_graph_np``."""
        from ..graph import periodic_flags, structures_graph_np  # imported on use: a separate package

        positions, cells, flags = [], [], []
        for data in items:
            fields = data._store._mapping
            pos = _numpy(fields["pos"])
            cell = _numpy(fields["cell"])
            if cell.size != 9:
                raise ValueError(f"cell has shape {tuple(cell.shape)}, expected 9 values (1, 3, 3)")
            # as radius_graph's batch path: the cell in the dtype of pos, then float64
            cell = cell.reshape(3, 3).astype(pos.dtype, copy=False)
            pbc = fields.get("pbc")
            if pbc is None:
                periodic = np.full(3, bool(np.abs(cell).sum() > 0))
            else:
                periodic = _numpy(pbc.cpu()).reshape(3).astype(bool, copy=False)
            positions.append(pos)
            cells.append(cell)
            flags.append(periodic)
        cells64 = np.stack(cells).astype(np.float64)
        periodic = periodic_flags(cells64, np.stack(flags))
        edge_index, shifts, edge_starts = structures_graph_np(positions, cells64, periodic, self.cutoff,
                                                              self.max_neighbors)
        dtypes = {pos.dtype for pos in positions}
        offsets = shifts.astype(dtypes.pop()) if len(dtypes) == 1 else None
        atom_start = 0
        for b, data in enumerate(items):
            e0, e1 = int(edge_starts[b]), int(edge_starts[b + 1])
            local = edge_index[:, e0:e1]
            local = np.subtract(local, atom_start) if atom_start else local.copy()  # C-ordered copies
            if offsets is None:
                cell_offsets = shifts[e0:e1].astype(positions[b].dtype)
            else:
                cell_offsets = offsets[e0:e1]
            self._attach(data, torch.from_numpy(local), torch.from_numpy(cell_offsets))
            atom_start += positions[b].shape[0]

    def _through_radius_graph(self, data: Data) -> tuple:
        """The graph from ``radius_graph`` (any device or dtype)."""
        from ..graph import radius_graph

        n = data.pos.shape[0]
        cell = data.cell.reshape(1, 3, 3).to(data.pos.dtype)
        pbc = getattr(data, "pbc", None)
        if pbc is None:
            periodic = bool(cell.abs().sum() > 0)
            pbc = torch.full((1, 3), periodic, dtype=torch.bool)
        batch = torch.zeros(n, dtype=torch.long, device=data.pos.device)
        natoms = torch.tensor([n], dtype=torch.long)
        return radius_graph(data.pos, batch, natoms, cell, pbc.reshape(1, 3), self.cutoff, self.max_neighbors)

    def __repr__(self) -> str:
        return f"RadiusGraph(cutoff={self.cutoff}, max_neighbors={self.max_neighbors})"
