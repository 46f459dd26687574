"""Checkpoints: exact mid-epoch resume, model mismatch, NaN loss handling."""
from __future__ import annotations

import os

import pytest
import torch
from trainers.trainer_testing import only_run_dir, read_jsonl, tiny_config, write_config

from spinconv_train.checkpoints import store as ckpt
from spinconv_train.launch.cli import main
from spinconv_train.tasks.forces import ForcesTask


def _train(config_path, run_dir, *extra):
    assert main(["--mode", "train", "--config-yml", config_path, "--run-dir", str(run_dir), "--no-progress",
                 *extra]) == 0
    return only_run_dir(run_dir)


def test_resume_mid_epoch_matches_uninterrupted_run(s2ef_data, tmp_path, torch_threads):
    cfg = tiny_config(s2ef_data, max_epochs=None, max_steps=7, ema_decay=0.9, clip_grad_norm=5.0,
                      scheduler="step", warmup_steps=2, lr_milestones=[5], lr_gamma=0.5)
    cfg["logger"]["print_every"] = 1
    path = write_config(tmp_path, cfg)
    straight = _train(path, tmp_path / "straight")
    first = _train(path, tmp_path / "first", "--optim.max_steps=3")  # stops mid-epoch (4 batches/epoch)
    payload = ckpt.read(os.path.join(first, "checkpoint.pt"))
    assert payload["step"] == 3 and payload["sampler"]["batches_yielded"] == 3 and payload["epoch"] == 0
    resumed = _train(path, tmp_path / "resumed", "--checkpoint", os.path.join(first, "checkpoint.pt"))

    expected = [r["loss"] for r in read_jsonl(straight, "train")]
    got = [r["loss"] for r in read_jsonl(first, "train")] + [r["loss"] for r in read_jsonl(resumed, "train")]
    assert len(expected) == 7 and [r["step"] for r in read_jsonl(resumed, "train")] == [4, 5, 6, 7]
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-7)
    lrs = [r["lr"] for r in read_jsonl(straight, "train")]
    assert lrs[-1] == pytest.approx(0.5e-3) and lrs[0] < 1e-3  # warm-up and milestone took effect
    final_straight = read_jsonl(straight, "val")[-1]
    final_resumed = read_jsonl(resumed, "val")[-1]
    assert final_resumed["step"] == final_straight["step"] == 7
    assert final_resumed["forces_mae"] == pytest.approx(final_straight["forces_mae"], rel=1e-6)
    a = ckpt.read(os.path.join(straight, "checkpoint.pt"))
    b = ckpt.read(os.path.join(resumed, "checkpoint.pt"))
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-6, atol=1e-7)
    assert a["config"]["optim"] == b["config"]["optim"]


def test_checkpoint_holds_state_and_config(s2ef_data, tmp_path):
    cfg = tiny_config(s2ef_data, max_epochs=1, ema_decay=0.99)
    run = _train(write_config(tmp_path, cfg), tmp_path / "runs")
    payload = ckpt.read(os.path.join(run, "checkpoint.pt"))
    for key in ("model", "optimizer", "scheduler", "ema", "targets", "step", "epoch", "sampler", "rng", "config"):
        assert payload[key] is not None, key
    assert payload["config"]["model"]["hidden_channels"] == cfg["model"]["hidden_channels"]
    assert payload["step"] == 4 and payload["epoch"] == 1
    assert os.path.exists(os.path.join(run, "best_checkpoint.pt"))
    assert os.path.exists(os.path.join(run, "config.yml"))
    assert not [f for f in os.listdir(run) if f.startswith(".tmp-")]  # no temporary files left
    mean = payload["targets"]["normalizer"]["mean"]
    assert isinstance(mean, float) and mean != 0.0  # fitted on the training data


def test_checkpoint_from_another_model_is_rejected(s2ef_data, tmp_path, capsys):
    run = _train(write_config(tmp_path, tiny_config(s2ef_data)), tmp_path / "runs")
    code = main(["--mode", "validate", "--config-yml", os.path.join(run, "config.yml"), "--run-dir",
                 str(tmp_path / "v"), "--checkpoint", os.path.join(run, "checkpoint.pt"), "--model.hidden_channels=8"])
    assert code == 2
    err = capsys.readouterr().err
    assert "another model configuration" in err and "model.hidden_channels: checkpoint 16, config 8" in err


def test_nan_loss_stops_with_step_and_sids_and_keeps_checkpoint(s2ef_data, tmp_path, monkeypatch, capsys):
    calls = {"train": 0}
    original = ForcesTask.loss

    def poisoned(self, out, batch):
        loss = original(self, out, batch)
        if torch.is_grad_enabled():
            calls["train"] += 1
            if calls["train"] == 3:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(ForcesTask, "loss", poisoned)
    cfg = tiny_config(s2ef_data, checkpoint_every=1)
    path = write_config(tmp_path, cfg)
    code = main(["--mode", "train", "--config-yml", path, "--run-dir", str(tmp_path / "runs"), "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "step 3" in err and "batch sids: [" in err and "checkpoint" in err
    run = only_run_dir(tmp_path / "runs")
    assert ckpt.read(os.path.join(run, "checkpoint.pt"))["step"] == 2  # the last good one
