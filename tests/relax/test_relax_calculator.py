"""The ASE calculator gives the model's energies and forces, in the units `predict` writes."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from trainers.trainer_testing import only_run_dir

from spinconv_train.calculators import ModelCalculator, load_force_model, record_to_atoms
from spinconv_train.datasets import LmdbDataset, collate
from spinconv_train.launch.cli import main


def test_calculator_matches_predict_mode(force_checkpoint, s2ef_data, tmp_path, torch_threads):
    """Energies and free-atom forces of `--mode predict` on the test split equal the
    calculator's on the same structures converted to ASE Atoms."""
    assert main(["--mode", "predict", "--checkpoint", force_checkpoint, "--run-dir", str(tmp_path),
                 "--no-progress"]) == 0
    predicted = np.load(os.path.join(only_run_dir(tmp_path), "predictions.npz"))
    calc = ModelCalculator.from_checkpoint(force_checkpoint)
    dataset = LmdbDataset({"src": s2ef_data["test"]})
    offsets = np.concatenate([[0], np.cumsum(predicted["natoms"])])
    assert len(predicted["energy"]) == len(dataset) == 4
    for k in range(len(dataset)):
        record = dataset[k]
        atoms = record_to_atoms(record)
        atoms.calc = calc
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces(apply_constraint=False)
        free = record.fixed.numpy() == 0
        assert energy == pytest.approx(float(predicted["energy"][k]), abs=1e-4)
        np.testing.assert_allclose(forces[free], predicted["forces"][offsets[k]:offsets[k + 1]], atol=1e-5)
        # FixAtoms zeroes the fixed atoms' forces seen by optimisers; free ones are untouched.
        constrained = atoms.get_forces()
        assert np.all(constrained[~free] == 0) and np.array_equal(constrained[free], forces[free])


def test_calculator_equals_model_outputs_denormalised(force_checkpoint, s2ef_data, torch_threads):
    """Calculator results = normaliser.denorm(model(batch)) (+ references), computed by hand."""
    model, task = load_force_model(force_checkpoint, torch.device("cpu"))
    norm = task.targets.normalizer
    assert float(norm.std) != 1.0 and float(norm.mean) != 0.0  # a fitted, non-trivial normaliser
    record = LmdbDataset({"src": s2ef_data["train"]})[3]
    with torch.no_grad():
        out = model(collate([record]))
    expected_energy = float(out["energy"].detach()[0]) * float(norm.std) + float(norm.mean)
    expected_forces = out["forces"].detach().double().numpy() * norm.force_std
    atoms = record_to_atoms(record)
    atoms.calc = ModelCalculator(model, task)
    assert atoms.get_potential_energy() == pytest.approx(expected_energy, rel=1e-6, abs=1e-5)
    np.testing.assert_allclose(atoms.get_forces(apply_constraint=False), expected_forces, atol=1e-5)


def test_calculator_forces_are_minus_energy_gradient(force_checkpoint, s2ef_data, torch_threads):
    """SchNet forces are -dE/dx; after denormalising, the calculator's forces must still be
    the derivative of its energy (force_std and std consistent): central differences."""
    calc = ModelCalculator.from_checkpoint(force_checkpoint)
    atoms = record_to_atoms(LmdbDataset({"src": s2ef_data["train"]})[0])
    atoms.calc = calc
    forces = atoms.get_forces(apply_constraint=False)
    h = 5e-3
    for atom, axis in [(len(atoms) - 1, 2), (len(atoms) - 2, 0), (5, 1)]:
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.calc = calc
            moved.positions[atom, axis] += sign * h
            energies.append(moved.get_potential_energy())
        numeric = -(energies[0] - energies[1]) / (2 * h)
        assert numeric == pytest.approx(forces[atom, axis], abs=3e-3 + 0.02 * abs(forces[atom, axis]))
    assert calc.evaluations == 7
