"""optim.accumulate_grad_batches: several micro-batches per optimiser step."""
from __future__ import annotations

import os

import pytest
import torch
from trainers.trainer_testing import only_run_dir, read_jsonl, tiny_config, write_config

from spinconv_train.checkpoints import store as ckpt
from spinconv_train.launch.cli import main


def _train(config_path, run_dir, *extra):
    assert main(["--mode", "train", "--config-yml", config_path, "--run-dir", str(run_dir), "--no-progress",
                 *extra]) == 0
    return only_run_dir(run_dir)


def test_two_micro_batches_of_two_equal_one_batch_of_four(s2ef_data, tmp_path, torch_threads):
    """The fixture's structures all have 13 atoms (9 free), so a batch's loss is the mean of its
    halves' losses and two accumulated halves give the gradient of the whole batch."""
    whole = tiny_config(s2ef_data, batch_size=4, max_epochs=2)
    halves = tiny_config(s2ef_data, batch_size=2, max_epochs=2, accumulate_grad_batches=2)
    a = _train(write_config(tmp_path, whole, "whole.yml"), tmp_path / "whole")
    b = _train(write_config(tmp_path, halves, "halves.yml"), tmp_path / "halves")
    first, second = ckpt.read(os.path.join(a, "checkpoint.pt")), ckpt.read(os.path.join(b, "checkpoint.pt"))
    assert first["step"] == second["step"] == 4  # 8 structures: 2 optimiser steps per epoch either way
    for key, value in first["model"].items():
        torch.testing.assert_close(second["model"][key], value, rtol=1e-5, atol=1e-6)
    assert read_jsonl(b, "val")[-1]["forces_mae"] == pytest.approx(read_jsonl(a, "val")[-1]["forces_mae"], rel=1e-5)


def test_resume_between_accumulated_steps_matches_an_uninterrupted_run(s2ef_data, tmp_path, torch_threads):
    cfg = tiny_config(s2ef_data, max_epochs=None, max_steps=5, accumulate_grad_batches=3, ema_decay=0.9)
    cfg["logger"]["print_every"] = 1
    path = write_config(tmp_path, cfg)
    straight = _train(path, tmp_path / "straight")
    first = _train(path, tmp_path / "first", "--optim.max_steps=1")
    payload = ckpt.read(os.path.join(first, "checkpoint.pt"))
    # 4 batches per epoch in groups of 3 and 1: step 1 ends after 3 batches
    assert payload["step"] == 1 and payload["sampler"]["batches_yielded"] == 3
    resumed = _train(path, tmp_path / "resumed", "--checkpoint", os.path.join(first, "checkpoint.pt"))
    expected = [r["loss"] for r in read_jsonl(straight, "train")]
    got = [r["loss"] for r in read_jsonl(first, "train")] + [r["loss"] for r in read_jsonl(resumed, "train")]
    assert len(expected) == 5 and got == pytest.approx(expected, rel=1e-6, abs=1e-7)
    a = ckpt.read(os.path.join(straight, "checkpoint.pt"))
    b = ckpt.read(os.path.join(resumed, "checkpoint.pt"))
    assert a["step"] == b["step"] == 5 and a["epoch"] == b["epoch"] == 2 and b["sampler"]["batches_yielded"] == 3
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-6, atol=1e-7)


def test_accumulate_grad_batches_must_be_positive(s2ef_data, tmp_path, capsys):
    path = write_config(tmp_path, tiny_config(s2ef_data, accumulate_grad_batches=0))
    assert main(["--mode", "train", "--config-yml", path, "--run-dir", str(tmp_path / "runs")]) == 2
    assert "key 'optim.accumulate_grad_batches': must be >= 1, got 0" in capsys.readouterr().err
