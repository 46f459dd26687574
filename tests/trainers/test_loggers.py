"""Loggers: metrics files always, tensorboard events, wandb offline without a login."""
from __future__ import annotations

import csv
import errno
import glob
import json
import os

import pytest

from spinconv_train.loggers import build_loggers
from spinconv_train.loggers.files import CSV_FIELDS, read_csv, read_jsonl
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


def _counting_writes(monkeypatch, folder):
    """Record every ``os.open`` of a path under ``folder`` and the bytes of every ``os.write``
    to such a file from now on (other threads of the process, e.g. an earlier test's
    services, are not counted)."""
    opened, written, ours = [], [], set()
    real_open, real_write = os.open, os.write

    def counting_open(path, flags, *args):
        fd = real_open(path, flags, *args)
        if str(path).startswith(str(folder)):
            opened.append(str(path))
            ours.add(fd)
        return fd

    def counting_write(fd, data):
        if fd in ours:
            written.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "open", counting_open)
    monkeypatch.setattr(os, "write", counting_write)
    return opened, written


def test_each_log_call_appends_only_its_rows(tmp_path, monkeypatch):
    """O(1) work per call: every call writes exactly the bytes its rows add to the files
    (nothing earlier is rewritten), so the cost of a call does not grow with the run."""
    logger = build_loggers(str(tmp_path), {"logger": {"backends": []}})
    opened, written = _counting_writes(monkeypatch, tmp_path)
    files = (tmp_path / "metrics.csv", tmp_path / "metrics.jsonl")

    def size_on_disk() -> int:
        return sum(path.stat().st_size for path in files if path.exists())

    per_call, growth = [], []
    for step in range(300):
        before_written, before_size = sum(written), size_on_disk()
        logger.log({"loss": 1.0 / (step + 1), "forces_mae": 0.5}, step=step, split="train", epoch=step / 10)
        per_call.append(sum(written) - before_written)
        growth.append(size_on_disk() - before_size)
    monkeypatch.undo()
    header = len(",".join(CSV_FIELDS)) + 1  # written when the logger was built
    assert per_call == growth
    assert sum(written) == size_on_disk() - header
    assert max(per_call) < 400
    assert set(opened) == {str(tmp_path / "metrics.csv"), str(tmp_path / "metrics.jsonl")}
    assert len(read_jsonl(str(tmp_path / "metrics.jsonl"))) == 300 and len(read_csv(str(tmp_path / "metrics.csv"))) == 600


def test_crash_mid_line_is_readable_and_resume_appends(tmp_path, caplog):
    logger = build_loggers(str(tmp_path), {"logger": {"backends": []}})
    for step in range(3):
        logger.log({"loss": 1.0 + step}, step=step, split="train")
    # a crash while the next rows were being written: both files end in a cut-short line
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"time": 1.0, "step": 3, "epoch": null, "split": "tr')
    with open(tmp_path / "metrics.csv", "a") as handle:
        handle.write("1.0,3,,train,lo")
    assert [r["step"] for r in read_jsonl(str(tmp_path / "metrics.jsonl"))] == [0, 1, 2]
    assert [r["step"] for r in read_csv(str(tmp_path / "metrics.csv"))] == ["0", "1", "2"]
    with caplog.at_level("WARNING"):
        resumed = build_loggers(str(tmp_path), {"logger": {"backends": []}})
    assert "incomplete last line" in caplog.text
    resumed.log({"loss": 0.5, "new_metric": 7.0}, step=3, split="train")  # a metric first seen now
    with open(tmp_path / "metrics.jsonl") as handle:  # every line whole again
        rows = [json.loads(line) for line in handle]
    assert [r["step"] for r in rows] == [0, 1, 2, 3] and rows[-1]["new_metric"] == 7.0
    with open(tmp_path / "metrics.csv") as handle:
        csv_rows = list(csv.DictReader(handle))
    assert list(csv_rows[0]) == list(CSV_FIELDS)
    assert [(r["step"], r["metric"]) for r in csv_rows[-2:]] == [("3", "loss"), ("3", "new_metric")]


def test_failed_write_keeps_whole_rows(tmp_path, monkeypatch):
    from spinconv_train.atomic_files import DiskFullError

    logger = build_loggers(str(tmp_path), {"logger": {"backends": []}})
    logger.log({"loss": 1.5}, step=1, split="train")
    before = (tmp_path / "metrics.csv").read_text(), (tmp_path / "metrics.jsonl").read_text()
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(DiskFullError, match=r"no space left on device while writing .*metrics.csv"):
        logger.log({"loss": 1.0}, step=2, split="train")
    monkeypatch.undo()
    assert ((tmp_path / "metrics.csv").read_text(), (tmp_path / "metrics.jsonl").read_text()) == before


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
