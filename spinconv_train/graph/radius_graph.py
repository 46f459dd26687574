"""Periodic and non-periodic radius graphs with symmetric neighbour capping.

The pair list of each structure comes from vesin (a maintained cell-list code that
handles triclinic cells, mixed periodicity and atoms that see their own images); the
capping, ordering and reverse-edge search are vectorised in torch over the whole batch.
Nothing here builds an (atoms x atoms) tensor.

Conventions (docs/design.md): ``edge_index[0]`` is the source (neighbour) j,
``edge_index[1]`` the target (centre) i, and the edge vector is
``pos[j] - pos[i] + cell_offsets @ cell[batch[i]]``.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["cap_neighbors", "edge_vectors", "radius_graph", "reverse_edges"]


def _structure_pbc(cell: Tensor | None, pbc: Tensor | None, num_structures: int) -> tuple[Tensor, Tensor]:
    """Return (cell (B,3,3) float64 cpu, pbc (B,3) bool cpu) with the documented defaults."""
    if cell is None:
        cell64 = torch.zeros(num_structures, 3, 3, dtype=torch.float64)
    else:
        cell64 = cell.detach().to("cpu", torch.float64).reshape(-1, 3, 3)
        if cell64.shape[0] != num_structures:
            raise ValueError(
                f"cell has {cell64.shape[0]} structures but natoms has {num_structures}"
            )
    row_nonzero = cell64.abs().sum(dim=-1) > 0  # (B,3)
    if pbc is None:
        # OC20 convention: periodic in all directions when the cell is non-zero.
        periodic = row_nonzero.all(dim=-1, keepdim=True).expand(-1, 3).clone()
    else:
        periodic = pbc.detach().to("cpu").reshape(-1, 3).bool()
        if periodic.shape[0] != num_structures:
            raise ValueError(f"pbc has {periodic.shape[0]} structures but natoms has {num_structures}")
        bad = periodic & ~row_nonzero
        if bad.any():
            b, d = (int(v) for v in bad.nonzero()[0])
            raise ValueError(f"structure {b}: pbc is True along lattice vector {d} but that cell row is zero")
    return cell64, periodic


def _pairs_one_structure(
    pos: np.ndarray, cell: np.ndarray, periodic: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Full (i, j, S, d) pair list of one structure from vesin (i: centre, j: neighbour)."""
    from vesin import (
        NeighborList,  # imported lazily: no import-time cost for users of other parts
    )

    n = pos.shape[0]
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros((0, 3), dtype=np.int64), np.zeros(0)
    if periodic.any():
        box = cell
        flags = [bool(p) for p in periodic]
    else:
        box = np.zeros((3, 3))
        flags = False
    nl = NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, shifts, dist = nl.compute(points=pos, box=box, periodic=flags, quantities="ijSd")
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    shifts = np.asarray(shifts, dtype=np.int64).reshape(-1, 3)
    dist = np.asarray(dist, dtype=np.float64)
    keep = dist > 0  # drop exact self pairs (never produced, but cheap to guarantee)
    return i[keep], j[keep], shifts[keep], dist[keep]


def _edge_keys(src: Tensor, dst: Tensor, shifts: Tensor, num_atoms: int) -> Tensor:
    """Unique int64 key of a directed periodic edge (target, source, shift)."""
    if shifts.numel() == 0:
        return dst.clone()
    span = int(shifts.abs().max()) if shifts.numel() else 0
    base = 2 * span + 1
    if num_atoms * num_atoms * base**3 >= 2**62:
        raise ValueError(
            f"edge keys would overflow int64 ({num_atoms} atoms, lattice shifts up to {span})"
        )
    s = shifts + span
    key = dst * num_atoms + src
    key = ((key * base + s[:, 0]) * base + s[:, 1]) * base + s[:, 2]
    return key


def _find_reverse(edge_index: Tensor, cell_offsets: Tensor | None) -> tuple[Tensor, Tensor]:
    """(index of the reverse of each edge, whether it exists) by a sort of integer keys."""
    src, dst = edge_index[0].long(), edge_index[1].long()
    num_edges = src.numel()
    if num_edges == 0:
        empty = torch.zeros(0, dtype=torch.long, device=src.device)
        return empty, empty.bool()
    if cell_offsets is None:
        shifts = torch.zeros(num_edges, 3, dtype=torch.long, device=src.device)
    else:
        shifts = torch.round(cell_offsets).long()
    num_atoms = int(torch.maximum(src.max(), dst.max())) + 1
    # Both key sets use the same base: the span of |shift| is symmetric under negation.
    keys = _edge_keys(src, dst, shifts, num_atoms)
    rev_keys = _edge_keys(dst, src, -shifts, num_atoms)
    sorted_keys, order = torch.sort(keys)
    pos = torch.searchsorted(sorted_keys, rev_keys).clamp_(max=num_edges - 1)
    return order[pos], sorted_keys[pos] == rev_keys


def reverse_edges(edge_index: Tensor, cell_offsets: Tensor | None = None) -> Tensor:
    """Index of each edge's reverse (j->i with shift S  <->  i->j with shift -S).

    Raises ValueError when an edge has no reverse (the graph is not symmetric).
    """
    rev, found = _find_reverse(edge_index, cell_offsets)
    if not bool(found.all()):
        e = int((~found).nonzero()[0])
        shift = [0, 0, 0] if cell_offsets is None else cell_offsets[e].tolist()
        raise ValueError(
            f"edge {e} ({int(edge_index[0, e])} -> {int(edge_index[1, e])}, shift {shift}) has no reverse edge; "
            "the graph must be symmetric"
        )
    return rev


def radius_graph(
    pos: Tensor,
    batch: Tensor,
    natoms: Tensor,
    cell: Tensor | None,
    pbc: Tensor | None,
    cutoff: float,
    max_neighbors: int,
) -> tuple[Tensor, Tensor]:
    """Symmetric radius graph of a batch.

    Args:
        pos: (N,3) positions (Å), atoms of each structure contiguous.
        batch: (N,) structure index of every atom.
        natoms: (B,) atoms per structure.
        cell: (B,3,3) lattice vectors as rows, or None / zeros for molecules.
        pbc: (B,3) periodic flags, or None (periodic where the cell is non-zero).
        cutoff: radius in Å.
        max_neighbors: an edge is kept when it is among the ``max_neighbors`` nearest of
            either of its endpoints (ties by neighbour index, then shift).

    Returns:
        edge_index (2,E) long (row 0 source j, row 1 target i), sorted by target, then
        distance; cell_offsets (E,3) integer lattice shifts in the dtype of ``pos``.
    """
    device = pos.device
    natoms_cpu = natoms.detach().to("cpu").long().reshape(-1)
    num_structures = natoms_cpu.numel()
    if int(natoms_cpu.sum()) != pos.shape[0]:
        raise ValueError(f"natoms sums to {int(natoms_cpu.sum())} but pos has {pos.shape[0]} atoms")
    cell64, periodic = _structure_pbc(cell, pbc, num_structures)
    pos_np = pos.detach().to("cpu", torch.float64).numpy()
    starts = torch.cumsum(natoms_cpu, 0) - natoms_cpu

    ii: list[np.ndarray] = []
    jj: list[np.ndarray] = []
    ss: list[np.ndarray] = []
    dd: list[np.ndarray] = []
    for b in range(num_structures):
        s, n = int(starts[b]), int(natoms_cpu[b])
        i, j, shift, dist = _pairs_one_structure(
            pos_np[s : s + n], cell64[b].numpy(), periodic[b].numpy(), cutoff
        )
        ii.append(i + s)
        jj.append(j + s)
        ss.append(shift)
        dd.append(dist)
    tgt = torch.from_numpy(np.concatenate(ii)) if ii else torch.zeros(0, dtype=torch.long)
    src = torch.from_numpy(np.concatenate(jj)) if jj else torch.zeros(0, dtype=torch.long)
    shifts = torch.from_numpy(np.concatenate(ss)) if ss else torch.zeros(0, 3, dtype=torch.long)
    dist = torch.from_numpy(np.concatenate(dd)) if dd else torch.zeros(0, dtype=torch.float64)

    edge_index, shifts = _cap_symmetric(src, tgt, shifts, dist, pos.shape[0], max_neighbors)
    return edge_index.to(device), shifts.to(device=device, dtype=pos.dtype)


def _cap_symmetric(
    src: Tensor, tgt: Tensor, shifts: Tensor, dist: Tensor, num_atoms: int, max_neighbors: int
) -> tuple[Tensor, Tensor]:
    """Keep edges among the ``max_neighbors`` nearest of either endpoint; sort by (target, rank).

    Edges whose reverse is absent from the input (possible only for precomputed graphs)
    are dropped, so the result is always symmetric.
    """
    num_edges = src.numel()
    if num_edges == 0:
        return torch.zeros(2, 0, dtype=torch.long, device=src.device), shifts
    # Deterministic order: target, distance, source, shift (stable sorts from the last key).
    tie = _edge_keys(src, tgt, shifts, num_atoms)  # unique per edge, includes source and shift
    order = torch.argsort(tie, stable=True)
    order = order[torch.argsort(dist[order], stable=True)]
    order = order[torch.argsort(tgt[order], stable=True)]
    src, tgt, shifts, dist = src[order], tgt[order], shifts[order], dist[order]

    counts = torch.bincount(tgt, minlength=num_atoms)
    first = torch.cumsum(counts, 0) - counts
    rank = torch.arange(num_edges, device=src.device) - first[tgt]
    near_target = rank < max_neighbors
    rev, found = _find_reverse(torch.stack([src, tgt]), shifts.to(torch.float64))
    keep = (near_target | near_target[rev]) & found
    return torch.stack([src[keep], tgt[keep]]), shifts[keep]


def cap_neighbors(
    edge_index: Tensor, cell_offsets: Tensor, dist: Tensor, num_atoms: int, max_neighbors: int
) -> tuple[Tensor, Tensor]:
    """Apply the symmetric neighbour cap to a given (e.g. precomputed) graph.

    Returns the kept ``edge_index`` and ``cell_offsets`` (in the input's dtype), sorted by
    target then distance; edges without a reverse in the input are dropped.
    """
    shifts = torch.round(cell_offsets).long()
    ei, sh = _cap_symmetric(
        edge_index[0].long(), edge_index[1].long(), shifts, dist.detach(), num_atoms, max_neighbors
    )
    return ei, sh.to(cell_offsets.dtype)


def edge_vectors(pos: Tensor, edge_index: Tensor, cell_offsets: Tensor, cell: Tensor | None, batch: Tensor) -> Tensor:
    """Differentiable edge vectors ``pos[j] - pos[i] + cell_offsets @ cell[batch[i]]`` (E,3)."""
    src, dst = edge_index[0], edge_index[1]
    vec = pos[src] - pos[dst]
    if cell is not None and cell_offsets is not None and cell_offsets.numel() > 0:
        cell = cell.reshape(-1, 3, 3).to(pos.dtype)
        shift = torch.bmm(cell_offsets.to(pos.dtype).unsqueeze(1), cell[batch[dst]]).squeeze(1)
        vec = vec + shift
    return vec
