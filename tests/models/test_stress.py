"""Stress of the energy-centric model: the strain derivative of the energy, checked against
ASE's finite-difference stress through the calculator (normaliser included), rotated with
the structure, and refused where it is not defined."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_stress
from spinconv_testkit import distorted_crystal, make_model, random_rotation, rattled_molecule, to_batch, to_data
from torch_geometric.data import Batch

from spinconv_train.calculators import ModelCalculator
from spinconv_train.tasks.forces import ForcesTask
from spinconv_train.tasks.normalizer import Normalizer
from spinconv_train.tasks.targets import TargetState

FORCES_TASK = {"train_on_free_atoms": True, "eval_on_free_atoms": True}
FORCES_OPTIM = {"loss_energy": "mae", "loss_force": "mae", "energy_coefficient": 1, "force_coefficient": 1}


def _smooth_model(**kw):
    return make_model(force_estimator="grad", envelope=True, sphere_interpolation="smooth", cutoff=4.0, **kw)


def _calculator(model, std: float = 1.0, mean: float = 0.0) -> ModelCalculator:
    task = ForcesTask(FORCES_TASK, FORCES_OPTIM, TargetState(Normalizer(mean, std)))
    return ModelCalculator(model, task)


def test_stress_matches_finite_differences_of_the_energy():
    """ASE strains the cell by +-d in each Voigt component and differentiates the
    calculator's energy; the normaliser's std (2.5 eV here) scales both."""
    atoms = distorted_crystal()
    atoms.calc = _calculator(_smooth_model(), std=2.5, mean=-3.0)
    stress = atoms.get_stress()
    numerical = calculate_numerical_stress(atoms, eps=1e-5)
    scale = float(np.abs(stress).max())
    assert scale > 1e-2  # meaningful only if the stress is not ~0
    assert np.abs(stress - numerical).max() <= 1e-6 * scale, (stress, numerical)


def test_stress_is_symmetric_and_rotates_with_the_structure():
    model = _smooth_model()
    atoms = distorted_crystal(seed=3)
    out = model(to_batch([atoms]), stress=True)
    sigma = out["stress"].detach()[0]
    assert torch.allclose(sigma, sigma.T, atol=1e-12)
    rot = random_rotation(4)
    turned = atoms.copy()
    turned.positions = atoms.positions @ rot.numpy().T
    turned.set_cell(atoms.cell.array @ rot.numpy().T, scale_atoms=False)
    sigma_turned = model(to_batch([turned]), stress=True)["stress"].detach()[0]
    assert torch.allclose(sigma_turned, rot @ sigma @ rot.T, atol=1e-9 * float(sigma.abs().max()))
    # forces are unchanged by asking for the stress
    assert torch.allclose(model(to_batch([atoms]))["forces"], out["forces"], atol=1e-12)


def test_stress_with_a_precomputed_graph_equals_the_on_the_fly_one():
    """Records with a stored graph (``otf_graph: false``): the stored cell offsets are
    combined with the strained cell, so the stress is the same."""
    from spinconv_train.datasets.transforms import RadiusGraph

    atoms = distorted_crystal(seed=2)
    otf = _smooth_model()
    stored = _smooth_model(otf_graph=False)
    batch = to_batch([atoms])
    with_graph = Batch.from_data_list([RadiusGraph(4.0, 100)(to_data(atoms))])
    a = otf(batch, stress=True)["stress"].detach()
    b = stored(with_graph, stress=True)["stress"].detach()
    assert float(a.abs().max()) > 1e-2 and torch.allclose(a, b, atol=1e-10)


def test_stress_is_differentiable_in_the_weights_in_training():
    """Training on stresses needs d(stress)/d(weights): the strain gradient is built with
    create_graph in training mode."""
    model = _smooth_model()
    model.train()
    out = model(to_batch([distorted_crystal()]), stress=True)
    assert out["stress"].requires_grad
    out["stress"].square().sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_cell_relaxation_lowers_energy_and_stress():
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    atoms = distorted_crystal()
    atoms.calc = _calculator(_smooth_model())
    before_e, before_s = atoms.get_potential_energy(), np.abs(atoms.get_stress()).max()
    BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=1e-3, steps=15)
    assert atoms.get_potential_energy() < before_e
    assert np.abs(atoms.get_stress()).max() < 0.5 * before_s


def test_stress_is_refused_where_undefined():
    atoms = distorted_crystal()
    with pytest.raises(ValueError, match="force_estimator"):
        make_model(force_estimator="direct")(to_batch([atoms]), stress=True)
    molecule = rattled_molecule("CH3CH2OH")
    with pytest.raises(ValueError, match="volume"):
        _smooth_model()(to_batch([molecule]), stress=True)
    atoms.calc = _calculator(make_model(force_estimator="direct"))
    with pytest.raises(PropertyNotImplementedError, match="stress"):
        atoms.get_stress()
