"""main.py --mode train --dry-run: builds everything, runs one step's forward/backward, writes nothing."""
from __future__ import annotations

import json
import os

import pytest
import torch
from trainers.trainer_testing import only_run_dir, read_jsonl, tiny_config, write_config

from spinconv_train.launch.cli import main


def test_dry_run_reports_and_writes_nothing(s2ef_data, tmp_path, capsys):
    config = tiny_config({**s2ef_data, "val_again": s2ef_data["val"]}, max_steps=1, max_epochs=None)
    config["logger"]["print_every"] = 1
    path = write_config(tmp_path, config)
    runs = tmp_path / "runs"
    assert main(["--mode", "train", "--config-yml", path, "--run-dir", str(runs), "--dry-run", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert not runs.exists()
    assert summary["model"] == "schnet" and summary["train_structures"] == 8 and summary["batch_structures"] == 2
    assert set(summary["splits"]) == {"val", "val_again", "test"}
    assert summary["splits"]["val"]["first_batch_loss"] == summary["splits"]["val_again"]["first_batch_loss"] > 0
    assert torch.isfinite(torch.tensor(summary["train_step_loss"]))
    # The untrained validation of a real run starts from the same weights and normaliser.
    assert main(["--mode", "train", "--config-yml", path, "--run-dir", str(runs), "--no-progress"]) == 0
    run = only_run_dir(runs)
    assert read_jsonl(run, "val")[0]["step"] == 0
    # Same seed, same initial weights, same first batch: the first training loss agrees.
    assert read_jsonl(run, "train")[0]["loss"] == pytest.approx(summary["train_step_loss"], rel=1e-6)
    assert summary["normalizer"] == torch.load(os.path.join(run, "checkpoint.pt"), weights_only=False)[
        "targets"]["normalizer"]


def test_dry_run_finds_bad_data_and_bad_flags(s2ef_data, tmp_path, capsys):
    unlabelled = write_config(tmp_path, tiny_config({"train": s2ef_data["train"], "val": s2ef_data["test"]}))
    assert main(["--mode", "train", "--config-yml", unlabelled, "--dry-run"]) == 2
    assert "dataset.val" in capsys.readouterr().err
    assert main(["--mode", "validate", "--config-yml", unlabelled, "--dry-run", "--checkpoint", "x.pt"]) == 2
    assert "--dry-run checks a new training run" in capsys.readouterr().err


def test_dry_run_of_a_finetuning_run_counts_the_frozen_blocks(s2ef_data, tmp_path, capsys):
    source = write_config(tmp_path, tiny_config(s2ef_data, max_steps=1, max_epochs=None), "source.yml")
    assert main(["--mode", "train", "--config-yml", source, "--run-dir", str(tmp_path / "src"), "--no-progress"]) == 0
    config = tiny_config(s2ef_data, max_steps=1, max_epochs=None)
    config["finetune"] = {"checkpoint": os.path.join(only_run_dir(tmp_path / "src"), "checkpoint.pt"),
                          "freeze": ["net.embedding"]}
    capsys.readouterr()
    assert main(["--mode", "train", "--config-yml", write_config(tmp_path, config, "tune.yml"), "--dry-run"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert 0 < summary["trainable_parameters"] < summary["parameters"]
