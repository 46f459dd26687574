"""train → validate → predict → resume through main() on the committed data, for both trainers."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from trainers.trainer_testing import TINY_SCHNET, only_run_dir, read_jsonl, write_config

from spinconv_train.checkpoints import store as ckpt
from spinconv_train.launch.cli import main
from spinconv_train.registry import DATASETS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
S2EF = os.path.join(ROOT, "data", "oc20_mini", "s2ef")
IS2RE = os.path.join(ROOT, "data", "oc20_mini", "is2re")

pytestmark = pytest.mark.skipif(not os.path.isdir(S2EF) or not os.path.isdir(IS2RE),
                                reason="committed data/oc20_mini is missing")


def _main(*args):
    assert main([*args, "--no-progress"]) == 0


def _config(root, trainer, test_src=None, **optim):
    base = {"batch_size": 4, "eval_batch_size": 8, "lr_initial": 3e-3, "optimizer": "Adam",
            "optimizer_params": {"amsgrad": True}, "force_coefficient": 10}
    base.update(optim)
    return {
        "trainer": trainer, "seed": 0,
        "dataset": {"train": {"src": os.path.join(root, "train")}, "val": {"src": os.path.join(root, "val_id")},
                    "test": {"src": test_src or os.path.join(root, "val_ood")}},
        "task": {"dataset": "lmdb", "normalizer_fit_samples": 64},
        "model": dict(TINY_SCHNET, regress_forces=(trainer == "forces")),
        "optim": base,
        "logger": {"backends": ["tensorboard"], "print_every": 2, "progress_bar": False},
    }


def _pipeline(config, tmp_path, capsys, resume_override):
    path = write_config(tmp_path, config)
    _main("--mode", "train", "--config-yml", path, "--run-dir", str(tmp_path / "train"))
    out = capsys.readouterr().out
    assert "untrained model, validation metrics" in out and "trained" in out
    run = only_run_dir(tmp_path / "train")
    best = os.path.join(run, "best_checkpoint.pt")
    _main("--mode", "validate", "--checkpoint", best, "--run-dir", str(tmp_path / "validate"))
    with open(os.path.join(only_run_dir(tmp_path / "validate"), "validate_metrics.json")) as handle:
        validated = json.load(handle)
    _main("--mode", "predict", "--checkpoint", best, "--run-dir", str(tmp_path / "predict"))
    predictions = np.load(os.path.join(only_run_dir(tmp_path / "predict"), "predictions.npz"))
    _main("--mode", "train", "--checkpoint", os.path.join(run, "checkpoint.pt"), "--run-dir", str(tmp_path / "resume"),
          resume_override)
    return run, validated, predictions, only_run_dir(tmp_path / "resume")


def test_forces_trainer_end_to_end(tmp_path, capsys):
    # Predict on IS2RE initial structures: unlabelled for this trainer (no y / force).
    config = _config(S2EF, "forces", test_src=os.path.join(IS2RE, "val_ood"), max_epochs=None, max_steps=6,
                     eval_max_batches=2)
    run, validated, pred, resumed = _pipeline(config, tmp_path, capsys, "--optim.max_steps=8")
    vals = read_jsonl(run, "val")
    assert [v["step"] for v in vals] == [0, 6]
    assert vals[-1]["loss"] < vals[0]["loss"]  # training helped
    best = ckpt.read(os.path.join(run, "best_checkpoint.pt"))
    assert validated["forces_mae"] == pytest.approx(best["metrics"]["forces_mae"], rel=1e-9)
    assert os.listdir(os.path.join(run, "tensorboard"))

    test = DATASETS.get("lmdb")({"src": os.path.join(IS2RE, "val_ood")})
    records = [test[i] for i in range(len(test))]
    assert not hasattr(records[0], "force")
    assert list(pred["ids"]) == [f"{r.sid}_{r.fid}" for r in records]
    free = [int((r.fixed == 0).sum()) for r in records]
    assert pred["natoms"].tolist() == free
    assert pred["energy"].dtype == np.float32 and pred["forces"].dtype == np.float32
    assert pred["forces"].shape == (sum(free), 3)
    assert [len(f) for f in np.split(pred["forces"], pred["chunk_idx"])] == free
    assert [r["step"] for r in read_jsonl(resumed, "val")] == [8]  # continued from step 6


def test_energy_trainer_end_to_end(tmp_path, capsys):
    config = _config(IS2RE, "energy", max_epochs=2)
    config["task"].update({"target": "y_relaxed", "labels": ["relaxed energy"]})
    run, validated, pred, resumed = _pipeline(config, tmp_path, capsys, "--optim.max_epochs=3")
    assert set(validated) >= {"energy_mae", "relaxed energy_mae", "energy_within_threshold", "loss"}
    assert validated["energy_mae"] == pytest.approx(validated["relaxed energy_mae"])
    test = DATASETS.get("lmdb")({"src": os.path.join(IS2RE, "val_ood")})
    assert list(pred["ids"]) == [f"{test[i].sid}_{test[i].fid}" for i in range(len(test))]
    assert set(pred.files) == {"ids", "energy", "natoms"} and pred["energy"].dtype == np.float32
    steps_per_epoch = -(-24 // 4)
    assert read_jsonl(resumed, "val")[-1]["step"] == 3 * steps_per_epoch
    assert ckpt.read(os.path.join(resumed, "checkpoint.pt"))["epoch"] == 3
