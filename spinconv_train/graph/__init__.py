"""Neighbour lists (periodic and not), edge utilities."""
from .radius_graph import (
    cap_neighbors,
    edge_vectors,
    periodic_flags,
    radius_graph,
    reverse_edges,
    structures_graph_np,
)

__all__ = [
    "cap_neighbors",
    "edge_vectors",
    "periodic_flags",
    "radius_graph",
    "reverse_edges",
    "structures_graph_np",
]
