"""Gather a suite's numbers: per run, the metrics of its best checkpoint on every reported
split (from the ``--mode validate`` outputs), its CPU time and how it ended."""
from __future__ import annotations

import json
import math
import os
from collections.abc import Collection
from dataclasses import dataclass, field

from spinconv_train.plots.metrics_io import read_metrics
from spinconv_train.results.execute import read_status, validation_dir
from spinconv_train.results.suites import RunSpec, Suite


@dataclass
class RunResult:
    """One run's numbers (NaN where a number is missing)."""

    spec: RunSpec
    metrics: dict[str, float] = field(default_factory=dict)  # split -> the suite's metric
    cpu_s: float = math.nan
    best_step: int | None = None
    last_step: int | None = None
    ended: str = "not run"  # "early stop / max steps", "budget", "failed (exit N)", "not run"
    parallel_runs: int | None = None  # runs of its suite at a time while it trained (None: not recorded)
    environment: dict[str, str] | None = None  # versions, commit, hardware when it trained (None: not recorded)


def validate_metrics(root: str, spec: RunSpec, failed: Collection[int] = ()) -> dict[str, dict[str, float]]:
    """``{split: metrics}`` from the run's ``validate/<name>-v<k>`` folders, except the ``failed``
    ones (``validate_metrics.json`` is ``val``, ``validate_metrics_<split>.json`` is ``<split>``)."""
    found: dict[str, dict[str, float]] = {}
    for k in range(len(spec.validate)):
        folder = validation_dir(spec, root, k)
        if k in failed or not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if name.startswith("validate_metrics") and name.endswith(".json"):
                split = name[len("validate_metrics"):-len(".json")].lstrip("_") or "val"
                with open(os.path.join(folder, name)) as handle:
                    found[split] = json.load(handle)
    return found


def collect_run(suite: Suite, spec: RunSpec, root: str) -> RunResult:
    """The numbers of one run of ``suite`` under ``root``."""
    result = RunResult(spec)
    status = read_status(spec, root)
    run_dir = os.path.join(root, spec.name)
    if status is not None:
        train = status["train"]
        result.parallel_runs = status.get("parallel_runs")
        result.environment = status.get("environment")
        result.cpu_s = float(train["cpu_s"])
        if train.get("submitted"):
            result.ended = "SLURM job (how it ended is not recorded)"
        elif train["stopped_by_budget"]:
            result.ended = "budget"
        elif train["returncode"] == 0:
            result.ended = "converged / step limit"
        else:
            result.ended = f"failed (exit {train['returncode']})"
    elif os.path.isdir(run_dir):
        result.ended = "submitted job (CPU time not recorded)"
    failed = [k for k, outcome in enumerate((status or {}).get("validate", [])) if outcome["returncode"] != 0]
    if failed:
        logs = ", ".join(f"logs/{spec.name}-v{k}.log" for k in failed)
        result.ended += f"; validation failed, held-out numbers missing ({logs})"
    if os.path.exists(os.path.join(run_dir, "metrics.jsonl")) or os.path.exists(os.path.join(run_dir, "metrics.csv")):
        rows = read_metrics(run_dir)
        val = [r for r in rows if r.get("split") == "val" and math.isfinite(float(r.get(suite.metric, math.nan)))]
        if val:
            best = min(val, key=lambda r: float(r[suite.metric]))
            result.best_step = int(best["step"])
            result.metrics["val"] = float(best[suite.metric])  # replaced by the validation output when there is one
        steps = [int(r["step"]) for r in rows if r.get("split") == "train"]
        result.last_step = max(steps) if steps else None
    for split, metrics in validate_metrics(root, spec, failed).items():
        if suite.metric in metrics:
            result.metrics[split] = float(metrics[suite.metric])
    return result


def collect_suite(suite: Suite, specs: list[RunSpec], root: str) -> list[RunResult]:
    """``collect_run`` for every run of ``specs``."""
    return [collect_run(suite, spec, root) for spec in specs]
