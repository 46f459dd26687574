"""Committees of models: mean predictions and their spread (calculator, MD log, scripts)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from ase.io import read, write
from models.spinconv_testkit import distorted_crystal, make_model, rattled_molecule
from trainers.trainer_testing import load_script, only_run_dir, tiny_config, write_config

from spinconv_train.calculators import CommitteeCalculator, ModelCalculator
from spinconv_train.calculators.committee import committee_statistics
from spinconv_train.md.dynamics import run_md
from spinconv_train.tasks.targets import TargetState


class _RawOutputs:
    targets = TargetState()  # no normaliser; elements unknown
    def denormalize(self, out, batch):
        return out


def _member(seed):
    torch.manual_seed(seed)
    return ModelCalculator(make_model(torch.float64, seed=seed, force_estimator="grad", envelope=True,
                                      cutoff=5.0, sphere_interpolation="smooth").eval(), _RawOutputs())


def test_statistics_by_hand():
    a = {"energy": 1.0, "forces": np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]), "stress": np.zeros(6)}
    b = {"energy": 3.0, "forces": np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), "stress": np.ones(6)}
    stats = committee_statistics([a, b])
    assert stats["energy"] == 2.0 and stats["energy_std"] == pytest.approx(np.sqrt(2.0))
    np.testing.assert_allclose(stats["forces"], [[0, 0, 0], [0.5, 0.5, 0]])
    # per atom: norm of the component std (each sqrt(0.5) for x and y)
    np.testing.assert_allclose(stats["forces_std"], [0.0, 1.0])
    assert stats["max_forces_std"] == pytest.approx(1.0)
    np.testing.assert_allclose(stats["stress_std"], np.full(6, np.sqrt(0.5)))
    with pytest.raises(ValueError, match="at least 2 members"):
        committee_statistics([a])


def test_committee_calculator_is_the_mean_of_its_members():
    atoms = distorted_crystal(seed=2)
    members = [_member(0), _member(1)]
    atoms.calc = CommitteeCalculator(members)
    energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    singles = []
    for member in members:
        copy = atoms.copy()
        copy.calc = member
        singles.append((copy.get_potential_energy(), copy.get_forces(), copy.get_stress()))
    assert energy == pytest.approx(np.mean([s[0] for s in singles]), abs=1e-12)
    np.testing.assert_allclose(forces, np.mean([s[1] for s in singles], axis=0), atol=1e-12)
    np.testing.assert_allclose(stress, np.mean([s[2] for s in singles], axis=0), atol=1e-12)
    assert atoms.calc.results["energy_std"] == pytest.approx(abs(singles[0][0] - singles[1][0]) / np.sqrt(2))
    assert atoms.calc.results["max_forces_std"] > 0
    same = atoms.copy()
    same.calc = CommitteeCalculator([_member(0), _member(0)])
    same.get_forces()
    assert same.calc.results["energy_std"] == 0.0 and same.calc.results["max_forces_std"] == 0.0


def test_md_with_a_committee_logs_the_spread_and_conserves_the_mean_energy():
    atoms = rattled_molecule("CH3CH2OH", seed=1)
    atoms.calc = CommitteeCalculator([_member(0), _member(1)])
    log = run_md(atoms, 8, 0.25, "nve", temperature_k=300.0, seed=0)
    assert len(log.max_forces_std) == 9 and np.all(np.asarray(log.max_forces_std) > 0)
    # the mean of energy-conserving force fields conserves the mean energy: the total drifts
    # by under 1% of the potential energy it exchanges with the kinetic one
    exchanged = max(log.potential) - min(log.potential)
    assert exchanged > 0.05 and log.max_energy_error() < 0.01 * exchanged


def test_md_stops_where_the_committee_disagrees():
    atoms = rattled_molecule("CH3CH2OH", seed=1)
    probe = atoms.copy()
    probe.calc = CommitteeCalculator([_member(0), _member(1)])
    log = run_md(probe, 12, 0.5, "nve", temperature_k=600.0, seed=0)
    spreads = np.asarray(log.max_forces_std)
    threshold = float(np.median(spreads[1:]))
    first = int(np.argmax(spreads > threshold))
    assert first > 0  # the run gets under way before it stops
    stopped = atoms.copy()
    stopped.calc = CommitteeCalculator([_member(0), _member(1)])
    log = run_md(stopped, 12, 0.5, "nve", temperature_k=600.0, seed=0, max_forces_std=threshold)
    assert log.stopped_at == first and log.steps[-1] == first and len(log.steps) == first + 1
    assert "max_forces_std" in log.stop_reason and stopped.calc.results["max_forces_std"] > threshold
    with pytest.raises(ValueError, match="max_forces_std needs a committee"):
        single = atoms.copy()
        single.calc = _member(0)
        run_md(single, 2, 0.5, max_forces_std=0.1)


@pytest.fixture(scope="module")
def two_checkpoints(force_checkpoint, s2ef_data, tmp_path_factory):
    from spinconv_train.launch.cli import main

    root = tmp_path_factory.mktemp("second")
    config = tiny_config({"train": s2ef_data["train"]}, max_steps=4, max_epochs=None)
    config["seed"] = 1
    path = write_config(root, config)
    assert main(["--mode", "train", "--config-yml", path, "--run-dir", str(root / "runs"), "--no-progress"]) == 0
    return [force_checkpoint, os.path.join(only_run_dir(root / "runs"), "checkpoint.pt")]


def test_scripts_take_several_checkpoints(two_checkpoints, tmp_path, capsys):
    structure = str(tmp_path / "slab.xyz")
    from trainers.trainer_testing import emt_frames

    frames = emt_frames(3, n=2)
    write(structure, frames)
    out = str(tmp_path / "pred.extxyz")
    evaluate = load_script("evaluate_structures")
    assert evaluate.main(["--checkpoint", *two_checkpoints, "--structures", structure, "--out", out]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["committee_members"] == 2 and summary["max_forces_std"] > 0
    singles = []
    for k, path in enumerate(two_checkpoints):
        single_out = str(tmp_path / f"single{k}.extxyz")
        assert evaluate.main(["--checkpoint", path, "--structures", structure, "--out", single_out]) == 0
        singles.append(read(single_out, index=":"))
    for i, atoms in enumerate(read(out, index=":")):
        energies = [s[i].info["spinconv_energy"] for s in singles]
        assert atoms.info["spinconv_energy"] == pytest.approx(np.mean(energies), abs=1e-9)
        assert atoms.info["spinconv_energy_std"] == pytest.approx(np.std(energies, ddof=1), abs=1e-9)
        assert atoms.arrays["spinconv_forces_std"].shape == (len(atoms),)
    capsys.readouterr()
    md = load_script("run_md")
    assert md.main(["--checkpoint", *two_checkpoints, "--structure", structure, "--steps", "3",
                    "--output-dir", str(tmp_path / "md")]) == 0
    md_summary = json.loads((tmp_path / "md" / "summary.json").read_text())
    assert md_summary["committee_members"] == 2 and md_summary["max_forces_std_ev_a"] > 0
    rows = (tmp_path / "md" / "md.csv").read_text().splitlines()
    assert rows[0].endswith("max_forces_std_ev_a") and all(float(r.split(",")[-1]) > 0 for r in rows[1:])
    assert md.main(["--checkpoint", *two_checkpoints, "--structure", structure, "--steps", "3",
                    "--max-force-std", "1e-9", "--output-dir", str(tmp_path / "stop")]) == 0
    stop_summary = json.loads((tmp_path / "stop" / "summary.json").read_text())
    assert stop_summary["stopped_at_step"] == 0 and "max_forces_std" in stop_summary["stop_reason"]
    assert read(str(tmp_path / "stop" / "uncertain.extxyz")).info["md_step"] == 0


def test_select_uncertain_writes_the_frames_with_the_largest_spread(two_checkpoints, tmp_path, capsys):
    from trainers.trainer_testing import emt_frames

    structure = str(tmp_path / "pool.xyz")
    write(structure, emt_frames(5, n=4))
    evaluate = load_script("evaluate_structures")
    picked = str(tmp_path / "to_label.extxyz")
    assert evaluate.main(["--checkpoint", *two_checkpoints, "--structures", structure, "--out",
                          str(tmp_path / "all.extxyz"), "--select-uncertain", "2", picked]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    everything = read(str(tmp_path / "all.extxyz"), index=":")
    spreads = [float(a.arrays["spinconv_forces_std"].max()) for a in everything]
    expected = sorted(range(len(spreads)), key=lambda k: -spreads[k])[:2]
    assert summary["selected"]["frames"] == expected
    chosen = read(picked, index=":")
    assert len(chosen) == 2
    for atoms, k in zip(chosen, expected):
        np.testing.assert_allclose(atoms.positions, everything[k].positions)
    with pytest.raises(SystemExit):  # one model has no spread to rank by
        evaluate.main(["--checkpoint", two_checkpoints[0], "--structures", structure, "--out",
                       str(tmp_path / "x.extxyz"), "--select-uncertain", "2", picked])
    assert "two or more --checkpoint" in capsys.readouterr().err
