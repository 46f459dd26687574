"""Graph and edges of one forward pass: the radius graph, differentiable edge vectors, the
reverse-edge map and the list of (projected edge k->j, edge j->i) pairs.

The pair list is built from CSR offsets of the edges sorted by target: for every edge
j->i, all edges into j. Its size is sum_j deg(j)^2, linear in the number of atoms for a
bounded neighbour count; nothing here is (atoms x atoms).

The integer work that needs data-dependent sizes or checks (neighbour search, capping,
reverse edges, degrees, the neighbour check, the number of pairs) runs on the host, where
the neighbour search already is; its small per-edge results reach the model's device in
one transfer, and the pair lists are built there with their size given, so on a GPU
nothing here waits for the device except that copy (``bincount``, ``repeat_interleave``
without an output size and ``.any()`` checks on CUDA tensors each synchronise).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ...graph import cap_neighbors, edge_vectors, radius_graph, reverse_edges
from ...graph.reference_cap import by_target_then_distance, nearest_per_target, reference_stored_edge_cap


@dataclass
class EdgeGraph:
    """Edges of a batch, sorted by target atom, and the pairs of edges the model projects."""

    edge_index: Tensor  # (2, E): row 0 source j, row 1 target i
    cell_offsets: Tensor  # (E, 3)
    vec: Tensor  # (E, 3) pos[j] - pos[i] + shift, differentiable w.r.t. pos
    dist: Tensor  # (E,)
    unit: Tensor  # (E, 3)
    rev: Tensor  # (E,) index of the reverse edge
    pair_src: Tensor  # (P,) edge k->j projected onto the sphere of ...
    pair_dst: Tensor  # (P,) ... edge j->i (non-decreasing)
    pair_is_reverse: Tensor  # (P,) bool: pair_src is pair_dst's reverse (i->j)


def _structure_of(batch: Tensor, atom: int) -> tuple[int, int]:
    """(structure index, index of the atom within its structure)."""
    b = int(batch[atom])
    first = int((batch == b).nonzero()[0])
    return b, atom - first


def check_atomic_numbers(atomic_numbers: Tensor, batch: Tensor, max_num_elements: int) -> None:
    """Raise ValueError naming the first atom whose atomic number is out of range."""
    bad = (atomic_numbers < 0) | (atomic_numbers >= max_num_elements)
    if bool(bad.any()):
        atom = int(bad.nonzero()[0])
        b, local = _structure_of(batch, atom)
        raise ValueError(
            f"atom {atom} (structure {b}, atom {local} within it) has atomic number "
            f"{int(atomic_numbers[atom])}, outside [0, max_num_elements={max_num_elements})"
        )


@dataclass
class EdgeIndices:
    """The integer part of an ``EdgeGraph``, on the model's device: what the neighbour
    search on the host decided. With the positions and cell it determines the graph, so a
    caller may build it once and reuse it (e.g. replaying a captured CUDA graph)."""

    edge_index: Tensor  # (2, E), sorted by target
    cell_offsets: Tensor  # (E, 3) integer image shifts
    rev: Tensor  # (E,)
    degree: Tensor  # (N,) in-degrees
    num_pairs: int  # sum of the sources' degrees: the size of the pair lists


def lattice(data, pos: Tensor, use_pbc: bool, cell: Tensor | None = None) -> Tensor | None:
    """The (B, 3, 3) cells the edge vectors use (``cell`` or ``data.cell``; None without PBC)."""
    if cell is None:
        cell = getattr(data, "cell", None)
    if not use_pbc or cell is None:
        return None
    return cell.reshape(-1, 3, 3).to(pos.dtype)


def edge_indices(
    data,
    pos: Tensor,
    cutoff: float,
    max_neighbors: int,
    use_pbc: bool,
    otf_graph: bool,
    cell: Tensor | None = None,
    neighbor_cap: str = "symmetric",
) -> EdgeIndices:
    """Neighbour search, capping, checks and reverse edges on the host, then one transfer
    of the per-edge integers to ``pos``' device (the only wait for a GPU). ``neighbor_cap``:
    "symmetric" (this project's cap) or "reference" (``graph.reference_cap``: not symmetric;
    an edge without a reverse gets reverse index -1)."""
    batch = data.batch
    num_atoms = pos.shape[0]
    cell = lattice(data, pos, use_pbc, cell)
    precomputed = getattr(data, "edge_index", None)
    host = torch.device("cpu")
    if otf_graph or precomputed is None:
        pbc = getattr(data, "pbc", None) if use_pbc else None
        if neighbor_cap == "reference":
            edge_index, shifts = radius_graph(pos, batch, data.natoms, cell, pbc, cutoff, None, device=host)
            dist = edge_vectors(pos.detach(), edge_index.to(pos.device), shifts.to(pos.device, pos.dtype),
                                None if cell is None else cell.detach(), batch).norm(dim=-1).to(host)
            keep = nearest_per_target(edge_index, dist, max_neighbors)
            edge_index, shifts = edge_index[:, keep], shifts[keep]
        else:
            edge_index, shifts = radius_graph(pos, batch, data.natoms, cell, pbc, cutoff, max_neighbors, device=host)
    else:
        offsets = getattr(data, "cell_offsets", None)
        if offsets is None or not use_pbc:
            offsets = pos.new_zeros(precomputed.shape[1], 3)
        offsets = offsets.to(pos.dtype)
        search_cell = None if cell is None else cell.detach()
        dist = edge_vectors(pos.detach(), precomputed, offsets, search_cell, batch).norm(dim=-1).to(host)
        precomputed, offsets = precomputed.to(host), offsets.to(host)
        inside = (dist < cutoff) & (dist > 0)
        if neighbor_cap == "reference":
            precomputed, offsets, dist = precomputed[:, inside].long(), offsets[inside], dist[inside]
            keep = reference_stored_edge_cap(precomputed, dist, num_atoms, max_neighbors)
            order = by_target_then_distance(precomputed[1][keep], dist[keep])
            edge_index, shifts = precomputed[:, keep][:, order], offsets[keep][order].round().long()
        else:
            edge_index, shifts = cap_neighbors(precomputed[:, inside], offsets[inside], dist[inside], num_atoms,
                                               max_neighbors)
    edge_index = edge_index.long()
    degree = torch.bincount(edge_index[1], minlength=num_atoms)
    if bool((degree == 0).any()):
        atom = int((degree == 0).nonzero()[0])
        b, local = _structure_of(batch.to(host), atom)
        raise ValueError(
            f"atom {atom} (structure {b}, atom {local} within it) has no neighbours within "
            f"cutoff {cutoff} Å; SpinConv needs at least one neighbour per atom"
        )
    rev = reverse_edges(edge_index, shifts, allow_missing=neighbor_cap == "reference")
    num_pairs = int(degree[edge_index[0]].sum())
    # Only the small per-edge/per-atom arrays travel; the (pairs,) lists, ~30x larger, are
    # built on the device, with their size known here so that nothing there waits.
    edge_index, rev, degree, cell_offsets = _to_device(pos.device, edge_index, rev, degree, shifts.round().long())
    return EdgeIndices(edge_index, cell_offsets, rev, degree, num_pairs)


def edge_graph(indices: EdgeIndices, pos: Tensor, cell: Tensor | None, batch: Tensor) -> EdgeGraph:
    """The graph on the device: pair lists and differentiable vectors from ``pos`` and the
    ``lattice`` cells. Nothing here synchronises with a GPU (it can be captured)."""
    edge_index, rev = indices.edge_index, indices.rev
    pair_src, pair_dst = edge_pairs(edge_index, indices.degree, indices.num_pairs)
    pair_is_reverse = pair_src == rev[pair_dst]
    cell_offsets = indices.cell_offsets.to(pos.dtype)
    vec = edge_vectors(pos, edge_index, cell_offsets, cell, batch)
    dist = vec.norm(dim=-1)
    unit = vec / dist.unsqueeze(-1)
    return EdgeGraph(edge_index, cell_offsets, vec, dist, unit, rev, pair_src, pair_dst, pair_is_reverse)


def build_edge_graph(
    data,
    pos: Tensor,
    cutoff: float,
    max_neighbors: int,
    use_pbc: bool,
    otf_graph: bool,
    cell: Tensor | None = None,
    neighbor_cap: str = "symmetric",
) -> EdgeGraph:
    """Edges of ``data`` (a torch_geometric Batch) with vectors computed from ``pos`` and
    the lattice ``cell`` (default ``data.cell``; a strained copy for the stress)."""
    indices = edge_indices(data, pos, cutoff, max_neighbors, use_pbc, otf_graph, cell, neighbor_cap)
    return edge_graph(indices, pos, lattice(data, pos, use_pbc, cell), data.batch)


def _to_device(device: torch.device, *tensors: Tensor) -> tuple[Tensor, ...]:
    """Host integer/bool tensors on ``device``: one packed copy instead of one per tensor."""
    if device.type == "cpu":
        return tensors
    return unpack_indices(pack_indices(tensors).to(device), tensors)


def pack_indices(tensors: tuple[Tensor, ...]) -> Tensor:
    """Integer/bool tensors flattened into one int64 vector (see ``unpack_indices``)."""
    return torch.cat([t.reshape(-1).long() for t in tensors])


def unpack_indices(flat: Tensor, like: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Views of ``flat`` with the shapes (and bool-ness) of ``like``: ``pack_indices``' inverse."""
    out, start = [], 0
    for t in like:
        part = flat[start:start + t.numel()].view(t.shape)
        out.append(part.bool() if t.dtype == torch.bool else part)
        start += t.numel()
    return tuple(out)


def edge_pairs(edge_index: Tensor, degree: Tensor, num_pairs: int | None = None) -> tuple[Tensor, Tensor]:
    """For every edge e = j->i, all edges e' = k->j into its source: (pair_src=e', pair_dst=e).

    Requires ``edge_index`` sorted by target (as ``build_edge_graph`` returns it) and
    ``degree`` its in-degrees (bincount of the targets); ``pair_dst`` is non-decreasing.
    ``num_pairs`` (the sum of the sources' degrees), when known, spares
    ``repeat_interleave`` reading the repeats back from a GPU.
    """
    src = edge_index[0]
    num_edges = src.numel()
    first = torch.cumsum(degree, 0) - degree
    per_edge = degree[src]
    pair_dst = torch.repeat_interleave(torch.arange(num_edges, device=src.device), per_edge, output_size=num_pairs)
    start = torch.cumsum(per_edge, 0) - per_edge
    within = torch.arange(pair_dst.numel(), device=src.device) - start[pair_dst]
    pair_src = first[src[pair_dst]] + within
    return pair_src, pair_dst
