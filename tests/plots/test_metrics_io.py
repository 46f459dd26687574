"""Reading metrics files: JSONL and CSV give the same rows; an incomplete last line is
skipped with a warning; a malformed complete line is an error naming file and line."""
from __future__ import annotations

import json
import math
import os

import pytest

from spinconv_train.loggers import build_loggers
from spinconv_train.plots.metrics_io import MetricsFileError, read_csv, read_jsonl, read_metrics, series


def _logged_run(folder) -> str:
    logger = build_loggers(str(folder), {"logger": {"backends": []}})
    logger.log({"loss": 1.5, "forces_mae": 0.25}, step=3, split="train", epoch=0.5)
    logger.log({"forces_mae": 0.2, "energy_mae": 1.25}, step=3, split="val", epoch=0.5)
    logger.log({"loss": 0.75}, step=6, split="train", epoch=1.0)
    logger.log({"forces_mae": float("nan")}, step=6, split="val")
    logger.close()
    return str(folder)


def test_jsonl_and_csv_give_the_logged_rows(tmp_path):
    run = _logged_run(tmp_path)
    rows = read_metrics(run)
    assert [(r["step"], r["split"]) for r in rows] == [(3, "train"), (3, "val"), (6, "train"), (6, "val")]
    assert rows[1]["energy_mae"] == 1.25 and rows[2]["epoch"] == 1.0 and rows[3]["epoch"] is None
    from_csv = read_csv(os.path.join(run, "metrics.csv"))
    assert math.isnan(from_csv[3].pop("forces_mae")) and math.isnan(rows[3]["forces_mae"])
    assert from_csv == rows[:3] + [{k: v for k, v in rows[3].items() if k != "forces_mae"}]
    os.remove(os.path.join(run, "metrics.jsonl"))
    assert len(read_metrics(run)) == 4  # falls back to the CSV
    xs, ys = series(rows, "val", "forces_mae", "step")
    assert (xs, ys) == ([3.0], [0.2])  # NaN values are left out
    xs, _ = series(rows, "train", "loss", "time")
    assert xs[0] == 0.0 and xs[1] >= 0.0  # seconds since the first row


def test_incomplete_last_line_is_skipped_with_a_warning(tmp_path):
    run = _logged_run(tmp_path)
    path = os.path.join(run, "metrics.jsonl")
    with open(path, "a") as handle:
        handle.write('{"time": 1.0, "step": 9, "split": "tr')
    with pytest.warns(UserWarning, match=r"metrics.jsonl, line 5: incomplete last line"):
        assert len(read_jsonl(path)) == 4
    csv_path = os.path.join(run, "metrics.csv")
    with open(csv_path, "a") as handle:
        handle.write("1.0,9,2.0,train,loss,0.")
    with pytest.warns(UserWarning, match="incomplete last line"):
        rows = read_csv(csv_path)
    assert rows[-1]["step"] == 6


def test_malformed_line_is_an_error_naming_file_and_line(tmp_path):
    run = _logged_run(tmp_path)
    path = os.path.join(run, "metrics.jsonl")
    with open(path) as handle:
        lines = handle.read().splitlines()
    lines[1] = lines[1][:20]
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    with pytest.raises(MetricsFileError, match=r"metrics.jsonl, line 2"):
        read_jsonl(path)
    with open(path, "w") as handle:
        handle.write(json.dumps([1, 2]) + "\n")
    with pytest.raises(MetricsFileError, match=r"line 1: expected an object"):
        read_jsonl(path)
    with pytest.raises(MetricsFileError, match="no metrics.jsonl or metrics.csv"):
        read_metrics(str(tmp_path / "empty"))
