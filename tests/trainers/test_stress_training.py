"""Training on stresses: ASE frames with stored stresses -> LMDB (``--stress``) -> the forces
trainer with ``optim.stress_coefficient`` -> ``stress_mae`` and predicted stresses."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.build import molecule as build_molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from ase.stress import voigt_6_to_full_3x3_stress
from trainers.trainer_testing import ROOT, load_script, only_run_dir, read_jsonl, write_config

from spinconv_train.datasets import DatasetError, LmdbDataset
from spinconv_train.datasets.preprocess import preprocess_ef
from spinconv_train.launch.cli import main

TINY_SPINCONV = {"name": "spinconv", "hidden_channels": 8, "mid_hidden_channels": 16, "num_interactions": 1,
                 "num_basis_functions": 16, "sphere_size_lat": 5, "sphere_size_long": 6, "cutoff": 4.0,
                 "max_num_neighbors": 30, "embedding_size": 8, "otf_graph": True, "use_pbc": True,
                 "force_estimator": "grad", "envelope": True, "sphere_interpolation": "smooth"}


def _strained_crystals(n: int, seed: int):
    """Rattled, randomly strained 4-atom Cu cells with EMT energies, forces and stresses."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        strain = np.eye(3) + rng.normal(0.0, 0.03, (3, 3))
        atoms.set_cell(atoms.cell.array @ (0.5 * (strain + strain.T)), scale_atoms=True)
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        atoms.calc = EMT()
        results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(),
                   "stress": atoms.get_stress()}
        atoms.calc = SinglePointCalculator(atoms, **results)
        frames.append(atoms)
    return frames


@pytest.fixture(scope="module")
def stress_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("stress")
    paths = {}
    for split, (n, seed) in {"train": (12, 0), "val": (4, 1)}.items():
        source = str(root / f"{split}.extxyz")
        write(source, _strained_crystals(n, seed))
        preprocess_ef([source], str(root / split), stress=True, progress=False)
        paths[split] = str(root / split)
    return root, paths


def test_preprocessing_keeps_the_stress(stress_data, tmp_path):
    root, paths = stress_data
    frames = _strained_crystals(12, 0)
    record = LmdbDataset({"src": paths["train"]})[3]
    expected = voigt_6_to_full_3x3_stress(frames[3].calc.results["stress"])
    assert record.stress.shape == (1, 3, 3)
    assert np.allclose(record.stress[0].numpy(), expected, atol=1e-6)
    molecule = tmp_path / "molecule.extxyz"
    mol = build_molecule("H2O")
    mol.calc = SinglePointCalculator(mol, energy=0.0, forces=np.zeros((3, 3)))
    write(str(molecule), [mol])
    with pytest.raises(DatasetError, match="stress"):
        preprocess_ef([str(molecule)], str(tmp_path / "out"), stress=True, progress=False)
    # the ase dataset reads the same stresses from the source file
    from spinconv_train.datasets import AseDataset

    direct = AseDataset({"src": str(root / "train.extxyz"), "stress": True})
    assert torch.equal(direct[3].stress, record.stress)
    with pytest.raises(DatasetError, match="molecule.extxyz, record 0, field 'stress'"):
        AseDataset({"src": str(molecule), "stress": True})


def _config(paths, **optim):
    base_optim = {"batch_size": 4, "eval_batch_size": 4, "lr_initial": 1e-2, "max_epochs": None, "max_steps": 60,
                  "eval_every": 60, "optimizer": "Adam", "energy_coefficient": 0.0, "force_coefficient": 0.0,
                  "stress_coefficient": 100.0, "loss_stress": "mse"}
    base_optim.update(optim)
    return {"trainer": "forces", "seed": 0,
            "dataset": {"train": {"src": paths["train"]}, "val": {"src": paths["val"]}},
            "task": {"dataset": "lmdb", "metric": "stress_mae"}, "model": dict(TINY_SPINCONV), "optim": base_optim,
            "logger": {"backends": [], "print_every": 10, "progress_bar": False}}


@pytest.fixture(scope="module")
def stress_run(stress_data, tmp_path_factory):
    """A tiny energy-centric SpinConv trained on the stresses alone: (run dir, val rows)."""
    _, paths = stress_data
    root = tmp_path_factory.mktemp("stress_run")
    runs = root / "runs"
    assert main(["--mode", "train", "--config-yml", write_config(root, _config(paths)), "--run-dir", str(runs),
                 "--no-progress"]) == 0
    run = only_run_dir(runs)
    return run, read_jsonl(run, "val")


def test_training_on_stress_lowers_the_stress_error_and_predicts_it(stress_data, stress_run, tmp_path):
    """Trained on the stress alone (energy and force coefficients 0) for 60 steps, the
    stress error falls (measured 0.0195 -> 0.0052 eV/Å^3), and the forces, never in the
    loss, are learned with it (0.44 -> 0.05 eV/Å): they derive from the same energy."""
    _, paths = stress_data
    run, rows = stress_run
    first, last = rows[0]["stress_mae"], rows[-1]["stress_mae"]
    assert np.isfinite(last) and last < 0.5 * first, (first, last)
    assert rows[-1]["forces_mae"] < 0.5 * rows[0]["forces_mae"]
    assert main(["--mode", "predict", "--checkpoint", os.path.join(run, "best_checkpoint.pt"),
                 "--run-dir", str(tmp_path / "pred"), "--dataset.test.src", paths["val"], "--no-progress"]) == 0
    predictions = np.load(os.path.join(only_run_dir(tmp_path / "pred"), "predictions.npz"))
    assert predictions["stress"].shape == (4, 3, 3)
    targets = np.stack([r.stress[0].numpy() for r in LmdbDataset({"src": paths["val"]})])
    assert np.abs(predictions["stress"] - targets).mean() == pytest.approx(last, rel=1e-3)


def test_relaxations_move_the_cell_with_relax_cell(stress_data, stress_run, tmp_path):
    """``task.relax_opt.relax_cell: true`` relaxes positions and cell (FrechetCellFilter)
    with the model's stress: the cells change and the model's stress on the relaxed
    structures is small; without it the cells stay as they were."""
    from spinconv_train.calculators import ModelCalculator, record_to_atoms

    _, paths = stress_data
    run, _ = stress_run
    checkpoint = os.path.join(run, "best_checkpoint.pt")
    cells = {}
    for relax_cell in (False, True):
        out = tmp_path / f"relax_{relax_cell}"
        assert main(["--mode", "run-relaxations", "--checkpoint", checkpoint, "--run-dir", str(out), "--no-progress",
                     f"--task.relax_dataset.src={paths['val']}", "--task.relax_opt.name=bfgs",
                     "--task.relax_opt.fmax=0.02", "--task.relax_opt.steps=100",
                     f"--task.relax_opt.relax_cell={str(relax_cell).lower()}"]) == 0
        cells[relax_cell] = np.load(os.path.join(only_run_dir(out), "relaxations.npz"))
    initial = np.stack([r.cell[0].numpy() for r in LmdbDataset({"src": paths["val"]})])
    assert np.allclose(cells[False]["cell"], initial, atol=1e-5)
    assert np.abs(cells[True]["cell"] - initial).max() > 0.01
    calculator = ModelCalculator.from_checkpoint(checkpoint)
    relaxed = cells[True]
    assert relaxed["converged"].all()
    starts = np.concatenate([[0], np.cumsum(relaxed["natoms"])])
    for i, record in enumerate(LmdbDataset({"src": paths["val"]})):
        atoms = record_to_atoms(record)
        atoms.calc = calculator
        before = np.abs(atoms.get_stress()).max() * atoms.get_volume()
        atoms.set_cell(relaxed["cell"][i])
        atoms.set_positions(relaxed["positions"][starts[i]:starts[i + 1]])
        after = np.abs(atoms.get_stress()).max() * atoms.get_volume()
        # the filter's cell "forces" are stress x volume / natoms (4): fmax 0.02 bounds them by 0.08
        assert after < 0.08 and after < 0.1 * before, (i, before, after)  # measured 1.05-4.6 -> 0.017-0.062


def test_npt_md_script_with_a_stress_model(stress_data, stress_run, tmp_path):
    """``scripts/run_md.py --ensemble npt`` end to end on a trained energy-centric model."""
    import json

    from ase.io import read

    from spinconv_train.calculators import record_to_atoms

    _, paths = stress_data
    run, _ = stress_run
    script = load_script("run_md")
    structure = str(tmp_path / "cell.extxyz")
    write(structure, record_to_atoms(LmdbDataset({"src": paths["val"]})[0]))
    out = tmp_path / "md"
    assert script.main(["--checkpoint", os.path.join(run, "best_checkpoint.pt"), "--structure", structure,
                        "--ensemble", "npt", "--steps", "6", "--interval", "2", "--timestep", "1.0",
                        "--pressure", "1000", "--output-dir", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model_caveats"] == []  # energy-centric, envelope, smooth, cap 30 > 18 neighbours
    assert summary["final_volume_a3"] > 0 and len(read(str(out / "md.traj"), index=":")) == 4
    rows = (out / "md.csv").read_text().splitlines()
    assert rows[0].endswith("volume_a3,pressure_bar,conserved_ev,max_forces_std_ev_a") and len(rows) == 5
    assert summary["mean_pressure_bar"] is not None and np.isfinite(summary["mean_pressure_bar"])


def test_stress_training_needs_records_with_stress(tmp_path, capsys):
    src = os.path.join(ROOT, "data", "oc20_mini", "s2ef", "val_id")
    config = _config({"train": src, "val": src})
    assert main(["--mode", "train", "--config-yml", write_config(tmp_path, config), "--run-dir", str(tmp_path / "r"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "dataset.train" in err and "'stress'" in err and "--stress" in err, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("change,match", [
    ({"model": {"force_estimator": "direct"}}, "does not compute the stress"),
    ({"trainer": "energy"}, "forces trainer"),
])
def test_stress_training_needs_an_energy_centric_model(stress_data, tmp_path, capsys, change, match):
    _, paths = stress_data
    config = _config(paths)
    for key, value in change.items():
        if isinstance(value, dict):
            config[key].update(value)
        else:
            config[key] = value
    config["task"].pop("metric")
    assert main(["--mode", "train", "--config-yml", write_config(tmp_path, config), "--run-dir", str(tmp_path / "r"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "optim.stress_coefficient" in err and match in err, err
