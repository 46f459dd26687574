"""Metrics files written in every run: ``metrics.csv`` (long format) and ``metrics.jsonl``.

Rows are appended and flushed, so earlier rows are never rewritten.
"""
from __future__ import annotations

import csv
import json
import os
import time
from typing import Any, Mapping

from spinconv_train.loggers.base import Logger
from spinconv_train.registry import LOGGERS

CSV_NAME = "metrics.csv"
JSONL_NAME = "metrics.jsonl"
CSV_FIELDS = ("time", "step", "epoch", "split", "metric", "value")


@LOGGERS.register("csv", "jsonl", "file")
class FileLogger(Logger):
    """Appends one CSV row per metric and one JSON line per call to files in ``run_dir``."""

    def __init__(self, run_dir: str, config: Mapping[str, Any] | None = None) -> None:
        os.makedirs(run_dir, exist_ok=True)
        self.csv_path = os.path.join(run_dir, CSV_NAME)
        self.jsonl_path = os.path.join(run_dir, JSONL_NAME)
        new = not os.path.exists(self.csv_path)
        self._csv = open(self.csv_path, "a", newline="")
        self._writer = csv.writer(self._csv)
        if new:
            self._writer.writerow(CSV_FIELDS)
            self._csv.flush()
        self._jsonl = open(self.jsonl_path, "a")

    def log(self, metrics: Mapping[str, float], step: int, split: str, epoch: float | None = None) -> None:
        now = round(time.time(), 3)
        for name, value in metrics.items():
            self._writer.writerow((now, step, "" if epoch is None else epoch, split, name, float(value)))
        self._csv.flush()
        row = {"time": now, "step": step, "epoch": epoch, "split": split, **{k: float(v) for k, v in metrics.items()}}
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()

    def close(self) -> None:
        self._csv.close()
        self._jsonl.close()
