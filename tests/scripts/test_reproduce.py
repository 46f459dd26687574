"""scripts/reproduce.py: the smoke suite end to end (2 tiny SchNet runs on the shipped
OC20-mini), the CPU budget stop, and the report's table, crossings and plots."""
from __future__ import annotations

import json
import math
import os
import shutil
import sys

import pytest
import torch
from trainers.trainer_testing import ROOT, load_script

from spinconv_train.results.collect import RunResult
from spinconv_train.results.execute import run_with_budget
from spinconv_train.results.report import aggregate, findings, metric_table, size_figure
from spinconv_train.results.suites import SUITES, RunSpec, Suite, get_suite


def test_smoke_suite_runs_collects_and_reports(tmp_path, capsys):
    script = load_script("reproduce")
    runs, results = tmp_path / "runs", tmp_path / "results"
    assert script.main(["--suite", "smoke", "--run-root", str(runs), "--results-dir", str(results),
                        "--jobs", "2"]) == 0
    report = (results / "smoke.md").read_text()
    values = {}
    for seed in (0, 1):
        status = json.loads((runs / "status" / f"schnet-seed{seed}.json").read_text())
        assert status["train"]["returncode"] == 0 and not status["train"]["stopped_by_budget"]
        assert status["train"]["cpu_s"] > 0 and [v["returncode"] for v in status["validate"]] == [0]
        folder = runs / "validate" / f"schnet-seed{seed}-v0"
        values[seed] = {split: json.loads((folder / name).read_text())["forces_mae"]
                        for split, name in (("val", "validate_metrics.json"),
                                            ("val_ood", "validate_metrics_val_ood.json"))}
    for split in ("val", "val_ood"):  # the table shows the mean and range of the validation outputs
        pair = sorted(v[split] for v in values.values())
        assert f"{sum(pair) / 2:.4f} ({pair[0]:.4f}–{pair[1]:.4f})" in report
    assert "python main.py --mode train --config-yml configs/s2ef/oc20_mini/schnet.yml" in report
    assert "torch:" in report and "CPU:" in report and "Budgets: 120 CPU s per run" in report
    # where the numbers were made is what the runs recorded, not the machine writing the report
    assert "Recorded by the runs when they trained:" in report and "This machine" not in report
    assert "Runs of this suite at a time: 2." in report
    status = json.loads((runs / "status" / "schnet-seed0.json").read_text())
    assert status["parallel_runs"] == 2 and status["environment"]["torch"] == torch.__version__
    assert (results / "smoke" / "learning_curves.png").stat().st_size > 1000
    before = (runs / "status" / "schnet-seed0.json").read_text()
    assert "## Reading" not in report
    (results / "smoke" / "reading.md").write_text("SchNet twice; nothing to compare.\n")
    assert script.main(["--suite", "smoke", "--run-root", str(runs), "--results-dir", str(results),
                        "--collect"]) == 0  # nothing is trained again
    assert (runs / "status" / "schnet-seed0.json").read_text() == before
    # what a person wrote about the runs survives collecting again
    report = (results / "smoke.md").read_text()
    assert "## Reading" in report and "SchNet twice; nothing to compare." in report
    # The report is built from the archive beside it, which outlives the run folders.
    archive = results / "smoke" / "runs"
    for seed in (0, 1):
        assert (archive / f"schnet-seed{seed}" / "metrics.jsonl").read_bytes() == \
            (runs / f"schnet-seed{seed}" / "metrics.jsonl").read_bytes()
        assert (archive / "validate" / f"schnet-seed{seed}-v0" / "validate_metrics_val_ood.json").exists()
    assert not list(archive.rglob("*.pt"))
    shutil.rmtree(runs)
    capsys.readouterr()
    assert script.main(["--suite", "smoke", "--run-root", str(runs), "--results-dir", str(results),
                        "--jobs", "2"]) == 0
    assert "2 of 2 runs are already finished" in capsys.readouterr().out
    assert not (runs / "status").exists()  # nothing was trained again
    assert (results / "smoke.md").read_text().split("## How it was run")[0] == report.split("## How it was run")[0]
    # A run archived with another config than its config file now gives runs again (its
    # old run folder, which would be resumed, is set aside).
    shutil.copytree(archive / "schnet-seed1", runs / "schnet-seed1")
    shutil.copytree(archive / "validate" / "schnet-seed1-v0", runs / "validate" / "schnet-seed1-v0")
    archived = archive / "schnet-seed1" / "config.yml"
    archived.write_text(archived.read_text().replace("hidden_channels: 16", "hidden_channels: 17"))
    assert script.main(["--suite", "smoke", "--run-root", str(runs), "--results-dir", str(results),
                        "--jobs", "2"]) == 0
    assert "1 archived run(s) trained with another config" in capsys.readouterr().out
    assert sorted(os.listdir(runs / "status")) == ["schnet-seed1.json"]
    assert (runs / "schnet-seed1.superseded" / "metrics.jsonl").exists()
    # its old validation went aside with it, and the new one ran in a clean folder
    assert (runs / "validate" / "schnet-seed1-v0.superseded").is_dir()
    assert [v["returncode"] for v in json.loads((runs / "status" / "schnet-seed1.json").read_text())["validate"]] == [0]
    assert "hidden_channels: 16" in archived.read_text()


def test_dry_run_prints_commands_and_missing_data_is_named(tmp_path, capsys, monkeypatch):
    script = load_script("reproduce")
    assert script.main(["--suite", "md17_ethanol", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("--mode train") == 4 and out.count("--split test") == 4
    empty_checkout = tmp_path / "checkout"  # a checkout where the generated data was never made
    empty_checkout.mkdir()
    monkeypatch.setattr(script, "ROOT", str(empty_checkout))
    tmp_path = tmp_path / "runs"
    tmp_path.mkdir()
    assert script.main(["--suite", "oc20_small_learning_curve", "--run-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "data/oc20_emt/s2ef/train_300" in err and "scripts/make_oc20_emt.py" in err
    assert not os.listdir(tmp_path)
    assert script.main(["--suite", "paper"]) == 0  # documented only: prints its commands
    assert "configs/s2ef/2M/spinconv.yml" in capsys.readouterr().out


def test_every_suite_names_existing_configs():
    for name in SUITES:
        suite = get_suite(name)
        assert len({r.name for r in suite.runs}) == len(suite.runs), name
        for run in suite.runs:
            assert os.path.exists(os.path.join(ROOT, run.config)), (name, run.config)


def test_budget_stops_a_run_by_cpu_time(tmp_path):
    outcome = run_with_budget([sys.executable, "-c", "while True: pass"], 1.0, str(tmp_path / "log"), str(tmp_path))
    assert outcome.stopped_by_budget and outcome.returncode != 0
    assert 1.0 <= outcome.cpu_s < 10.0


def _result(group, size, seed, val, ood, cpu=10.0):
    spec = RunSpec(name=f"{group}-{size}-{seed}", group=group, config="x.yml", seed=seed, train_size=size)
    return RunResult(spec, metrics={"val": val, "ood": ood}, cpu_s=cpu, ended="budget")


def test_report_table_crossings_and_size_plot():
    suite = Suite("t", "test", (), splits=("val", "ood"))
    results = [_result("A", 100, 0, 0.30, 0.5), _result("A", 100, 1, 0.20, 0.5), _result("B", 100, 0, 0.40, 0.6),
               _result("A", 1000, 0, 0.10, 0.4), _result("B", 1000, 0, 0.05, math.nan)]
    table = aggregate(results, suite.splits)
    assert table[("A", 100)]["val"] == [0.30, 0.20]
    text = metric_table(suite, table)
    assert "| A | 100 | 0.2500 (0.2000–0.3000) | 0.5000 (0.5000–0.5000) |" in text and "| B | 1000 | 0.0500 | – |" in text
    lines = findings(suite, table)
    assert "val at 100 frames: A 0.2500 < B 0.4000" in lines
    assert "val: A and B cross between 100 and 1000 frames (B better at 1000)" in lines
    assert not any(line.startswith("ood:") and "cross" in line for line in lines)  # B has no ood value at 1000
    fig = size_figure(suite, table)
    val_axes = fig.axes[0]
    assert [c.get_label() for c in val_axes.containers] == ["A", "B"]
    line_a = val_axes.containers[0].lines[0]
    assert list(line_a.get_xdata()) == [100, 1000] and list(line_a.get_ydata()) == pytest.approx([0.25, 0.10])


def test_an_interrupted_run_starts_again_rather_than_resuming_with_a_fresh_budget(tmp_path):
    from spinconv_train.results.execute import set_aside_interrupted

    spec = RunSpec(name="r", group="g", config="c.yml")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "checkpoint.pt").write_bytes(b"partial")
    set_aside_interrupted(spec, str(tmp_path))
    assert not (tmp_path / "r").exists() and (tmp_path / "r.interrupted" / "checkpoint.pt").exists()
    set_aside_interrupted(spec, str(tmp_path))  # nothing to move: nothing happens
    assert (tmp_path / "r.interrupted").exists()
    # its validations go with it: they belong to the earlier attempt
    spec = RunSpec(name="s", group="g", config="c.yml", validate=((),))
    (tmp_path / "validate" / "s-v0").mkdir(parents=True)
    set_aside_interrupted(spec, str(tmp_path))
    assert (tmp_path / "validate" / "s-v0.interrupted").is_dir() and not (tmp_path / "validate" / "s-v0").exists()


def test_a_failed_validation_is_retried_in_a_clean_folder_and_reported(tmp_path, monkeypatch):
    from spinconv_train.results import execute
    from spinconv_train.results.collect import collect_run

    spec = RunSpec(name="s", group="g", config="c.yml", validate=((),))
    suite = Suite(name="t", description="", runs=(spec,), splits=("val", "val_ood"))
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "best_checkpoint.pt").write_bytes(b"weights")
    stale = tmp_path / "validate" / "s-v0"
    stale.mkdir(parents=True)
    (stale / "validate_metrics_val_ood.json").write_text(json.dumps({"forces_mae": 0.5}))
    train = {"command": [], "returncode": 0, "cpu_s": 1.0, "wall_s": 1.0, "stopped_by_budget": False}
    failed = {"command": [], "returncode": 2, "cpu_s": 1.0, "wall_s": 1.0, "stopped_by_budget": False}
    status = {"train": train, "validate": [failed]}
    (tmp_path / "status").mkdir()
    (tmp_path / "status" / "s.json").write_text(json.dumps(status))
    # a failed validation's folder is not read as the run's numbers, and the report says so
    result = collect_run(suite, spec, str(tmp_path))
    assert "val_ood" not in result.metrics and "validation failed" in result.ended and "logs/s-v0.log" in result.ended
    ran = []

    def fake_run(command, log_path, cwd, env=None):
        ran.append(command)
        assert not stale.exists()  # the earlier attempt's folder is out of the way
        return execute.Outcome(list(command), 0, 1.0, 1.0)

    monkeypatch.setattr(execute, "run_plain", fake_run)
    status = execute.validate_run(spec, str(tmp_path), str(tmp_path), status)
    assert len(ran) == 1 and status["validate"][0]["returncode"] == 0
    assert (tmp_path / "validate" / "s-v0.failed" / "validate_metrics_val_ood.json").exists()
