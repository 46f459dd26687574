"""Batched predictions on ASE structures (relax/evaluate.py, scripts/evaluate_structures.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write
from models.spinconv_testkit import distorted_crystal, make_model, rattled_molecule, slab_with_adsorbate
from trainers.trainer_testing import load_script

from spinconv_train.calculators import ModelCalculator
from spinconv_train.calculators.calculator import load_force_model
from spinconv_train.calculators.predict import error_summary, predict_atoms
from spinconv_train.datasets import DatasetError
from spinconv_train.tasks.targets import TargetState


class _RawOutputs:
    """A task whose model outputs are already in eV, eV/Å and eV/Å^3."""
    targets = TargetState()  # no normaliser; elements unknown

    def denormalize(self, out, batch):
        return out


def test_batched_predictions_equal_the_calculator_one_by_one():
    torch.manual_seed(0)
    model = make_model(torch.float64, force_estimator="grad", envelope=True, cutoff=5.0).eval()
    frames = [distorted_crystal(seed=s) for s in (1, 2, 3)]
    batched = predict_atoms(model, _RawOutputs(), frames, batch_size=2, stress=True)
    for atoms, pred in zip(frames, batched):
        single = atoms.copy()
        single.calc = ModelCalculator(model, _RawOutputs())
        assert pred["energy"] == pytest.approx(single.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(pred["forces"], single.get_forces(apply_constraint=False), atol=1e-9)
        np.testing.assert_allclose(pred["stress"], single.get_stress(), atol=1e-9)


def test_stress_needs_periodic_frames():
    model = make_model(torch.float64, force_estimator="grad").eval()
    with pytest.raises(DatasetError, match="record 1, field 'cell': stress needs a periodic cell"):
        predict_atoms(model, _RawOutputs(), [distorted_crystal(1), rattled_molecule()], stress=True)


def test_error_summary_counts_only_labelled_frames():
    frames = [rattled_molecule(seed=s) for s in range(3)]
    preds = [{"energy": np.float64(1.0 + k), "forces": np.full((len(a), 3), 0.5)} for k, a in enumerate(frames)]
    frames[0].calc = SinglePointCalculator(frames[0], energy=1.5, forces=np.zeros((len(frames[0]), 3)))
    frames[1].calc = SinglePointCalculator(frames[1], energy=1.0)
    summary = error_summary(frames, preds)
    assert summary["frames"] == 3 and summary["energy_frames"] == 2 and summary["forces_frames"] == 1
    assert summary["energy_mae"] == pytest.approx((0.5 + 1.0) / 2)
    assert summary["energy_rmse"] == pytest.approx(np.sqrt((0.25 + 1.0) / 2))
    assert summary["energy_per_atom_mae"] == pytest.approx((0.5 + 1.0) / 2 / len(frames[0]))
    assert summary["forces_mae"] == pytest.approx(0.5) and "stress_mae" not in summary


def test_script_writes_predictions_and_errors(force_checkpoint, tmp_path, capsys):
    frames = [slab_with_adsorbate(seed=s, adsorbate="O") for s in range(3)] + [rattled_molecule()]
    from ase.calculators.emt import EMT
    for atoms in frames[:3]:  # EMT labels on the slabs; the molecule stays unlabelled
        atoms.calc = EMT()
        atoms.calc = SinglePointCalculator(atoms, energy=atoms.get_potential_energy(),
                                           forces=atoms.get_forces(apply_constraint=False))
    source = str(tmp_path / "in.extxyz")
    write(source, frames)
    out = str(tmp_path / "out" / "pred.extxyz")
    script = load_script("evaluate_structures")
    assert script.main(["--checkpoint", force_checkpoint, "--structures", source, "--out", out,
                        "--batch-size", "3"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    written = read(out, index=":")
    assert len(written) == 4 and summary["frames"] == 4 and summary["forces_frames"] == 3
    model, task = load_force_model(force_checkpoint, torch.device("cpu"))
    energy_errors, force_errors = [], []
    for atoms, original in zip(written, frames):
        single = original.copy()
        single.calc = ModelCalculator(model, task)
        assert atoms.info["spinconv_energy"] == pytest.approx(single.get_potential_energy(), abs=1e-4)
        np.testing.assert_allclose(atoms.arrays["spinconv_forces"], single.get_forces(apply_constraint=False),
                                   atol=1e-4)
        if original.calc is not None:  # labels kept in the output
            assert atoms.get_potential_energy() == pytest.approx(original.get_potential_energy())
            energy_errors.append(atoms.info["spinconv_energy"] - atoms.get_potential_energy())
            force_errors.append(atoms.arrays["spinconv_forces"] - atoms.get_forces(apply_constraint=False))
    assert summary["energy_mae"] == pytest.approx(np.mean(np.abs(energy_errors)), rel=1e-6)
    assert summary["forces_mae"] == pytest.approx(np.mean(np.abs(np.concatenate(force_errors))), rel=1e-5)


def test_forces_mae_is_the_same_number_as_validate(force_checkpoint, tmp_path, capsys):
    """One definition: spinconv-evaluate's forces_mae is --mode validate's (free atoms, as OC20
    scores it) for the same checkpoint and frames; the all-atoms mean has its own name."""
    import os

    from trainers.trainer_testing import emt_frames, only_run_dir

    from spinconv_train.launch.cli import main as train_main

    frames = emt_frames(7, n=5)  # Cu slabs + O, the bottom layer fixed by FixAtoms
    assert all(len(a.constraints[0].get_indices()) == 4 for a in frames)
    source = str(tmp_path / "frames.extxyz")
    write(source, frames)
    script = load_script("evaluate_structures")
    assert script.main(["--checkpoint", force_checkpoint, "--structures", source,
                        "--out", str(tmp_path / "pred.extxyz")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert train_main(["--mode", "validate", "--checkpoint", force_checkpoint, "--run-dir", str(tmp_path / "v"),
                       "--no-progress", f"--dataset.val.src={source}", "--dataset.val.name=ase"]) == 0
    with open(os.path.join(only_run_dir(tmp_path / "v"), "validate_metrics.json")) as handle:
        validated = json.load(handle)
    for name in ("forces_mae", "forces_rmse", "energy_mae", "energy_rmse", "energy_per_atom_mae"):
        assert summary[name] == pytest.approx(validated[name], rel=1e-5), name
    written = read(str(tmp_path / "pred.extxyz"), index=":")
    errors = np.stack([a.arrays["spinconv_forces"] - a.get_forces(apply_constraint=False) for a in written])
    free = np.stack([np.isin(np.arange(len(a)), a.constraints[0].get_indices(), invert=True) for a in written])
    assert summary["forces_mae"] == pytest.approx(np.abs(errors[free]).mean(), rel=1e-6)
    assert summary["forces_mae_all_atoms"] == pytest.approx(np.abs(errors).mean(), rel=1e-6)
    assert summary["forces_rmse_all_atoms"] == pytest.approx(np.sqrt((errors ** 2).mean()), rel=1e-6)
    assert summary["forces_free_atoms"] == 5 * 9 and summary["forces_mae"] != summary["forces_mae_all_atoms"]
    assert sum(v["atoms"] for v in summary["forces_by_element"].values()) == 5 * 9


def test_script_errors_are_named(force_checkpoint, tmp_path, capsys):
    script = load_script("evaluate_structures")
    out = str(tmp_path / "pred.extxyz")
    assert script.main(["--checkpoint", force_checkpoint, "--structures", str(tmp_path / "missing.xyz"),
                        "--out", out]) == 2
    assert "missing.xyz: input file not found" in capsys.readouterr().err
    write(tmp_path / "m.xyz", rattled_molecule())
    assert script.main(["--checkpoint", force_checkpoint, "--structures", str(tmp_path / "m.xyz"), "--out", out,
                        "--stress"]) == 2
    assert "stress needs an energy-centric SpinConv" in capsys.readouterr().err
    assert not (tmp_path / "pred.extxyz").exists()


def test_atoms_to_batch_is_the_batch_the_predictions_use():
    from spinconv_train.calculators import atoms_to_batch

    torch.manual_seed(0)
    model = make_model(torch.float64, force_estimator="grad", envelope=True).eval()
    atoms = slab_with_adsorbate(2)
    batch = atoms_to_batch(atoms, torch.device("cpu"), torch.float64)
    assert batch.pos.dtype == torch.float64 and np.array_equal(batch.pos.numpy(), atoms.positions)
    assert batch.natoms.tolist() == [len(atoms)] and batch.batch.tolist() == [0] * len(atoms)
    with torch.no_grad():
        out = model(batch)
    (pred,) = predict_atoms(model, _RawOutputs(), [atoms], batch_size=1)
    assert float(out["energy"]) == pytest.approx(pred["energy"], abs=1e-12)
    np.testing.assert_allclose(out["forces"].numpy(), pred["forces"], atol=1e-12)


def test_force_errors_by_element_match_numpy():
    frames = [rattled_molecule(seed=s) for s in range(2)]  # ethanol: C, O, H
    rng = np.random.default_rng(0)
    preds, errors = [], {}
    for atoms in frames:
        labels = rng.normal(size=(len(atoms), 3))
        atoms.calc = SinglePointCalculator(atoms, forces=labels)
        predicted = labels + rng.normal(scale=0.1, size=labels.shape)
        preds.append({"energy": np.float64(0.0), "forces": predicted})
        for symbol, row in zip(atoms.get_chemical_symbols(), predicted - labels):
            errors.setdefault(symbol, []).append(row)
    by_element = error_summary(frames, preds)["forces_by_element"]
    assert sorted(by_element) == ["C", "H", "O"]
    for symbol, rows in errors.items():
        rows = np.array(rows)
        assert by_element[symbol]["atoms"] == len(rows)
        assert by_element[symbol]["mae"] == pytest.approx(np.abs(rows).mean())
        assert by_element[symbol]["rmse"] == pytest.approx(np.sqrt((rows ** 2).mean()))


def test_cuda_graphs_flag_needs_a_cuda_device(force_checkpoint, tmp_path, capsys):
    script = load_script("evaluate_structures")
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--checkpoint", force_checkpoint, "--structures", "x.extxyz", "--out", "y.extxyz",
                     "--cuda-graphs"])
    assert exit_info.value.code == 2 and "--cuda-graphs needs a CUDA --device" in capsys.readouterr().err
