"""`main.py --mode run-relaxations` end to end on tiny EMT data, after a short training."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from ase.io import read
from trainers.trainer_testing import only_run_dir, tiny_config, write_config

from spinconv_train.datasets import LmdbDataset
from spinconv_train.launch.cli import main


def _relax_config(s2ef_data, is2re_src, **relax_opt):
    config = tiny_config({"train": s2ef_data["train"]}, max_steps=4, max_epochs=None)
    config["task"].update({"relax_dataset": {"src": is2re_src},
                           "relax_opt": dict({"name": "lbfgs", "fmax": 0.05, "steps": 5, "maxstep": 0.04}, **relax_opt),
                           "write_trajectories": True})
    return config


def test_run_relaxations_writes_outputs(force_checkpoint, s2ef_data, is2re_data, tmp_path, capsys):
    path = write_config(tmp_path, _relax_config(s2ef_data, is2re_data["val"]))
    assert main(["--mode", "run-relaxations", "--config-yml", path, "--checkpoint", force_checkpoint,
                 "--run-dir", str(tmp_path / "runs"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "relaxation metrics" in out and "average_distance_within_threshold" in out
    run = only_run_dir(tmp_path / "runs")
    assert run.endswith("-run-relaxations")
    dataset = LmdbDataset({"src": is2re_data["val"]})
    with np.load(os.path.join(run, "relaxations.npz")) as npz:
        arrays = {key: npz[key] for key in npz.files}
    records = [dataset[i] for i in range(len(dataset))]
    assert arrays["sid"].tolist() == [int(r.sid) for r in records] == [1000, 1001, 1002, 1003]
    assert arrays["natoms"].tolist() == [int(r.natoms) for r in records]
    assert arrays["positions"].shape == (sum(arrays["natoms"]), 3) and arrays["positions"].dtype == np.float32
    assert arrays["energy"].shape == (4,) and np.isfinite(arrays["energy"]).all()
    assert ((arrays["steps"] >= 1) & (arrays["steps"] <= 5)).all()
    assert arrays["converged"].dtype == bool
    assert (arrays["converged"] == (arrays["fmax"] < 0.05)).all()
    offsets = np.concatenate([[0], np.cumsum(arrays["natoms"])])
    moved = 0.0
    for k, record in enumerate(records):
        relaxed = arrays["positions"][offsets[k]:offsets[k + 1]]
        initial = record.pos.numpy()
        fixed = record.fixed.numpy() != 0
        np.testing.assert_array_equal(relaxed[fixed], initial[fixed])  # fixed atoms never move
        moved = max(moved, float(np.abs(relaxed[~fixed] - initial[~fixed]).max()))
        frames = read(os.path.join(run, "trajectories", f"{int(record.sid)}.traj"), index=":")
        assert len(frames) == arrays["steps"][k] + 1  # the initial frame and one per step
        np.testing.assert_allclose(frames[-1].positions, relaxed, atol=1e-5)
        assert frames[-1].get_potential_energy() == arrays["energy"][k]
    assert 0 < moved <= 5 * 0.04 + 1e-5  # at most maxstep per step
    structures = read(os.path.join(run, "relaxed.extxyz"), index=":")
    assert [str(a.info["sid"]) for a in structures] == [str(int(r.sid)) for r in records]
    for k, (atoms, record) in enumerate(zip(structures, records)):
        np.testing.assert_allclose(atoms.positions, arrays["positions"][offsets[k]:offsets[k + 1]], atol=1e-5)
        assert atoms.get_atomic_numbers().tolist() == record.atomic_numbers.long().tolist()
        assert atoms.get_potential_energy() == pytest.approx(arrays["energy"][k]) and atoms.info["steps"] == arrays["steps"][k]
        assert len(atoms.constraints) == (1 if (record.fixed != 0).any() else 0)  # fixed atoms kept
    with open(os.path.join(run, "relaxation_metrics.json")) as handle:
        metrics = json.load(handle)
    # The fixture's pos_relaxed are its initial positions: the unrelaxed baseline scores 1.
    assert metrics["average_distance_within_threshold_initial"] == 1.0
    assert 0.0 <= metrics["average_distance_within_threshold"] <= 1.0
    y_relaxed = np.array([float(r.y_relaxed) for r in records])
    assert metrics["energy_mae"] == np.abs(arrays["energy"] - y_relaxed).mean()
    assert metrics["steps_mean"] == arrays["steps"].mean()
    assert not [name for name in os.listdir(run) if name.startswith(".tmp")]
    with np.load(os.path.join(run, "relaxed_positions.npz")) as npz:  # the reference's submission layout
        assert sorted(npz.files) == ["chunk_idx", "ids", "pos"]
        chunks = np.split(npz["pos"], npz["chunk_idx"])
        assert npz["ids"].tolist() == ["1000", "1001", "1002", "1003"]
    assert [len(c) for c in chunks] == arrays["natoms"].tolist()
    np.testing.assert_array_equal(np.concatenate(chunks), arrays["positions"])


def test_run_relaxations_from_checkpoint_config_with_overrides(force_checkpoint, is2re_data, tmp_path):
    """Without --config-yml the checkpoint's config is used; the dataset comes as an override."""
    assert main(["--mode", "run-relaxations", "--checkpoint", force_checkpoint, "--run-dir", str(tmp_path),
                 "--no-progress", f"--task.relax_dataset.src={is2re_data['train']}",
                 "--task.relax_opt.name=fire", "--task.relax_opt.steps=2", "--task.write_relaxed_structures=false"]) == 0
    run = only_run_dir(tmp_path)
    with np.load(os.path.join(run, "relaxations.npz")) as npz:
        assert len(npz["sid"]) == 8 and (npz["steps"] <= 2).all()
    assert not os.path.exists(os.path.join(run, "trajectories"))
    assert not os.path.exists(os.path.join(run, "relaxed.extxyz"))  # switched off


def test_run_relaxations_on_ase_files(force_checkpoint, tmp_path):
    """Any checkpoint relaxes the structures of an extxyz file through the ase dataset."""
    from ase.io import write
    from trainers.trainer_testing import emt_frames

    frames = emt_frames(5, n=3, labelled=False)
    source = str(tmp_path / "to_relax.extxyz")
    write(source, frames)
    assert main(["--mode", "run-relaxations", "--checkpoint", force_checkpoint, "--run-dir", str(tmp_path / "runs"),
                 "--no-progress", "--task.relax_dataset.name=ase", f"--task.relax_dataset.src={source}",
                 "--task.relax_dataset.energy=false", "--task.relax_dataset.forces=false",
                 "--task.relax_opt.steps=3"]) == 0
    with np.load(os.path.join(only_run_dir(tmp_path / "runs"), "relaxations.npz")) as npz:
        assert npz["natoms"].tolist() == [len(a) for a in frames]
        assert ((npz["steps"] >= 1) & (npz["steps"] <= 3)).all()
        positions = np.split(npz["positions"], np.cumsum(npz["natoms"])[:-1])
    for atoms, relaxed in zip(frames, positions):
        fixed = atoms.constraints[0].get_indices()
        np.testing.assert_allclose(relaxed[fixed], atoms.positions[fixed], atol=1e-5)  # float32 round trip
