"""Neighbour lists (periodic and not) and edge utilities."""
from .radius_graph import cap_neighbors, edge_vectors, radius_graph, reverse_edges

__all__ = ["cap_neighbors", "edge_vectors", "radius_graph", "reverse_edges"]
