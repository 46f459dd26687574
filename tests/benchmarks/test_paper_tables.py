"""scripts/paper_tables.py: our run directories' metrics next to the paper's numbers."""
from __future__ import annotations

import json

import pytest
from trainers.trainer_testing import load_script

from spinconv_train.benchmarks.paper import PAPER_ROWS, RunMetricsError, paper_table, run_metrics


def _script():
    return load_script("paper_tables")


def test_metrics_from_each_kind_of_run_directory(tmp_path):
    validate = tmp_path / "validate"
    validate.mkdir()
    (validate / "validate_metrics.json").write_text(json.dumps({"forces_mae": 0.031, "energy_force_within_threshold": 0.002}))
    train = tmp_path / "train"
    train.mkdir()
    rows = [{"split": "train", "step": 5, "forces_mae": 0.5}, {"split": "val", "step": 5, "forces_mae": 0.04},
            {"split": "val", "step": 10, "forces_mae": 0.035}]
    (train / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert run_metrics(str(validate))["forces_mae"] == 0.031
    assert run_metrics(str(train))["forces_mae"] == 0.035  # the last validation row
    with pytest.raises(RunMetricsError, match="holds none"):
        run_metrics(str(tmp_path))


def test_table_has_every_paper_row_and_our_numbers(tmp_path):
    relax = tmp_path / "relax"
    relax.mkdir()
    (relax / "relaxation_metrics.json").write_text(json.dumps(
        {"average_distance_within_threshold": 0.4123, "energy_mae": 0.51, "converged": 1.0}))
    table = paper_table({"is2rs-all": str(relax), "is2re-all-relaxation": str(relax)})
    lines = table.splitlines()
    assert len(lines) == 2 + sum(len(row.metrics) for row in PAPER_ROWS)
    assert "| IS2RS All (ML relaxation) | ADwT | 53.60% | 41.23% |" in table
    assert "| IS2RE All (via relaxation) | energy MAE (eV) | 0.4370 | 0.5100 |" in table
    assert "| S2EF 2M, val ID | force MAE (eV/Å) | 0.0329 | — | not run" in table
    with pytest.raises(KeyError, match="unknown rows"):
        paper_table({"s2ef-3m": str(relax)})


def test_script(tmp_path, capsys):
    script = _script()
    assert script.main(["--list"]) == 0
    assert "s2ef-all-val-id" in capsys.readouterr().out
    assert script.main(["--run", "nope"]) == 2
    assert script.main(["--run", f"s2ef-2m-val-id={tmp_path}"]) == 2
    assert "holds none" in capsys.readouterr().err
