"""Metrics files written in every run: ``metrics.csv`` (long format) and ``metrics.jsonl``.

Each ``log`` call rewrites both files atomically (temporary file, then ``os.replace``), so
a crash or a full disk never leaves a torn last line: a reader always sees whole rows.
Reopening a run folder keeps the rows already there.
"""
from __future__ import annotations

import csv
import io
import json
import os
import time
from typing import Any, List, Mapping

from spinconv_train.config import write_text_atomic
from spinconv_train.loggers.base import Logger
from spinconv_train.registry import LOGGERS

CSV_NAME = "metrics.csv"
JSONL_NAME = "metrics.jsonl"
CSV_FIELDS = ("time", "step", "epoch", "split", "metric", "value")


def _csv_line(values: tuple) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(values)
    return buffer.getvalue()


def _existing(path: str) -> List[str]:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as handle:
        return [handle.read()]


@LOGGERS.register("csv", "jsonl", "file")
class FileLogger(Logger):
    """One CSV row per metric and one JSON line per call, in files in ``run_dir``."""

    def __init__(self, run_dir: str, config: Mapping[str, Any] | None = None) -> None:
        os.makedirs(run_dir, exist_ok=True)
        self.csv_path = os.path.join(run_dir, CSV_NAME)
        self.jsonl_path = os.path.join(run_dir, JSONL_NAME)
        self._csv_parts = _existing(self.csv_path) or [_csv_line(CSV_FIELDS)]
        self._jsonl_parts = _existing(self.jsonl_path)
        if not os.path.exists(self.csv_path):
            write_text_atomic(self.csv_path, "".join(self._csv_parts))

    def log(self, metrics: Mapping[str, float], step: int, split: str, epoch: float | None = None) -> None:
        now = round(time.time(), 3)
        for name, value in metrics.items():
            self._csv_parts.append(_csv_line((now, step, "" if epoch is None else epoch, split, name, float(value))))
        row = {"time": now, "step": step, "epoch": epoch, "split": split, **{k: float(v) for k, v in metrics.items()}}
        self._jsonl_parts.append(json.dumps(row) + "\n")
        write_text_atomic(self.csv_path, "".join(self._csv_parts))
        write_text_atomic(self.jsonl_path, "".join(self._jsonl_parts))

    def close(self) -> None:
        """Nothing is held open: every ``log`` already left complete files."""
