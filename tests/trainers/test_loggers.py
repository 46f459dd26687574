"""Loggers: metrics files always, tensorboard events, wandb offline without a login."""
from __future__ import annotations

import csv
import glob
import io
import json
import os

import pytest

from spinconv_train.loggers import build_loggers
from spinconv_train.registry import LOGGERS


def test_file_logger_appends_long_csv_and_jsonl(tmp_path):
    logger = build_loggers(str(tmp_path), {"logger": {"backends": []}})
    logger.log({"loss": 1.5, "forces_mae": 0.25}, step=3, split="train", epoch=0.5)
    logger.log({"forces_mae": 0.2}, step=6, split="val", epoch=1.0)
    logger.close()
    with open(tmp_path / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["step"], r["split"], r["metric"], float(r["value"])) for r in rows] == [
        ("3", "train", "loss", 1.5), ("3", "train", "forces_mae", 0.25), ("6", "val", "forces_mae", 0.2)]
    with open(tmp_path / "metrics.jsonl") as handle:
        lines = [json.loads(line) for line in handle]
    assert lines[1] == {**lines[1], "step": 6, "split": "val", "epoch": 1.0, "forces_mae": 0.2}
    again = build_loggers(str(tmp_path), {})  # reopening keeps the earlier rows
    again.log({"loss": 1.0}, step=9, split="train")
    again.close()
    with open(tmp_path / "metrics.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 4
    with open(tmp_path / "metrics.jsonl") as handle:
        assert [json.loads(line)["step"] for line in handle] == [3, 6, 9]


def test_file_logger_writes_atomically(tmp_path, monkeypatch):
    # A failure while writing leaves the previous complete files, never a torn row.
    from spinconv_train import atomic_files as config_module  # where write_text_atomic lives

    logger = build_loggers(str(tmp_path), {"logger": {"backends": []}})
    logger.log({"loss": 1.5}, step=1, split="train")
    before = (tmp_path / "metrics.csv").read_text(), (tmp_path / "metrics.jsonl").read_text()

    def failing_write(handle_self, text):
        raise OSError("disk full")

    class FailingFile(io.StringIO):
        write = failing_write

    # write_text_atomic opens its temporary file with open(): make that file fail on write
    monkeypatch.setattr(config_module, "open", lambda path, mode: FailingFile(), raising=False)
    with pytest.raises(OSError, match="disk full"):
        logger.log({"loss": 1.0}, step=2, split="train")
    monkeypatch.delattr(config_module, "open")
    assert ((tmp_path / "metrics.csv").read_text(), (tmp_path / "metrics.jsonl").read_text()) == before
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]


def test_tensorboard_writes_events(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = build_loggers(str(tmp_path), {"logger": {"backends": ["tensorboard"]}})
    logger.log({"forces_mae": 0.5}, step=1, split="val")
    logger.log({"forces_mae": 0.25}, step=2, split="val")
    logger.close()
    files = glob.glob(str(tmp_path / "tensorboard" / "events.*"))
    assert files
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("val/forces_mae")] == [(1, 0.5), (2, 0.25)]


def test_wandb_offline_never_prompts(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setattr("builtins.input", lambda *a: pytest.fail("wandb prompted for input"))
    logger = LOGGERS.get("wandb")(str(tmp_path), {"logger": {"project": "test"}, "optim": {"lr_initial": 0.1}})
    assert logger.mode == "offline"
    logger.log({"loss": 2.0}, step=1, split="train")
    logger.close()
    runs = glob.glob(os.path.join(str(tmp_path), "wandb", "offline-run-*"))
    assert runs and glob.glob(os.path.join(runs[0], "*.wandb"))


def test_unknown_logger_lists_known():
    with pytest.raises(KeyError, match="tensorboard"):
        build_loggers("/tmp", {"logger": {"backends": ["neptune"]}})
