"""Per-atom energies: the energy head's terms, in the model, the task and the calculator."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from models.spinconv_testkit import distorted_crystal, make_model, random_rotation, rattled_molecule, to_batch

from spinconv_train.calculators import ModelCalculator
from spinconv_train.calculators.predict import predict_atoms
from spinconv_train.config import SCHEMA
from spinconv_train.tasks.element_references import ElementReferences
from spinconv_train.tasks.forces import ForcesTask
from spinconv_train.tasks.normalizer import Normalizer
from spinconv_train.tasks.targets import TargetState


def _task(refs=True):
    task = {k: v[1] for k, v in SCHEMA["task"].items()}
    optim = {k: v[1] for k, v in SCHEMA["optim"].items()}
    references = ElementReferences(torch.linspace(-1.0, -3.0, 90)) if refs else None
    return ForcesTask(task, optim, TargetState(Normalizer(-0.75, 2.5), references))


@pytest.mark.parametrize("estimator", ["grad", "direct"])
def test_atom_energies_sum_to_the_energy_and_are_invariant(estimator):
    model = make_model(torch.float64, force_estimator=estimator).eval()
    structures = [rattled_molecule(seed=0), distorted_crystal(seed=1)]
    batch = to_batch(structures)
    with torch.no_grad():
        plain = model(batch.clone())
        out = model(batch.clone(), atom_energies=True)
    per_structure = torch.zeros(2, dtype=torch.float64).index_add_(0, batch.batch, out["atom_energies"])
    torch.testing.assert_close(per_structure, out["energy"], rtol=0, atol=1e-12)
    torch.testing.assert_close(out["energy"], plain["energy"], rtol=0, atol=0)
    assert out["atom_energies"].std() > 1e-3  # not a constant split
    # rotating the molecule leaves each atom's energy; permuting its atoms permutes them
    rotated = structures[0].copy()
    rotated.positions = rotated.positions @ random_rotation(3).numpy().T
    perm = np.random.default_rng(0).permutation(len(rotated))
    rotated = rotated[perm]
    with torch.no_grad():
        moved = model(to_batch([rotated]), atom_energies=True)["atom_energies"]
    n = len(structures[0])
    torch.testing.assert_close(moved, out["atom_energies"][:n][torch.as_tensor(perm)], rtol=0, atol=1e-9)


def test_denormalised_atom_energies_sum_to_the_denormalised_energy():
    model = make_model(torch.float64, force_estimator="grad").eval()
    batch = to_batch([rattled_molecule(seed=2), distorted_crystal(seed=3)])
    task = _task()
    with torch.no_grad():
        pred = task.denormalize(model(batch.clone(), atom_energies=True), batch)
    sums = torch.zeros(2, dtype=torch.float64).index_add_(0, batch.batch, pred["atom_energies"])
    torch.testing.assert_close(sums, pred["energy"], rtol=0, atol=1e-10)


def test_calculator_and_batched_predictions_give_per_atom_energies():
    model = make_model(torch.float64, force_estimator="grad").eval()
    task = _task()
    frames = [distorted_crystal(seed=4), rattled_molecule(seed=5)]
    batched = predict_atoms(model, task, frames, batch_size=2)
    for atoms, pred in zip(frames, batched):
        atoms.calc = ModelCalculator(model, task)
        energies = atoms.get_potential_energies()
        assert energies.shape == (len(atoms),)
        assert energies.sum() == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(pred["energies"], energies, atol=1e-9)
