"""Metrics files written in every run: ``metrics.csv`` (long format) and ``metrics.jsonl``.

Both are append-only: each ``log`` call appends its rows (one CSV row per metric, one JSON
line per call) in a single write, so a long run does constant work per call. The CSV's
columns are fixed (``CSV_FIELDS``: a metric is a row, not a column), and each JSON line
names its own keys, so metrics that first appear late in a run need no rewrite of either.

A line is complete only with its newline: a crash or a full disk can leave the last line
cut short, which :func:`read_jsonl` / :func:`read_csv` skip, and which reopening the run
folder (a resumed run) cuts off before appending. A write that fails is undone, so the
files keep only whole rows.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

from spinconv_train.atomic_files import DiskFullError, is_disk_full
from spinconv_train.loggers.base import Logger
from spinconv_train.registry import LOGGERS

CSV_NAME = "metrics.csv"
JSONL_NAME = "metrics.jsonl"
CSV_FIELDS = ("time", "step", "epoch", "split", "metric", "value")

logger = logging.getLogger(__name__)


def _csv_line(values: tuple) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()


def _complete_text(path: str) -> str:
    """The file's text up to its last newline (a cut-short last line left out)."""
    with open(path, newline="") as handle:
        text = handle.read()
    return text[: text.rfind("\n") + 1]


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl``, without a last line cut short by a crash."""
    return [json.loads(line) for line in _complete_text(path).splitlines() if line.strip()]


def read_csv(path: str) -> list[dict[str, str]]:
    """The rows of a ``metrics.csv`` as dicts, without a last line cut short by a crash."""
    return list(csv.DictReader(io.StringIO(_complete_text(path))))


def drop_incomplete_tail(path: str) -> int:
    """Cut a last line without its newline (a write interrupted by a crash) off the file;
    returns the bytes removed."""
    if not os.path.exists(path):
        return 0
    with open(path, "rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        end = size
        while end > 0:
            start = max(0, end - 65536)
            handle.seek(start)
            chunk = handle.read(end - start)
            if start + len(chunk) == size and chunk.endswith(b"\n"):
                return 0
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        else:
            keep = 0
        handle.truncate(keep)
    return size - keep


def append_text(path: str, text: str) -> None:
    """Append ``text`` to ``path`` in one write; on failure the file is cut back to its
    previous length (a full disk raises ``DiskFullError`` naming ``path``)."""
    data = text.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        before = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError as err:
            os.ftruncate(fd, before)
            if is_disk_full(err):
                raise DiskFullError(path) from None
            raise
    finally:
        os.close(fd)


@LOGGERS.register("csv", "jsonl", "file")
class FileLogger(Logger):
    """One CSV row per metric and one JSON line per call, appended to files in ``run_dir``."""

    def __init__(self, run_dir: str, config: Mapping[str, Any] | None = None) -> None:
        os.makedirs(run_dir, exist_ok=True)
        self.csv_path = os.path.join(run_dir, CSV_NAME)
        self.jsonl_path = os.path.join(run_dir, JSONL_NAME)
        for path in (self.csv_path, self.jsonl_path):
            removed = drop_incomplete_tail(path)
            if removed:
                logger.warning("%s: removed an incomplete last line (%d bytes) left by an interrupted run",
                               path, removed)
        if not os.path.exists(self.csv_path) or os.path.getsize(self.csv_path) == 0:
            append_text(self.csv_path, _csv_line(CSV_FIELDS))

    def log(self, metrics: Mapping[str, float], step: int, split: str, epoch: float | None = None) -> None:
        now = round(time.time(), 3)
        rows = [_csv_line((now, step, "" if epoch is None else epoch, split, name, float(value)))
                for name, value in metrics.items()]
        append_text(self.csv_path, "".join(rows))
        row = {"time": now, "step": step, "epoch": epoch, "split": split, **{k: float(v) for k, v in metrics.items()}}
        append_text(self.jsonl_path, json.dumps(row) + "\n")

    def close(self) -> None:
        """Nothing is held open: every ``log`` already appended whole rows."""
