"""The `ase` dataset: ASE files read in memory, the same records as preprocess_ef + LmdbDataset."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from ase.io import write
from trainers.trainer_testing import emt_frames, only_run_dir, read_jsonl, tiny_config, write_ase_inputs, write_config

from spinconv_train.datasets import AseDataset, DatasetError, LmdbDataset, energies_and_counts
from spinconv_train.datasets.preprocess import preprocess_ef
from spinconv_train.launch.cli import main

FIELDS = ("pos", "cell", "atomic_numbers", "natoms", "tags", "fixed", "pbc", "force")


@pytest.fixture(scope="module")
def ase_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ase")
    write_ase_inputs(folder, frames_per_file=4)
    (folder / "notes.txt").write_text("not a structure file")
    return str(folder)


def test_records_equal_preprocessed_lmdb_records(ase_folder, tmp_path):
    ds = AseDataset({"src": ase_folder})
    files = [os.path.join(ase_folder, f"in{k}.{ext}") for k, ext in enumerate(("traj", "extxyz", "db"))]
    assert ds.files == files  # the .txt file is not matched
    preprocess_ef(files, str(tmp_path / "lmdb"), progress=False)
    lmdb = LmdbDataset({"src": str(tmp_path / "lmdb")})
    assert len(ds) == len(lmdb) == 12
    assert ds.get_natoms().tolist() == lmdb.get_natoms().tolist()
    for i in range(len(ds)):
        a, b = ds[i], lmdb[i]
        assert (a.sid, a.fid) == (b.sid, b.fid) == (i // 4, i % 4)
        assert float(a.y) == float(b.y)
        for field in FIELDS:
            assert torch.equal(torch.as_tensor(a[field]), torch.as_tensor(b[field])), (i, field)
    energies, counts = energies_and_counts(ds)  # the generic pass over the in-memory records
    ref_energies, ref_counts = energies_and_counts(lmdb)
    assert np.array_equal(energies, ref_energies) and np.array_equal(counts, ref_counts)


def test_items_are_copies(ase_folder):
    ds = AseDataset({"src": ase_folder})
    ds[0].pos.add_(1.0)
    assert torch.equal(ds[0].pos, AseDataset({"src": ase_folder})[0].pos)


def test_seeded_splits_are_disjoint_and_cover_the_frames(ase_folder):
    config = {"src": ase_folder, "train_size": 7, "val_size": 3, "seed": 5}
    parts = {s: AseDataset({**config, "split": s}) for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [7, 3, 2]
    keys = [(d.sid, d.fid) for s in ("train", "val", "test") for d in parts[s].records]
    assert len(set(keys)) == 12
    again = AseDataset({**config, "split": "val"})
    assert [(d.sid, d.fid) for d in again.records] == [(d.sid, d.fid) for d in parts["val"].records]
    with pytest.raises(DatasetError, match="needs train_size and val_size"):
        AseDataset({"src": ase_folder, "split": "train"})


def test_unlabelled_frames(tmp_path):
    path = str(tmp_path / "plain.extxyz")
    write(path, emt_frames(1, n=2, labelled=False))
    ds = AseDataset({"src": path, "energy": False, "forces": False})
    assert len(ds) == 2 and getattr(ds[0], "y", None) is None and getattr(ds[0], "force", None) is None
    with pytest.raises(DatasetError, match=r"plain.extxyz, record 0, field 'y'"):
        AseDataset({"src": path})


@pytest.mark.parametrize("config, message", [
    ({"pattern": "*.cif"}, "no files matching *.cif"),
    ({"split": "holdout"}, "split 'holdout' is not one of"),
    ({"forces": True, "energy": False}, "forces: true needs energy: true"),
    ({"cutoff": 5.0}, "unknown config key(s) 'cutoff'"),
])
def test_config_errors(ase_folder, config, message):
    with pytest.raises(DatasetError) as err:
        AseDataset({"src": ase_folder, **config})
    assert message in str(err.value)


def test_training_on_ase_files_equals_training_on_the_lmdb(ase_folder, tmp_path, torch_threads):
    files = [os.path.join(ase_folder, f"in{k}.{ext}") for k, ext in enumerate(("traj", "extxyz", "db"))]
    preprocess_ef(files, str(tmp_path / "lmdb"), progress=False)
    lmdb_cfg = tiny_config({"train": str(tmp_path / "lmdb"), "val": str(tmp_path / "lmdb")}, max_epochs=2)
    ase_cfg = tiny_config({"train": ase_folder, "val": ase_folder}, max_epochs=2)
    ase_cfg["task"]["dataset"] = "ase"
    runs = []
    for name, cfg in (("lmdb", lmdb_cfg), ("ase", ase_cfg)):
        path = write_config(tmp_path, cfg, f"{name}.yml")
        assert main(["--mode", "train", "--config-yml", path, "--run-dir", str(tmp_path / f"runs_{name}"),
                     "--no-progress"]) == 0
        runs.append(only_run_dir(tmp_path / f"runs_{name}"))
    lmdb_rows, ase_rows = (read_jsonl(run, "train") for run in runs)
    assert len(ase_rows) == 6  # 12 frames, batch 2, print every 2 steps, 2 epochs
    assert [r["loss"] for r in ase_rows] == [r["loss"] for r in lmdb_rows]
    assert read_jsonl(runs[1], "val")[-1]["forces_mae"] == read_jsonl(runs[0], "val")[-1]["forces_mae"]


def test_predict_mode_on_unlabelled_ase_files(ase_folder, tmp_path):
    unlabelled = str(tmp_path / "new.extxyz")
    write(unlabelled, emt_frames(7, n=3, labelled=False))
    cfg = tiny_config({"train": ase_folder}, max_epochs=None, max_steps=2)
    cfg["task"]["dataset"] = "ase"
    cfg["dataset"]["test"] = {"src": unlabelled, "energy": False, "forces": False}
    path = write_config(tmp_path, cfg)
    assert main(["--mode", "train", "--config-yml", path, "--run-dir", str(tmp_path / "train"), "--no-progress"]) == 0
    checkpoint = os.path.join(only_run_dir(tmp_path / "train"), "checkpoint.pt")
    assert main(["--mode", "predict", "--checkpoint", checkpoint, "--run-dir", str(tmp_path / "pred"),
                 "--no-progress"]) == 0
    with np.load(os.path.join(only_run_dir(tmp_path / "pred"), "predictions.npz")) as pred:
        assert pred["ids"].tolist() == ["0_0", "0_1", "0_2"]
        assert pred["energy"].shape == (3,) and np.isfinite(pred["energy"]).all()
        assert pred["forces"].shape == (3 * 9, 3)  # free atoms only: 4 of 13 fixed per frame


def test_ase_config_template_trains_on_ase_files(ase_folder, tmp_path):
    """configs/ase/spinconv.yml with its README-style overrides (small model for speed)."""
    config = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "ase", "spinconv.yml")
    train = os.path.join(ase_folder, "in1.extxyz")
    val = os.path.join(ase_folder, "in0.traj")
    assert main(["--mode", "train", "--config-yml", config, f"--dataset.train.src={train}",
                 f"--dataset.val.src={val}", "--optim.max_epochs=null", "--optim.max_steps=2",
                 "--model.hidden_channels=8", "--model.mid_hidden_channels=8", "--model.num_interactions=1",
                 "--logger.backends=[]", "--run-dir", str(tmp_path / "runs"), "--no-progress"]) == 0
    run = only_run_dir(tmp_path / "runs")
    assert read_jsonl(run, "val")[-1]["step"] == 2
