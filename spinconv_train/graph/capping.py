"""Symmetric neighbour capping and reverse-edge search on numpy arrays.

These are the CPU kernels behind ``radius_graph``, ``cap_neighbors`` and ``reverse_edges``:
on the arrays of a batch of structures (thousands of edges) a numpy sort costs
microseconds, where the equivalent chain of torch ops costs a few hundred.

An edge is (source j, target i, integer lattice shift S); its reverse is (i, j, -S).
Edges are ordered by target, then distance, then the tie key (source, then S
lexicographically), then input position, which is the order the torch path produces.

The cap is a function of the geometry, not of the numbering: an atom keeps its
``max_neighbors`` nearest neighbours and every neighbour as near as the last of them
within ``CAP_TIE_RTOL`` (relative), so a shell of equal distances that the cap would cut
(lattice sites of a crystal or of a slab's fixed layers) is kept whole. Rotating,
translating or renumbering the atoms or choosing other periodic images then gives the same
graph; without such ties the kept edges are exactly the ``max_neighbors`` nearest.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "CAP_TIE_RTOL",
    "NO_CAP",
    "cap_value",
    "cap_half_list_np",
    "cap_symmetric_np",
    "cap_symmetric_paired_np",
    "edge_keys_np",
    "find_reverse_np",
    "full_from_half_np",
    "half_list_key_fits",
]

_KEY_LIMIT = 2**62
# Neighbours whose distance exceeds that of the cap's last one by at most this fraction
# count as tied with it. Far above the rounding of positions stored in float32 (up to
# ~1e-6 Å per coordinate for coordinates below 32 Å, so ~1e-6 relative between two equal
# distances near 5 Å) and far below any physical difference between shells.
CAP_TIE_RTOL = 1e-5


# The cap that never binds (``max_neighbors=None``): larger than any neighbour count,
# small enough that offsets computed from it stay far from int64 overflow.
NO_CAP = 2**31 - 1


def cap_value(max_neighbors: int | None) -> int:
    """``max_neighbors`` as the integer the kernels take: None (no cap) is ``NO_CAP``."""
    if max_neighbors is None:
        return NO_CAP
    if isinstance(max_neighbors, bool) or int(max_neighbors) != max_neighbors or max_neighbors < 1:
        raise ValueError(f"max_neighbors must be a positive integer or None (no cap), got {max_neighbors!r}")
    return min(int(max_neighbors), NO_CAP)


def shell_threshold_np(sorted_dist: np.ndarray, counts: np.ndarray, max_neighbors: int) -> np.ndarray:
    """Per atom, the largest distance the cap keeps: the ``max_neighbors``-th smallest of
    its edges' distances times (1 + CAP_TIE_RTOL), or +inf when it has no more edges.

    ``sorted_dist`` holds the edges' distances grouped by target atom (``counts`` per atom,
    in atom order), ascending within each atom.
    """
    threshold = np.full(counts.size, np.inf)
    over = counts > max_neighbors
    if over.any():
        first = np.cumsum(counts) - counts
        threshold[over] = sorted_dist[first[over] + (max_neighbors - 1)] * (1.0 + CAP_TIE_RTOL)
    return threshold


def _near_sorted(sorted_dist: np.ndarray, sorted_tgt: np.ndarray, counts: np.ndarray, max_neighbors: int) -> np.ndarray:
    """Whether each edge (in target, distance order) is kept by its target's cap."""
    return sorted_dist <= shell_threshold_np(sorted_dist, counts, max_neighbors)[sorted_tgt]


def edge_keys_np(src: np.ndarray, dst: np.ndarray, shifts: np.ndarray, num_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """Unique int64 keys of the edges and of their reverses: ``(keys, reverse_keys)``.

    The key orders edges by target, then source, then the shift components, and the
    mapping is the same for both arrays (the span of |shift| is symmetric under
    negation), so an edge's reverse exists exactly when its reverse key is a key.
    """
    keys, rev_keys, _ = _edge_keys_bounded(src, dst, shifts, num_atoms)
    return keys, rev_keys


def _edge_keys_bounded(
    src: np.ndarray, dst: np.ndarray, shifts: np.ndarray, num_atoms: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """``edge_keys_np`` plus a bound: every key lies in ``[0, bound)``."""
    if src.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, 1
    span = int(np.abs(shifts).max())
    base = 2 * span + 1
    if num_atoms * num_atoms * base**3 >= _KEY_LIMIT:
        raise ValueError(f"edge keys would overflow int64 ({num_atoms} atoms, lattice shifts up to {span})")
    cube = base**3
    # Shift part of the key: mixed radix with digits s + span in [0, 2 span] (one matmul).
    shift_key = shifts @ np.array([base * base, base, 1], dtype=np.int64)
    shift_key += span * (base * base + base + 1)
    # The negated shift has digits base - 1 - digit, so its key is base**3 - 1 - shift_key.
    keys = (dst * num_atoms + src) * cube + shift_key
    rev_keys = (src * num_atoms + dst) * cube + ((cube - 1) - shift_key)
    return keys, rev_keys, num_atoms * num_atoms * cube


def _compact(values: np.ndarray, bound: int) -> np.ndarray:
    """``values`` (all in ``[0, bound)``) in the smallest unsigned type that holds them:
    numpy's stable argsort is a radix sort for 16-bit types and faster for 32-bit ones."""
    if bound <= 2**16:
        return values.astype(np.uint16)
    if bound <= 2**32:
        return values.astype(np.uint32)
    return values


def _reverse_sorted(keys: np.ndarray, rev_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(by_key, rev, found)``: the stable argsort of ``keys``, each edge's reverse, and
    whether it exists."""
    num_edges = keys.size
    by_key = np.argsort(keys, kind="stable")
    sorted_keys = keys[by_key]
    if num_edges > 1 and bool((sorted_keys[1:] != sorted_keys[:-1]).all()):
        # Unique keys: when the reverse keys are a permutation of the keys (a symmetric
        # graph, the usual case), sorting them pairs every edge with its reverse.
        by_rev = np.argsort(rev_keys, kind="stable")
        if np.array_equal(rev_keys[by_rev], sorted_keys):
            rev = np.empty(num_edges, dtype=np.int64)
            rev[by_rev] = by_key
            return by_key, rev, np.ones(num_edges, dtype=bool)
    at = np.searchsorted(sorted_keys, rev_keys)
    np.minimum(at, num_edges - 1, out=at)
    return by_key, by_key[at], sorted_keys[at] == rev_keys


def find_reverse_np(keys: np.ndarray, rev_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of each edge's reverse, whether it exists) from ``edge_keys_np`` output."""
    if keys.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    bound = int(max(keys.max(), rev_keys.max())) + 1
    _, rev, found = _reverse_sorted(_compact(keys, bound), _compact(rev_keys, bound))
    return rev, found


def cap_symmetric_np(
    src: np.ndarray, tgt: np.ndarray, shifts: np.ndarray, dist: np.ndarray, num_atoms: int, max_neighbors: int
) -> np.ndarray:
    """Indices (into the inputs) of the kept edges, in output order.

    An edge is kept when it is among the ``max_neighbors`` nearest of its target (ties with
    the last of them included, ``CAP_TIE_RTOL``) or its reverse is among those of its
    source, and its reverse is present at all. The result
    is ordered by target, then distance, then source and shift, then input position.

    Args:
        src, tgt: (E,) int64 atom indices below ``num_atoms``.
        shifts: (E,3) int64 lattice shifts.
        dist: (E,) edge lengths.
    """
    num_edges = src.size
    if num_edges == 0:
        return np.zeros(0, dtype=np.int64)
    keys, rev_keys, bound = _edge_keys_bounded(src, tgt, shifts, num_atoms)
    by_key, rev, found = _reverse_sorted(_compact(keys, bound), _compact(rev_keys, bound))
    # Stable sorts from the last key: (key, input position), then distance, then target.
    dist_by_key = dist[by_key]
    by_dist = np.argsort(dist_by_key)  # any sort is the stable one when no distances tie
    sorted_dist = dist_by_key[by_dist]
    if bool((sorted_dist[1:] == sorted_dist[:-1]).any()):
        by_dist = np.argsort(dist_by_key, kind="stable")
    order = by_key[by_dist]
    order = order[np.argsort(_compact(tgt[order], num_atoms), kind="stable")]
    counts = np.bincount(tgt, minlength=num_atoms)
    if int(counts.max()) <= max_neighbors:
        keep_sorted = found[order]  # every edge is among its target's nearest
    else:
        near = np.empty(num_edges, dtype=bool)
        near[order] = _near_sorted(dist[order], tgt[order], counts, max_neighbors)
        keep_sorted = ((near | near[rev]) & found)[order]
    return order[keep_sorted]


def cap_symmetric_paired_np(
    src: np.ndarray,
    tgt: np.ndarray,
    shifts: np.ndarray,
    dist: np.ndarray,
    rev: np.ndarray,
    num_atoms: int,
    max_neighbors: int,
) -> np.ndarray:
    """``cap_symmetric_np`` for a symmetric edge list whose reverses are already known.

    ``rev[k]`` is the index of the reverse of edge k (as built from a half neighbour
    list), so no reverse search is needed. Edges must be unique, which makes the
    output order (target, distance, source and shift) independent of input positions;
    the tie key is sorted only when two edges of one target have equal distances.
    """
    num_edges = src.size
    if num_edges == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(dist)
    order = order[np.argsort(_compact(tgt[order], num_atoms), kind="stable")]
    sorted_dist, sorted_tgt = dist[order], tgt[order]
    if bool(((sorted_dist[1:] == sorted_dist[:-1]) & (sorted_tgt[1:] == sorted_tgt[:-1])).any()):
        # Ties within a target: order them by the edge key as cap_symmetric_np does.
        keys, _, bound = _edge_keys_bounded(src, tgt, shifts, num_atoms)
        by_key = np.argsort(_compact(keys, bound), kind="stable")
        order = by_key[np.argsort(dist[by_key], kind="stable")]
        order = order[np.argsort(_compact(tgt[order], num_atoms), kind="stable")]
    counts = np.bincount(tgt, minlength=num_atoms)
    if int(counts.max()) <= max_neighbors:
        return order  # every edge is among its target's nearest
    near = np.empty(num_edges, dtype=bool)
    near[order] = _near_sorted(dist[order], tgt[order], counts, max_neighbors)
    return order[(near | near[rev])[order]]


def full_from_half_np(
    i: np.ndarray, j: np.ndarray, shifts: np.ndarray, dist: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The directed edge list ``(src, tgt, shifts, dist, rev)`` of a half pair list.

    Pair k of the half list (centre ``i[k]``, neighbour ``j[k]``, shift ``S[k]``) gives
    edge k = (j -> i, S) and edge k + h = (i -> j, -S), each the other's reverse.
    """
    half = i.size
    rev = np.concatenate([np.arange(half, 2 * half), np.arange(half)])
    return (
        np.concatenate([j, i]),
        np.concatenate([i, j]),
        np.concatenate([shifts, -shifts]),
        np.concatenate([dist, dist]),
        rev,
    )


def half_list_key_fits(num_atoms: int, num_pairs: int, max_shift: int) -> bool:
    """Whether ``cap_half_list_np`` can pack the keys of ``num_pairs`` pairs among
    ``num_atoms`` atoms with lattice shifts up to ``max_shift`` into one int64."""
    cube = (2 * max_shift + 1) ** 3
    position_bits = max(2 * num_pairs - 1, 1).bit_length()
    return (num_atoms * max(num_pairs, 1) * num_atoms * cube) << position_bits < _KEY_LIMIT


def cap_half_list_np(
    i: np.ndarray, j: np.ndarray, shifts: np.ndarray, dist: np.ndarray, num_atoms: int, max_neighbors: int
) -> tuple[np.ndarray, np.ndarray]:
    """Capped symmetric graph of a half pair list: ``(edge_index (2,E), shifts (E,3))``,
    int64, in output order (target, then distance, then source and shift).

    The same edges in the same order as ``cap_symmetric_paired_np`` on
    ``full_from_half_np(i, j, shifts, dist)``, with one sort of the h pair distances and
    one sort of 2h integers: each edge gets the key (target, dense rank of its distance,
    source, shift) packed with its position into one int64, so exact distance ties
    (fixed atoms at lattice sites, perfect crystals) cost nothing extra. The pairs may
    come from several structures with global atom indices (edges never cross
    structures): the result is then each structure's graph, one after the other.
    Keys that do not fit in an int64 (``half_list_key_fits``) take
    ``cap_symmetric_paired_np``.

    Args:
        i, j: (h,) integer centre and neighbour of each pair, below ``num_atoms``.
        shifts: (h,3) integer lattice shifts (edge vector ``r_j - r_i + S @ cell``).
        dist: (h,) pair distances.
    """
    half = i.size
    if half == 0:
        return np.zeros((2, 0), dtype=np.int64), np.zeros((0, 3), dtype=np.int64)
    num_edges = 2 * half
    # rows: source, target; edge k < h is j -> i with shift S, edge k + h its reverse
    edge_index = np.concatenate((j, i, i, j)).astype(np.int64, copy=False).reshape(2, num_edges)
    src, tgt = edge_index[0], edge_index[1]
    span = max(int(shifts.max()), -int(shifts.min()))
    if not half_list_key_fits(num_atoms, half, span):
        full_shifts = np.concatenate([shifts, -shifts]).astype(np.int64, copy=False)
        rev = np.concatenate([np.arange(half, num_edges), np.arange(half)])
        kept = cap_symmetric_paired_np(src, tgt, full_shifts, np.concatenate([dist, dist]), rev, num_atoms,
                                       max_neighbors)
        return np.take(edge_index, kept, axis=1), np.take(full_shifts, kept, axis=0)
    by_dist = np.argsort(dist)
    sorted_dist = dist[by_dist]
    steps = np.empty(half, dtype=np.int64)  # dense rank along the sorted distances
    steps[0] = 0
    np.cumsum(sorted_dist[1:] != sorted_dist[:-1], out=steps[1:])
    num_ranks = int(steps[-1]) + 1
    base = 2 * span + 1
    cube = base**3
    position_bits = int(num_edges - 1).bit_length()
    # key = ((target * R + rank) * N + source) * cube + shift digits (s + span, lexicographic;
    # the reverse's negated shift has digits 2 span - d, i.e. key cube - 1 - key)
    pair_part = np.empty(half, dtype=np.int64)
    pair_part[by_dist] = steps
    pair_part *= num_atoms * cube
    shift_key = shifts @ np.array([base * base, base, 1], dtype=np.int64)
    shift_key += span * (base * base + base + 1)
    key = tgt * (num_ranks * num_atoms * cube)
    key += src * cube
    key[:half] += pair_part + shift_key
    pair_part += cube - 1
    pair_part -= shift_key
    key[half:] += pair_part
    key <<= position_bits
    key += np.arange(num_edges)
    order = np.sort(key)  # keys are unique: a plain sort gives the stable order
    order &= (1 << position_bits) - 1
    counts = np.bincount(tgt, minlength=num_atoms)
    if int(counts.max()) > max_neighbors:
        sorted_dist = dist[np.where(order < half, order, order - half)]
        threshold = shell_threshold_np(sorted_dist, counts, max_neighbors)
        near = np.empty(num_edges, dtype=bool)
        near[order] = sorted_dist <= np.repeat(threshold, counts)
        keep_pair = near[:half] | near[half:]  # an edge is kept with its reverse
        order = order[np.concatenate((keep_pair, keep_pair))[order]]
    full_shifts = np.empty((num_edges, 3), dtype=np.int64)
    full_shifts[:half] = shifts
    np.negative(shifts, out=full_shifts[half:], casting="unsafe")
    # np.take: C-ordered results, and several times faster than 2-D fancy indexing
    return np.take(edge_index, order, axis=1), np.take(full_shifts, order, axis=0)
