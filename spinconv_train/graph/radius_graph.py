"""Periodic and non-periodic radius graphs with symmetric neighbour capping.

The pair list of each structure comes from vesin (a maintained cell-list code that
handles triclinic cells, mixed periodicity and atoms that see their own images) as a
half list, each pair once, through its C function (``vesin_direct.py``); the reverse
edges (i, j, S) -> (j, i, -S) are built from it, so each edge's reverse is known
without a search. The capping and ordering run in numpy over the pairs of all the
structures of a batch at once (``capping.cap_half_list_np``: one sort of packed integer
keys), and in torch for precomputed graphs that live on an accelerator. Nothing here
builds an (atoms x atoms) array.

Conventions (docs/design.md): ``edge_index[0]`` is the source (neighbour) j,
``edge_index[1]`` the target (centre) i, and the edge vector is
``pos[j] - pos[i] + cell_offsets @ cell[batch[i]]``.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .capping import (
    CAP_TIE_RTOL,
    cap_half_list_np,
    cap_symmetric_np,
    cap_value,
    edge_keys_np,
    find_reverse_np,
    full_from_half_np,
    half_list_key_fits,
)
from .vesin_direct import PairSink, make_half_neighbor_list

__all__ = ["cap_neighbors", "edge_vectors", "periodic_flags", "radius_graph", "reverse_edges", "structures_graph_np"]


def _structure_pbc(cell: Tensor | None, pbc: Tensor | None, num_structures: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (cell (B,3,3) float64, pbc (B,3) bool) numpy arrays with the documented defaults."""
    if cell is None:
        cell64 = np.zeros((num_structures, 3, 3))
    else:
        cell64 = cell.detach().to("cpu", torch.float64).numpy().reshape(-1, 3, 3)
        if cell64.shape[0] != num_structures:
            raise ValueError(
                f"cell has {cell64.shape[0]} structures but natoms has {num_structures}"
            )
    periodic = None
    if pbc is not None:
        periodic = pbc.detach().to("cpu").numpy().reshape(-1, 3).astype(bool)
        if periodic.shape[0] != num_structures:
            raise ValueError(f"pbc has {periodic.shape[0]} structures but natoms has {num_structures}")
    return cell64, periodic_flags(cell64, periodic)


def periodic_flags(cell64: np.ndarray, periodic: np.ndarray | None) -> np.ndarray:
    """(B,3) periodic flags of cells (B,3,3): ``periodic`` checked against the cells, or
    the OC20 default (periodic in all directions when the whole cell is non-zero)."""
    row_nonzero = np.abs(cell64).sum(axis=-1) > 0  # (B,3)
    if periodic is None:
        return np.repeat(row_nonzero.all(axis=-1, keepdims=True), 3, axis=1)
    bad = periodic & ~row_nonzero
    if bad.any():
        b, d = (int(v) for v in np.argwhere(bad)[0])
        raise ValueError(f"structure {b}: pbc is True along lattice vector {d} but that cell row is zero")
    return periodic


_NEIGHBOR_LISTS = threading.local()


def _neighbor_list(cutoff: float):
    """A half neighbour list (``vesin_direct``) for ``cutoff``, reused per thread (it is
    reusable across calls, and building one costs more than a small search). It uses
    ``torch.get_num_threads()`` threads: one in DataLoader workers, which torch limits
    to one thread each."""
    cache = getattr(_NEIGHBOR_LISTS, "by_cutoff", None)
    if cache is None:
        cache = _NEIGHBOR_LISTS.by_cutoff = {}
    key = (cutoff, torch.get_num_threads())
    nl = cache.get(key)
    if nl is None:
        if len(cache) >= 8:  # bounded: callers sweeping cutoffs do not accumulate lists
            cache.clear()
        nl = cache[key] = make_half_neighbor_list(cutoff, key[1])
    return nl


_NO_BOX = np.zeros((3, 3))
_NOT_PERIODIC = np.zeros(3, dtype=bool)


def _half_pairs(
    pos: np.ndarray, cell: np.ndarray, periodic: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """vesin's half pair list ``(i, j, S, d)`` of one structure, each pair once (i: centre,
    j: neighbour, vector ``r_j - r_i + S @ cell``); int64 indices and shifts, float64 d.

    ``pos`` (N,3) and ``cell`` (3,3) are float64; ``periodic`` (3,) bool.
    """
    if pos.shape[0] == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros((0, 3), dtype=np.int64), np.zeros(0)
    if periodic.any():
        pairs, shifts, dist = _neighbor_list(float(cutoff)).compute(pos, cell, periodic)
    else:
        pairs, shifts, dist = _neighbor_list(float(cutoff)).compute(pos, _NO_BOX, _NOT_PERIODIC)
    # the arrays are views of buffers the next search reuses: every result below is a copy
    pairs = pairs.astype(np.int64)
    i, j = pairs[:, 0], pairs[:, 1]
    shifts = shifts.astype(np.int64)
    dist = dist.astype(np.float64)
    if dist.size and not dist.min() > 0:  # drop exact self pairs (never produced, but cheap to guarantee)
        keep = dist > 0
        i, j, shifts, dist = i[keep], j[keep], shifts[keep], dist[keep]
    return i, j, shifts, dist


def _pairs_one_structure(
    pos: np.ndarray, cell: np.ndarray, periodic: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Full (i, j, S, d, rev) pair list of one structure (i: centre, j: neighbour): the
    plain form the tests check the capping kernels with.

    vesin returns each pair once; the second half of the arrays holds the reverses
    (j, i, -S) with the same distance, and ``rev[k]`` is the index of edge k's reverse.
    """
    i, j, shifts, dist = _half_pairs(pos, cell, periodic, cutoff)
    src, tgt, full_shifts, full_dist, rev = full_from_half_np(i, j, shifts, dist)
    return tgt, src, full_shifts, full_dist, rev


def structures_graph_np(
    positions: Sequence[np.ndarray], cells: np.ndarray, periodic: np.ndarray, cutoff: float,
    max_neighbors: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Capped symmetric radius graphs of several structures, numbered as one batch.

    One vesin search per structure, then one capping and ordering pass over all pairs
    (``cap_half_list_np``), so numpy's per-call cost is paid once per batch, not once
    per structure.

    Args:
        positions: B arrays (n_b, 3) float32/float64 (searched in float64).
        cells: (B,3,3) float64 lattice vectors as rows; periodic: (B,3) bool, already
            checked against the cells (``periodic_flags``).

    Returns:
        ``(edge_index (2,E), shifts (E,3), edge_starts (B+1,))`` int64: edges with
        atom indices counted over the concatenated structures, in ``radius_graph``'s
        order, structure b's edges at ``edge_starts[b]:edge_starts[b+1]``.
    """
    max_neighbors = cap_value(max_neighbors)
    nl = _neighbor_list(float(cutoff))
    num_structures = len(positions)
    atom_starts = np.zeros(num_structures + 1, dtype=np.int64)
    pair_starts = np.zeros(num_structures + 1, dtype=np.int64)
    sink = getattr(_NEIGHBOR_LISTS, "sink", None)  # reused per thread: no allocation per batch
    if sink is None:
        sink = _NEIGHBOR_LISTS.sink = PairSink()
    sink.size = 0
    for b, pos in enumerate(positions):
        n = pos.shape[0]
        count = 0
        if n:
            if periodic[b].any():
                count = nl.compute_into(pos, cells[b], periodic[b], sink)
            else:
                count = nl.compute_into(pos, _NO_BOX, _NOT_PERIODIC, sink)
        atom_starts[b + 1] = atom_starts[b] + n
        pair_starts[b + 1] = pair_starts[b] + count
    # views of the reused sink: everything returned below is computed into new arrays
    pairs, shifts, dist = sink.arrays()
    if not dist.size:
        empty = np.zeros((2, 0), dtype=np.int64)
        return empty, np.zeros((0, 3), dtype=np.int64), np.zeros(num_structures + 1, dtype=np.int64)
    if num_structures > 1:  # per-structure atom indices -> batch indices
        pairs += np.repeat(atom_starts[:-1], np.diff(pair_starts))[:, None]
    if dist.size and not dist.min() > 0:  # drop exact self pairs (never produced, but cheap to guarantee)
        keep = dist > 0
        pairs, shifts, dist = pairs[keep], shifts[keep], dist[keep]
        pair_starts = np.concatenate([[0], np.cumsum(keep)])[pair_starts]
    edge_index, edge_shifts = _cap_structures(pairs, shifts, dist, atom_starts, pair_starts, 0, len(positions),
                                              max_neighbors)
    edge_starts = np.searchsorted(edge_index[1], atom_starts)
    return edge_index, edge_shifts, edge_starts


def _cap_structures(
    pairs: np.ndarray, shifts: np.ndarray, dist: np.ndarray, atom_starts: np.ndarray, pair_starts: np.ndarray,
    first: int, last: int, max_neighbors: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``cap_half_list_np`` over structures ``first..last-1`` together, split in halves
    while their packed keys would not fit in an int64 (very large batches)."""
    p0, p1 = int(pair_starts[first]), int(pair_starts[last])
    a0, a1 = int(atom_starts[first]), int(atom_starts[last])
    if p1 == p0:
        return np.zeros((2, 0), dtype=np.int64), np.zeros((0, 3), dtype=np.int64)
    part_shifts = shifts[p0:p1]
    span = max(int(part_shifts.max()), -int(part_shifts.min()))
    if last - first > 1 and not half_list_key_fits(a1 - a0, p1 - p0, span):
        middle = (first + last) // 2
        left = _cap_structures(pairs, shifts, dist, atom_starts, pair_starts, first, middle, max_neighbors)
        right = _cap_structures(pairs, shifts, dist, atom_starts, pair_starts, middle, last, max_neighbors)
        return np.concatenate([left[0], right[0]], axis=1), np.concatenate([left[1], right[1]])
    part = pairs[p0:p1] - a0 if a0 else pairs[p0:p1]
    edge_index, edge_shifts = cap_half_list_np(part[:, 0], part[:, 1], part_shifts, dist[p0:p1], a1 - a0,
                                               max_neighbors)
    if a0:
        edge_index += a0
    return edge_index, edge_shifts


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
    if src.device.type == "cpu":  # numpy sorts small arrays much faster than torch ops
        keys_np, rev_np = edge_keys_np(src.numpy(), dst.numpy(), shifts.numpy(), num_atoms)
        rev, found = find_reverse_np(keys_np, rev_np)
        return torch.from_numpy(rev), torch.from_numpy(found)
    return _find_reverse_torch(src, dst, shifts, num_atoms)


def _find_reverse_torch(src: Tensor, dst: Tensor, shifts: Tensor, num_atoms: int) -> tuple[Tensor, Tensor]:
    """Torch version of ``find_reverse_np`` (for tensors on an accelerator)."""
    num_edges = src.numel()
    # Both key sets use the same base: the span of |shift| is symmetric under negation.
    keys = _edge_keys(src, dst, shifts, num_atoms)
    rev_keys = _edge_keys(dst, src, -shifts, num_atoms)
    sorted_keys, order = torch.sort(keys, stable=True)
    pos = torch.searchsorted(sorted_keys, rev_keys).clamp_(max=num_edges - 1)
    return order[pos], sorted_keys[pos] == rev_keys


def reverse_edges(edge_index: Tensor, cell_offsets: Tensor | None = None, allow_missing: bool = False) -> Tensor:
    """Index of each edge's reverse (j->i with shift S  <->  i->j with shift -S).

    Raises ValueError when an edge has no reverse (the graph is not symmetric), unless
    ``allow_missing``: such edges then get -1.
    """
    rev, found = _find_reverse(edge_index, cell_offsets)
    if allow_missing:
        return torch.where(found, rev, torch.full_like(rev, -1))
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
    max_neighbors: int | None,
    device: torch.device | str | None = None,
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
            either of its endpoints, counting every neighbour tied with the last of them
            (within ``capping.CAP_TIE_RTOL``): a shell of equal distances is kept whole.
            None: no cap, every neighbour within the cutoff.
        device: where the result goes (default: ``pos``'s device). The search runs on the
            host; ``"cpu"`` returns it there, e.g. to derive more indices before one transfer.

    Returns:
        edge_index (2,E) long (row 0 source j, row 1 target i), sorted by target, then
        distance; cell_offsets (E,3) integer lattice shifts in the dtype of ``pos``.
    """
    device = pos.device if device is None else torch.device(device)
    natoms_np = natoms.detach().to("cpu").numpy().astype(np.int64).reshape(-1)
    num_structures = natoms_np.size
    total = int(natoms_np.sum())
    if total != pos.shape[0]:
        raise ValueError(f"natoms sums to {total} but pos has {pos.shape[0]} atoms")
    cell64, periodic = _structure_pbc(cell, pbc, num_structures)
    pos_np = pos.detach().to("cpu", torch.float64).numpy()

    starts = np.concatenate([[0], np.cumsum(natoms_np)])
    positions = [pos_np[starts[b] : starts[b + 1]] for b in range(num_structures)]
    edge_index_np, shifts_np, _ = structures_graph_np(positions, cell64, periodic, cutoff, max_neighbors)
    edge_index = torch.from_numpy(edge_index_np)
    cell_offsets = torch.from_numpy(shifts_np).to(pos.dtype)
    if device.type != "cpu":
        edge_index, cell_offsets = edge_index.to(device), cell_offsets.to(device)
    return edge_index, cell_offsets


def _cap_symmetric(
    src: Tensor, tgt: Tensor, shifts: Tensor, dist: Tensor, num_atoms: int, max_neighbors: int
) -> tuple[Tensor, Tensor]:
    """Keep edges among the ``max_neighbors`` nearest of either endpoint (tied shells whole);
    sort by (target, rank).

    Edges whose reverse is absent from the input (possible only for precomputed graphs)
    are dropped, so the result is always symmetric.
    """
    num_edges = src.numel()
    if num_edges == 0:
        return torch.zeros(2, 0, dtype=torch.long, device=src.device), shifts
    if src.device.type == "cpu":
        if dist.dtype not in (torch.float32, torch.float64):
            dist = dist.to(torch.float64)  # exact and order-preserving; numpy lacks bfloat16
        kept = torch.from_numpy(
            cap_symmetric_np(src.numpy(), tgt.numpy(), shifts.numpy(), dist.numpy(), num_atoms, max_neighbors)
        )
        return torch.stack([src[kept], tgt[kept]]), shifts[kept]
    return _cap_symmetric_torch(src, tgt, shifts, dist, num_atoms, max_neighbors)


def _cap_symmetric_torch(
    src: Tensor, tgt: Tensor, shifts: Tensor, dist: Tensor, num_atoms: int, max_neighbors: int
) -> tuple[Tensor, Tensor]:
    """Torch version of ``cap_symmetric_np`` (for tensors on an accelerator)."""
    num_edges = src.numel()
    # Deterministic order: target, distance, source, shift (stable sorts from the last key).
    tie = _edge_keys(src, tgt, shifts, num_atoms)  # unique per edge, includes source and shift
    order = torch.argsort(tie, stable=True)
    order = order[torch.argsort(dist[order], stable=True)]
    order = order[torch.argsort(tgt[order], stable=True)]
    src, tgt, shifts, dist = src[order], tgt[order], shifts[order], dist[order]

    counts = torch.bincount(tgt, minlength=num_atoms)
    first = torch.cumsum(counts, 0) - counts
    # the cap keeps whole shells of tied distances (capping.CAP_TIE_RTOL)
    last = (first + (max_neighbors - 1)).clamp_(max=max(num_edges - 1, 0))
    threshold = torch.where(counts > max_neighbors, dist[last] * (1.0 + CAP_TIE_RTOL),
                            torch.full_like(dist[last], float("inf")))
    near_target = dist <= threshold[tgt]
    rev, found = _find_reverse_torch(src, tgt, shifts, num_atoms)
    keep = (near_target | near_target[rev]) & found
    return torch.stack([src[keep], tgt[keep]]), shifts[keep]


def cap_neighbors(
    edge_index: Tensor, cell_offsets: Tensor, dist: Tensor, num_atoms: int, max_neighbors: int | None
) -> tuple[Tensor, Tensor]:
    """Apply the symmetric neighbour cap to a given (e.g. precomputed) graph.

    Returns the kept ``edge_index`` and ``cell_offsets`` (in the input's dtype), sorted by
    target then distance; edges without a reverse in the input are dropped.
    """
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_atoms):
        raise ValueError(
            f"edge_index holds atom indices in [{int(edge_index.min())}, {int(edge_index.max())}] "
            f"but num_atoms is {num_atoms}"
        )
    shifts = torch.round(cell_offsets).long()
    ei, sh = _cap_symmetric(
        edge_index[0].long(), edge_index[1].long(), shifts, dist.detach(), num_atoms, cap_value(max_neighbors)
    )
    return ei, sh.to(cell_offsets.dtype)


def edge_vectors(pos: Tensor, edge_index: Tensor, cell_offsets: Tensor, cell: Tensor | None, batch: Tensor) -> Tensor:
    """Differentiable edge vectors ``pos[j] - pos[i] + cell_offsets @ cell[batch[i]]`` (E,3)."""
    src, dst = edge_index[0], edge_index[1]
    # index_select, not pos[src]: its backward is deterministic on CPU (index_add_)
    vec = pos.index_select(0, src) - pos.index_select(0, dst)
    if cell is not None and cell_offsets is not None and cell_offsets.numel() > 0:
        cell = cell.reshape(-1, 3, 3).to(pos.dtype)
        shift = torch.bmm(cell_offsets.to(pos.dtype).unsqueeze(1), cell.index_select(0, batch.index_select(0, dst))).squeeze(1)
        vec = vec + shift
    return vec
