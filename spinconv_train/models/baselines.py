"""SchNet and DimeNet++ baselines (torch_geometric) on our own periodic graph.

torch_geometric's models build their graph with torch-cluster, which CI cannot install;
these wrappers reuse their layers but feed them ``spinconv_train.graph.radius_graph``
edges with periodic cell offsets. Both return the model contract of docs/design.md:
``{"energy": (B,), "forces": (N, 3)}`` with forces = -dE/dpos by autograd.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn.models import DimeNetPlusPlus, SchNet

from spinconv_train.graph import edge_vectors, radius_graph, reverse_edges
from spinconv_train.registry import MODELS

from .outputs import energy_derivatives, structure_energies


def batch_graph(batch, pos: Tensor, cutoff: float, max_neighbors: int,
                use_pbc: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Edges (2, E), integer cell offsets (E, 3) and differentiable edge vectors (E, 3)."""
    num_graphs = int(batch.natoms.numel())
    cell = getattr(batch, "cell", None)
    if cell is not None:
        cell = cell.reshape(num_graphs, 3, 3).to(pos.dtype)
    pbc = getattr(batch, "pbc", None)
    if not use_pbc:
        cell_for_graph = torch.zeros(num_graphs, 3, 3, dtype=pos.dtype, device=pos.device)
        pbc = torch.zeros(num_graphs, 3, dtype=torch.bool, device=pos.device)
    else:
        cell_for_graph = cell
        if pbc is not None:
            pbc = pbc.reshape(num_graphs, 3)
    edge_index, offsets = radius_graph(pos.detach(), batch.batch, batch.natoms, cell_for_graph, pbc,
                                       cutoff, max_neighbors)
    vec = edge_vectors(pos, edge_index, offsets, cell if use_pbc else None, batch.batch)
    return edge_index, offsets, vec


def _energy_and_forces(per_atom: Tensor, batch, pos: Tensor, regress_forces: bool, training: bool) -> dict[str, Tensor]:
    out = {"energy": structure_energies(per_atom, batch.batch, int(batch.natoms.numel()))}
    if regress_forces:
        out.update(energy_derivatives(out["energy"], pos, create_graph=training))
    return out


@MODELS.register("schnet")
class SchNetModel(nn.Module):
    """torch_geometric's SchNet (continuous-filter convolutions) on a periodic graph."""

    def __init__(self, hidden_channels: int = 128, num_filters: int = 128, num_interactions: int = 6,
                 num_gaussians: int = 50, cutoff: float = 6.0, max_neighbors: int = 50,
                 regress_forces: bool = True, use_pbc: bool = True) -> None:
        super().__init__()
        self.net = SchNet(hidden_channels=hidden_channels, num_filters=num_filters,
                          num_interactions=num_interactions, num_gaussians=num_gaussians,
                          cutoff=cutoff, max_num_neighbors=max_neighbors)
        self.cutoff, self.max_neighbors = float(cutoff), int(max_neighbors)
        self.regress_forces, self.use_pbc = bool(regress_forces), bool(use_pbc)

    def forward(self, batch) -> dict[str, Tensor]:
        with torch.set_grad_enabled(self.regress_forces or torch.is_grad_enabled()):
            pos = batch.pos.detach().requires_grad_(self.regress_forces)
            edge_index, _, vec = batch_graph(batch, pos, self.cutoff, self.max_neighbors, self.use_pbc)
            dist = vec.norm(dim=-1)
            net = self.net
            h = net.embedding(batch.atomic_numbers.long())
            edge_attr = net.distance_expansion(dist)
            for interaction in net.interactions:
                h = h + interaction(h, edge_index, dist, edge_attr)
            per_atom = net.lin2(net.act(net.lin1(h)))
            return _energy_and_forces(per_atom, batch, pos, self.regress_forces, self.training)


def triplets(edge_index: Tensor, num_nodes: int, reverse: Tensor) -> tuple[Tensor, Tensor]:
    """Pairs of edges (k→j, j→i) sharing atom j, without the reverse edge (i→j).

    Returns ``(idx_kj, idx_ji)`` edge indices. Pure torch (no torch-sparse).
    """
    src, dst = edge_index[0], edge_index[1]
    order = torch.argsort(dst, stable=True)
    indegree = torch.bincount(dst, minlength=num_nodes)
    start = torch.cumsum(indegree, 0) - indegree
    per_edge = indegree[src]  # candidate k→j edges for each j→i edge
    idx_ji = torch.repeat_interleave(torch.arange(src.numel(), device=src.device), per_edge)
    first = torch.repeat_interleave(torch.cumsum(per_edge, 0) - per_edge, per_edge)
    within = torch.arange(idx_ji.numel(), device=src.device) - first
    idx_kj = order[start[src[idx_ji]] + within]
    keep = idx_kj != reverse[idx_ji]
    return idx_kj[keep], idx_ji[keep]


@MODELS.register("dimenetplusplus", "dimenet++")
class DimeNetPlusPlusModel(nn.Module):
    """torch_geometric's DimeNet++ (directional messages) on a periodic graph.

    ``detach_angles``: the triplet angles enter the energy but not its gradient, as in OCP's
    DimeNet++ (which detached them for training stability). Its forces are then not
    -dE/dx of the energy (not conservative); the default is the exact gradient.
    """

    def __init__(self, hidden_channels: int = 128, num_blocks: int = 4, int_emb_size: int = 64,
                 basis_emb_size: int = 8, out_emb_channels: int = 256, num_spherical: int = 7,
                 num_radial: int = 6, cutoff: float = 6.0, max_neighbors: int = 50,
                 envelope_exponent: int = 5, num_before_skip: int = 1, num_after_skip: int = 2,
                 num_output_layers: int = 3, regress_forces: bool = True, use_pbc: bool = True,
                 detach_angles: bool = False) -> None:
        super().__init__()
        self.net = DimeNetPlusPlus(hidden_channels=hidden_channels, out_channels=1, num_blocks=num_blocks,
                                   int_emb_size=int_emb_size, basis_emb_size=basis_emb_size,
                                   out_emb_channels=out_emb_channels, num_spherical=num_spherical,
                                   num_radial=num_radial, cutoff=cutoff, max_num_neighbors=max_neighbors,
                                   envelope_exponent=envelope_exponent, num_before_skip=num_before_skip,
                                   num_after_skip=num_after_skip, num_output_layers=num_output_layers)
        self.cutoff, self.max_neighbors = float(cutoff), int(max_neighbors)
        self.regress_forces, self.use_pbc = bool(regress_forces), bool(use_pbc)
        self.detach_angles = bool(detach_angles)

    def forward(self, batch) -> dict[str, Tensor]:
        with torch.set_grad_enabled(self.regress_forces or torch.is_grad_enabled()):
            pos = batch.pos.detach().requires_grad_(self.regress_forces)
            num_nodes = pos.shape[0]
            edge_index, offsets, vec = batch_graph(batch, pos, self.cutoff, self.max_neighbors, self.use_pbc)
            idx_kj, idx_ji = triplets(edge_index, num_nodes, reverse_edges(edge_index, offsets))
            j, i = edge_index[0], edge_index[1]
            dist = vec.norm(dim=-1)
            v_ji, v_kj = vec.index_select(0, idx_ji), vec.index_select(0, idx_kj)  # i→j and j→k
            if self.detach_angles:  # OCP's DimeNet++: forces see the angles as constants
                v_ji, v_kj = v_ji.detach(), v_kj.detach()
            angle = torch.atan2(torch.cross(v_ji, v_kj, dim=1).norm(dim=-1), (v_ji * v_kj).sum(dim=-1))
            net = self.net
            rbf = net.rbf(dist)
            sbf = net.sbf(dist, angle, idx_kj)
            x = net.emb(batch.atomic_numbers.long(), rbf, i, j)
            per_atom = net.output_blocks[0](x, rbf, i, num_nodes=num_nodes)
            for block, output in zip(net.interaction_blocks, net.output_blocks[1:]):
                x = block(x, rbf, sbf, idx_kj, idx_ji)
                per_atom = per_atom + output(x, rbf, i, num_nodes=num_nodes)
            return _energy_and_forces(per_atom, batch, pos, self.regress_forces, self.training)
