"""The embedding capacity the dataset check compares atomic numbers with."""
from __future__ import annotations

import torch

from spinconv_train.models.baselines import DimeNetPlusPlusModel, SchNetModel
from spinconv_train.models.element_capacity import max_atomic_number
from spinconv_train.models.spinconv.model import SpinConv


def test_max_atomic_number_of_each_model():
    spinconv = SpinConv(hidden_channels=8, mid_hidden_channels=8, num_interactions=1, num_basis_functions=8,
                        sphere_size_lat=4, sphere_size_long=4, max_num_elements=90)
    assert max_atomic_number(spinconv) == 89
    schnet = SchNetModel(hidden_channels=8, num_filters=8, num_interactions=1, num_gaussians=8)
    assert max_atomic_number(schnet) == schnet.net.embedding.num_embeddings - 1 == 99
    dimenet = DimeNetPlusPlusModel(hidden_channels=8, num_blocks=1, int_emb_size=8, basis_emb_size=4,
                                   out_emb_channels=8, num_spherical=3, num_radial=4)
    assert max_atomic_number(dimenet) == 94
    assert max_atomic_number(torch.nn.Linear(2, 2)) is None
