"""The neighbour caps of the reference SpinConv (OCP v0.x), for models imported from OCP
checkpoints (``model.neighbor_cap: reference``).

Built on the fly (``otf_graph``), the reference's graph keeps, for each target atom, its
``max_num_neighbors`` nearest incoming edges and no others: the result is not symmetric
(j->i may be kept while i->j is not). From edges stored in an LMDB it keeps every stored
edge whose two atoms are linked, in either direction and through any periodic image, by an
edge among the ``max_num_neighbors`` nearest of its target. Where several neighbours lie at
the distance of the last one kept, the reference's choice among them was arbitrary (an
unstable sort); here it follows the edge order (distance, then source and shift).
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["by_target_then_distance", "nearest_per_target", "reference_stored_edge_cap"]


def _rank_within_target(target: Tensor, order: Tensor) -> Tensor:
    """For edges visited in ``order`` (grouped by target), each edge's rank within its target."""
    sorted_target = target[order]
    num_edges = target.numel()
    is_first = torch.ones(num_edges, dtype=torch.bool)
    if num_edges > 1:
        is_first[1:] = sorted_target[1:] != sorted_target[:-1]
    group_start = torch.cummax(torch.where(is_first, torch.arange(num_edges), torch.zeros_like(target)), 0).values
    rank = torch.empty_like(target)
    rank[order] = torch.arange(num_edges) - group_start
    return rank


def by_target_then_distance(target: Tensor, dist: Tensor) -> Tensor:
    """Edge order: by target, then distance, ties by input position (stable sorts)."""
    by_distance = torch.sort(dist, stable=True).indices
    return by_distance[torch.sort(target[by_distance], stable=True).indices]


def nearest_per_target(edge_index: Tensor, dist: Tensor, max_neighbors: int | None) -> Tensor:
    """Mask (E,) of the edges among the ``max_neighbors`` nearest of their target (all when
    ``max_neighbors`` is None): the reference's on-the-fly cap. Host tensors."""
    if max_neighbors is None or edge_index.shape[1] == 0:
        return torch.ones(edge_index.shape[1], dtype=torch.bool)
    target = edge_index[1].long()
    rank = _rank_within_target(target, by_target_then_distance(target, dist))
    return rank < max_neighbors


def reference_stored_edge_cap(edge_index: Tensor, dist: Tensor, num_atoms: int, max_neighbors: int | None) -> Tensor:
    """Mask (E,) of the stored edges the reference kept (its ``_filter_edges``): those whose
    unordered atom pair is used by an edge among the ``max_neighbors`` nearest of its target."""
    nearest = nearest_per_target(edge_index, dist, max_neighbors)
    low = torch.minimum(edge_index[0], edge_index[1]).long()
    high = torch.maximum(edge_index[0], edge_index[1]).long()
    pair = low * num_atoms + high
    return torch.isin(pair, pair[nearest])
