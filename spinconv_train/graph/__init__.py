"""Neighbour lists (periodic and not), edge utilities."""
from .cap_report import atoms_cut_by_cap, binding_cap_message
from .radius_graph import (
    cap_neighbors,
    edge_vectors,
    periodic_flags,
    radius_graph,
    reverse_edges,
    structures_graph_np,
)

__all__ = [
    "atoms_cut_by_cap",
    "binding_cap_message",
    "cap_neighbors",
    "edge_vectors",
    "periodic_flags",
    "radius_graph",
    "reverse_edges",
    "structures_graph_np",
]
