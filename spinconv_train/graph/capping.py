"""Symmetric neighbour capping and reverse-edge search on numpy arrays.

These are the CPU kernels behind ``radius_graph``, ``cap_neighbors`` and ``reverse_edges``:
on the small arrays of one structure (a few thousand edges) a numpy sort costs
microseconds, where the equivalent chain of torch ops costs a few hundred.

An edge is (source j, target i, integer lattice shift S); its reverse is (i, j, -S).
Edges are ordered by target, then distance, then the tie key (source, then S
lexicographically), then input position, which is the order the torch path produces.
"""
from __future__ import annotations

import numpy as np

__all__ = ["cap_symmetric_np", "cap_symmetric_paired_np", "edge_keys_np", "find_reverse_np"]

_KEY_LIMIT = 2**62


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

    An edge is kept when it is among the ``max_neighbors`` nearest of its target or its
    reverse is among those of its source, and its reverse is present at all. The result
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
        first = np.cumsum(counts) - counts
        near = np.empty(num_edges, dtype=bool)
        near[order] = (np.arange(num_edges) - first[tgt[order]]) < max_neighbors
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
    first = np.cumsum(counts) - counts
    near = np.empty(num_edges, dtype=bool)
    near[order] = (np.arange(num_edges) - first[tgt[order]]) < max_neighbors
    return order[(near | near[rev])[order]]
