"""The reference SpinConv's neighbour caps (graph/reference_cap.py) on hand-made graphs."""
from __future__ import annotations

import torch

from spinconv_train.graph.reference_cap import nearest_per_target, reference_stored_edge_cap


def test_nearest_per_target_keeps_each_targets_nearest_edges_only():
    # target 0 has four incoming edges, target 1 two; edges listed out of distance order
    edge_index = torch.tensor([[1, 2, 3, 4, 0, 2], [0, 0, 0, 0, 1, 1]])
    dist = torch.tensor([3.0, 1.0, 2.0, 4.0, 3.0, 1.0])
    assert nearest_per_target(edge_index, dist, 2).tolist() == [False, True, True, False, True, True]
    assert nearest_per_target(edge_index, dist, None).all()
    # not symmetric: 1->0 is dropped (not among 0's two nearest) while 0->1 is kept
    kept = nearest_per_target(edge_index, dist, 2)
    assert kept[4] and not kept[0]


def test_stored_edge_cap_keeps_every_edge_of_a_used_atom_pair():
    # edges 0..3 and 5 into atom 0 (edge 5: a farther periodic image of the pair {0, 2});
    # edge 4 is 0->1, edge 6 is 0->3
    edge_index = torch.tensor([[1, 2, 3, 4, 0, 2, 0], [0, 0, 0, 0, 1, 0, 3]])
    dist = torch.tensor([3.0, 1.0, 2.0, 4.0, 3.0, 5.0, 4.5])
    kept = reference_stored_edge_cap(edge_index, dist, num_atoms=5, max_neighbors=2)
    # atom 0's two nearest: 2->0 (1.0) and 3->0 (2.0): pairs {0,2}, {0,3} used. Atom 1's
    # nearest: 0->1: pair {0,1} used, so 1->0 is kept too. 4->0 is not (pair {0,4} unused).
    # The far image 2->0 (5.0) and 0->3 (4.5) share used pairs and are kept.
    assert kept.tolist() == [True, True, True, False, True, True, True]
