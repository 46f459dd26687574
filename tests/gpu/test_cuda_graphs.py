"""GraphedSpinConv (CUDA graphs) against the model it wraps (skipped without a GPU)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from models.spinconv_testkit import distorted_crystal, make_model, rattled_molecule, slab_with_adsorbate, to_batch

from spinconv_train.models.spinconv.speed.graphed import GraphedSpinConv
from spinconv_train.tasks.targets import TargetState

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")


def _moved(atoms, seed):
    moved = atoms.copy()
    moved.rattle(0.01, seed=seed)
    return moved


def _check_equal(graphed, model, batch, **kwargs):
    with torch.no_grad():
        a = graphed(batch.clone().to(CUDA), **kwargs)
        b = model(batch.clone().to(CUDA), **kwargs)
    assert a.keys() == b.keys()
    # The same kernels, but scatter-adds on a GPU sum in a varying order: float32 outputs of
    # two plain calls already differ by ~1e-5 relative.
    single = a["energy"].dtype == torch.float32
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4 if single else 1e-10, atol=1e-5 if single else 1e-12)


@pytest.mark.parametrize("estimator", ["grad", "random"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_replays_equal_the_model_and_capture_once_per_shape(estimator, dtype):
    model = make_model(dtype, force_estimator=estimator, envelope=True, use_pbc=False, cutoff=6.0).to(CUDA).eval()
    graphed = GraphedSpinConv(model)
    ethanol = rattled_molecule()  # 9 atoms, all within the cutoff: every step has the same shape
    for step in range(4):
        _check_equal(graphed, model, to_batch([_moved(ethanol, step)], dtype), atom_energies=True)
    assert graphed.captures == 1
    _check_equal(graphed, model, to_batch([rattled_molecule("CH3COOH")], dtype), atom_energies=True)
    assert graphed.captures == 2  # a new shape


def test_stress_and_slabs_and_changed_weights():
    model = make_model(torch.float64, force_estimator="grad", envelope=True).to(CUDA).eval()
    graphed = GraphedSpinConv(model, max_graphs=1)
    crystal = distorted_crystal(1)
    _check_equal(graphed, model, to_batch([crystal, distorted_crystal(2)]), stress=True)
    _check_equal(graphed, model, to_batch([slab_with_adsorbate(0)]), atom_energies=True)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.01)  # an in-place change of the weights: captured again with them
    _check_equal(graphed, model, to_batch([slab_with_adsorbate(0)]), atom_energies=True)
    assert graphed.captures == 3


def test_calculator_md_with_graphs_follows_the_plain_trajectory():
    from ase import units
    from ase.md.verlet import VelocityVerlet

    from spinconv_train.calculators import ModelCalculator

    class RawOutputs:
        targets = TargetState()  # no normaliser; elements unknown
        def denormalize(self, out, batch):
            return out

    model = make_model(torch.float64, force_estimator="grad", envelope=True, use_pbc=False, cutoff=6.0,
                       sphere_interpolation="smooth").to(CUDA).eval()
    runs = []
    for wrapped in (model, GraphedSpinConv(model)):
        atoms = rattled_molecule()
        atoms.set_momenta(np.zeros((len(atoms), 3)))
        atoms.calc = ModelCalculator(wrapped, RawOutputs(), CUDA)
        VelocityVerlet(atoms, 0.1 * units.fs).run(20)
        runs.append(atoms.positions.copy())
    np.testing.assert_allclose(runs[1], runs[0], atol=1e-9)


def test_batched_predictions_of_one_molecule_reuse_one_graph_per_batch_size():
    from spinconv_train.calculators.predict import predict_atoms

    class RawOutputs:
        targets = TargetState()  # no normaliser; elements unknown
        def denormalize(self, out, batch):
            return out

    model = make_model(torch.float64, force_estimator="grad", envelope=True, use_pbc=False, cutoff=6.0).to(CUDA).eval()
    graphed = GraphedSpinConv(model)
    frames = [_moved(rattled_molecule(), seed) for seed in range(10)]  # an MD17-like test set
    plain = predict_atoms(model, RawOutputs(), frames, batch_size=4, device=CUDA)
    replayed = predict_atoms(graphed, RawOutputs(), frames, batch_size=4, device=CUDA)
    assert graphed.captures == 2  # batches of 4, 4 and 2 structures
    for a, b in zip(plain, replayed):
        assert abs(a["energy"] - b["energy"]) < 1e-10
        np.testing.assert_allclose(b["forces"], a["forces"], atol=1e-10)
        np.testing.assert_allclose(b["energies"], a["energies"], atol=1e-10)
