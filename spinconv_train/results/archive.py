"""Keep each finished run's numbers beside its report, so that a report can be rebuilt and a
suite resumed after the run folders are gone (they hold checkpoints and stay uncommitted).

The archive of a suite is ``<results-dir>/<suite>/runs/`` with the run folder's layout
(``execute.py``), holding only small text files::

    <run>/metrics.jsonl, <run>/config.yml, <run>/attempts.jsonl
    validate/<run>-v<k>/validate_metrics*.json
    status/<run>.json
"""
from __future__ import annotations

import os

import yaml

from spinconv_train.atomic_files import write_text_atomic
from spinconv_train.results.execute import finished, read_status, status_path, validation_dir
from spinconv_train.results.suites import RunSpec

RUN_FILES = ("metrics.jsonl", "config.yml", "attempts.jsonl")


def archive_dir(results_dir: str, suite_name: str) -> str:
    """Where the archive of ``suite_name`` lives."""
    return os.path.join(results_dir, suite_name, "runs")


def expected_config(spec: RunSpec, cwd: str) -> dict:
    """The resolved config ``main.py`` writes into the run folder of ``spec`` (its config
    file, includes, overrides and seed), as plain data; paths relative to ``cwd``."""
    from spinconv_train.config import load_config, plain

    previous = os.getcwd()
    os.chdir(cwd)
    try:
        config = plain(load_config(spec.config, list(spec.overrides)))
    finally:
        os.chdir(previous)
    config["seed"] = spec.seed
    return config


def archived_config(spec: RunSpec, archive: str) -> dict | None:
    """The config the archived run of ``spec`` trained with (None when not archived)."""
    path = os.path.join(archive, spec.name, "config.yml")
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        return yaml.safe_load(handle)


def is_archived(spec: RunSpec, archive: str, budget_cpu_s: float, config: dict | None = None) -> bool:
    """Whether ``archive`` holds a finished, validated run of ``spec`` trained with this budget
    and, when ``config`` is given, with this resolved config (a run made with another
    ``--budget-cpu-s``, or before its config file changed, does not count: it runs again)."""
    status = read_status(spec, archive)
    if not finished(status) or float(status.get("budget_cpu_s", float("nan"))) != float(budget_cpu_s):
        return False
    if config is not None and archived_config(spec, archive) != config:
        return False
    return bool(status.get("validate")) and all(v["returncode"] == 0 for v in status["validate"])


def _copy_text(source: str, destination: str) -> None:
    with open(source) as handle:
        write_text_atomic(destination, handle.read())


def archive_run(spec: RunSpec, root: str, archive: str) -> bool:
    """Copy the numbers of ``spec``'s run under ``root`` into ``archive``; returns whether it
    did (only a finished run is archived, and its status file goes last, so that an
    interrupted copy is not taken for a finished one)."""
    status = read_status(spec, root)
    if not finished(status):
        return False
    for name in RUN_FILES:
        source = os.path.join(root, spec.name, name)
        if os.path.exists(source):
            _copy_text(source, os.path.join(archive, spec.name, name))
    for k in range(len(spec.validate)):
        folder = validation_dir(spec, root, k)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if name.startswith("validate_metrics") and name.endswith(".json"):
                _copy_text(os.path.join(folder, name), os.path.join(validation_dir(spec, archive, k), name))
    _copy_text(status_path(spec, root), status_path(spec, archive))
    return True
