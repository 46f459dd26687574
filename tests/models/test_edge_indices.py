"""Precomputed edge indices (``SpinConv.edge_indices`` + ``forward(edges=...)``), the split
that CUDA graphs replay: the same outputs as the plain forward."""
from __future__ import annotations

import pytest
import torch
from spinconv_testkit import distorted_crystal, make_model, rattled_molecule, slab_with_adsorbate, to_batch

from spinconv_train.models.spinconv.speed.graphed import GraphedSpinConv


@pytest.mark.parametrize("estimator", ["grad", "direct"])
@pytest.mark.parametrize("kind", ["slabs", "molecule"])
def test_forward_with_precomputed_edges_equals_the_plain_forward(estimator, kind):
    model = make_model(force_estimator=estimator, envelope=True).eval()
    if kind == "slabs":
        batch = to_batch([slab_with_adsorbate(0), slab_with_adsorbate(1, adsorbate="O")])
    else:
        model.use_pbc = False
        batch = to_batch([rattled_molecule()])
    edges = model.edge_indices(batch.clone())
    with torch.no_grad():
        plain = model(batch.clone(), atom_energies=True)
        split = model(batch.clone(), atom_energies=True, edges=edges)
    assert plain.keys() == split.keys() == {"energy", "forces", "atom_energies"}
    for key in plain:
        assert torch.equal(plain[key], split[key]), key


def test_stress_with_precomputed_edges():
    model = make_model(force_estimator="grad", envelope=True).eval()
    batch = to_batch([distorted_crystal(1), distorted_crystal(2)])
    with torch.no_grad():
        plain = model(batch.clone(), stress=True)
        split = model(batch.clone(), stress=True, edges=model.edge_indices(batch.clone()))
    for key in ("energy", "forces", "stress"):
        assert torch.equal(plain[key], split[key]), key


def test_edge_indices_checks_the_atomic_numbers():
    model = make_model()
    batch = to_batch([slab_with_adsorbate(0)])
    batch.atomic_numbers[3] = 95.0
    with pytest.raises(ValueError, match=r"atom 3 .* atomic number 95"):
        model.edge_indices(batch)


def test_graphed_wrapper_refuses_what_it_cannot_run():
    model = make_model(dtype=torch.float32)
    with pytest.raises(TypeError, match="SpinConv"):
        GraphedSpinConv(torch.nn.Linear(2, 2))
    graphed = GraphedSpinConv(model)
    assert graphed.force_estimator == model.force_estimator and graphed.supports_stress == model.supports_stress
    with pytest.raises(RuntimeError, match="CUDA only"):
        graphed(to_batch([slab_with_adsorbate(0)], torch.float32))
    with pytest.raises(RuntimeError, match="for inference"):
        graphed.train()
