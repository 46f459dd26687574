"""SchNet and DimeNet++ baselines on our periodic graph: invariance, forces, triplets."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch
from trainers.trainer_testing import emt_slabs

from spinconv_train.graph import radius_graph, reverse_edges
from spinconv_train.models.baselines import DimeNetPlusPlusModel, SchNetModel, triplets
from spinconv_train.registry import MODELS

_MODELS = {}


def tiny(name):
    """A small float64 model (built once per module: DimeNet++'s basis set-up takes seconds)."""
    if name not in _MODELS:
        torch.manual_seed(0)
        if name == "schnet":
            model = SchNetModel(hidden_channels=16, num_filters=16, num_interactions=2, num_gaussians=12, cutoff=5.0)
        else:
            model = DimeNetPlusPlusModel(hidden_channels=8, num_blocks=1, int_emb_size=8, basis_emb_size=4,
                                         out_emb_channels=8, num_spherical=3, num_radial=4, cutoff=4.0,
                                         max_neighbors=12)
            with torch.no_grad():  # torch_geometric zero-initialises the output layers
                for block in model.net.output_blocks:
                    block.lin.weight.normal_(std=0.3)
        _MODELS[name] = model.double()
    return _MODELS[name]


@pytest.fixture(scope="module")
def batch():
    return Batch.from_data_list(emt_slabs(2, seed=7))


def test_registered():
    assert MODELS.get("schnet") is SchNetModel and MODELS.get("dimenetplusplus") is DimeNetPlusPlusModel


@pytest.mark.parametrize("name", ["schnet", "dimenetplusplus"])
def test_rotation_invariance_and_force_equivariance(name, batch):
    model = tiny(name)
    b = batch.clone()
    b.pos, b.cell = b.pos.double(), b.cell.double()
    out = model(b)
    assert out["energy"].abs().min() > 0 and out["forces"].abs().max() > 0
    rot = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3)))[0]
    r = b.clone()
    r.pos, r.cell = b.pos @ rot.T, b.cell @ rot.T
    rotated = model(r)
    torch.testing.assert_close(rotated["energy"], out["energy"], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(rotated["forces"], out["forces"] @ rot.T, rtol=1e-8, atol=1e-9)
    # Periodicity: moving an atom by a lattice vector changes nothing.
    s = b.clone()
    s.pos = b.pos.clone()
    s.pos[0] += b.cell[0, 0]
    torch.testing.assert_close(model(s)["energy"], out["energy"], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["schnet", "dimenetplusplus"])
def test_forces_are_minus_energy_gradient(name, batch):
    model = tiny(name)
    b = batch.clone()
    b.pos, b.cell = b.pos.double(), b.cell.double()
    forces = model(b)["forces"].detach()
    eps = 1e-5
    for atom, axis in [(3, 0), (12, 2), (20, 1)]:
        plus, minus = b.clone(), b.clone()
        plus.pos, minus.pos = b.pos.clone(), b.pos.clone()
        plus.pos[atom, axis] += eps
        minus.pos[atom, axis] -= eps
        with torch.no_grad():
            numeric = -(model(plus)["energy"].sum() - model(minus)["energy"].sum()) / (2 * eps)
        assert float(forces[atom, axis]) == pytest.approx(float(numeric), rel=1e-5, abs=1e-8)


def test_triplets_match_brute_force(batch):
    edge_index, offsets = radius_graph(batch.pos, batch.batch, batch.natoms, batch.cell, None, 4.0, 30)
    idx_kj, idx_ji = triplets(edge_index, batch.pos.shape[0], reverse_edges(edge_index, offsets))
    got = set(zip(idx_kj.tolist(), idx_ji.tolist()))
    src, dst = edge_index.tolist()
    off = [tuple(o) for o in offsets.tolist()]
    expected = set()
    for ji in range(len(src)):
        for kj in range(len(src)):
            same_atom = dst[kj] == src[ji]
            is_reverse = src[kj] == dst[ji] and off[kj] == tuple(-x for x in off[ji])
            if same_atom and not is_reverse:
                expected.add((kj, ji))
    assert got == expected and len(got) > 0


def test_energy_only_mode(batch):
    model = SchNetModel(hidden_channels=8, num_filters=8, num_interactions=1, num_gaussians=8, regress_forces=False)
    with torch.no_grad():
        out = model(batch)
    assert set(out) == {"energy"} and out["energy"].shape == (2,)
    assert np.isfinite(out["energy"].numpy()).all()
