"""Read a run's metrics files: ``metrics.jsonl`` (one JSON object per ``log`` call) or,
without it, ``metrics.csv`` (long format: ``time,step,epoch,split,metric,value``).

Tolerant of a run still being written: a last line without its newline is incomplete and
skipped with a warning. A malformed complete line is an error naming the file and line.
"""
from __future__ import annotations

import csv
import json
import math
import os
import warnings
from collections.abc import Sequence
from typing import Any

JSONL_NAME = "metrics.jsonl"
CSV_NAME = "metrics.csv"
_KEYS = ("time", "step", "epoch", "split")

Row = dict[str, Any]


class MetricsFileError(ValueError):
    """A metrics file that cannot be read: names the file and line."""


def read_metrics(run_dir: str) -> list[Row]:
    """Rows ``{"time", "step", "epoch", "split", <metric>: value, ...}`` of ``run_dir``,
    in file order, from ``metrics.jsonl`` or else ``metrics.csv``."""
    jsonl = os.path.join(run_dir, JSONL_NAME)
    if os.path.exists(jsonl):
        return read_jsonl(jsonl)
    path = os.path.join(run_dir, CSV_NAME)
    if os.path.exists(path):
        return read_csv(path)
    raise MetricsFileError(f"{run_dir}: no {JSONL_NAME} or {CSV_NAME} (is this a run folder of main.py?)")


def _lines(path: str) -> list[str]:
    """The complete lines of ``path`` (a last line without its newline is dropped, with a warning)."""
    with open(path, newline="") as handle:
        lines = handle.read().split("\n")
    if lines[-1] != "":
        warnings.warn(f"{path}, line {len(lines)}: incomplete last line skipped (the run may still be writing "
                      "it)", stacklevel=3)
    return [line.rstrip("\r") for line in lines[:-1]]


def _check_row(row: Any, path: str, number: int) -> Row:
    if not isinstance(row, dict) or "step" not in row or "split" not in row:
        raise MetricsFileError(f"{path}, line {number}: expected an object with 'step' and 'split', got {row!r:.200}")
    return row


def read_jsonl(path: str) -> list[Row]:
    """The objects of a ``metrics.jsonl`` file (see the module docstring for bad lines)."""
    lines = _lines(path)
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(_check_row(json.loads(line), path, number))
        except json.JSONDecodeError as err:
            raise MetricsFileError(f"{path}, line {number}: not a JSON metrics row: {err}") from None
    return rows


def _number(text: str) -> Any:
    if text == "":
        return None
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def read_csv(path: str) -> list[Row]:
    """The long-format rows of ``metrics.csv`` regrouped into one row per ``log`` call."""
    lines = _lines(path)
    if not lines:
        raise MetricsFileError(f"{path}: empty file (expected the header time,step,epoch,split,metric,value)")
    header = next(csv.reader([lines[0]]))
    expected = ["time", "step", "epoch", "split", "metric", "value"]
    if header != expected:
        raise MetricsFileError(f"{path}, line 1: header {header}, expected {expected}")
    rows: list[Row] = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            fields = next(csv.reader([line]))
            if len(fields) != 6:
                raise ValueError(f"{len(fields)} fields, expected 6")
            time, step, epoch, split, metric, value = fields
            key = (float(time), int(step), _number(epoch), split)
            number_value = float(value)
        except (ValueError, StopIteration) as err:
            raise MetricsFileError(f"{path}, line {number}: not a metrics row: {err}") from None
        if not rows or tuple(rows[-1][k] for k in _KEYS) != key:
            rows.append(dict(zip(_KEYS, key)))
        rows[-1][metric] = number_value
    return rows


def series(rows: Sequence[Row], split: str, metric: str, x: str) -> tuple:
    """``(xs, ys)`` of ``metric`` in the rows of ``split`` that have it and a finite value.

    ``x``: ``"step"``, ``"epoch"`` or ``"time"`` (seconds since the run's first row)."""
    start = min((float(r["time"]) for r in rows if r.get("time") is not None), default=0.0)
    xs, ys = [], []
    for row in rows:
        value = row.get(metric)
        if row.get("split") != split or value is None or not math.isfinite(float(value)):
            continue
        if x == "time":
            if row.get("time") is None:
                continue
            xs.append(float(row["time"]) - start)
        else:
            if row.get(x) is None:
                continue
            xs.append(float(row[x]))
        ys.append(float(value))
    return xs, ys
