"""Starting a run (training, evaluation, relaxation): this process's device, process group
and seed, and the run directory with the resolved config and the loggers.

A run's identity is its folder. New folders are made with one ``mkdir`` that fails on a
collision (then the next free ``-<k>`` suffix is tried), so simultaneous starts never share
one. A training run started with ``--run-name`` of an existing folder, or with ``--resume``,
continues in that folder (``training/session.py`` picks its newest checkpoint).
"""
from __future__ import annotations

import csv
import io
import json
import os
import random
import re
import shutil
import time
from dataclasses import dataclass

import numpy as np
import torch

from spinconv_train import distributed as dist
from spinconv_train.atomic_files import write_text_atomic
from spinconv_train.config import Config, save_config
from spinconv_train.loggers import MultiLogger, build_loggers

METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
_STAMP = r"\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}"


@dataclass
class RunOptions:
    """Command-line choices that are not part of the config."""

    run_dir: str = "runs"
    identifier: str = ""
    run_name: str | None = None  # exact folder name under run_dir (default: timestamp)
    checkpoint: str | None = None
    amp: bool = False
    cpu: bool = False
    progress: bool = True
    resume: bool = False  # continue the named (or newest matching) run folder, accepting config changes
    allow_world_size_change: bool = False  # resume under another global batch (not an exact continuation)


class RunDirectoryExistsError(ValueError):
    """``--run-name`` names a folder that already exists and cannot be continued."""


@dataclass
class RunFolder:
    """The folder of this attempt: ``created`` when this attempt made it (a failed start
    removes it again), else an existing run being continued."""

    path: str
    created: bool


def default_run_name(identifier: str, mode: str) -> str:
    """``<timestamp>[-<identifier>][-<mode>]`` (no mode suffix for training runs)."""
    stamp = time.strftime("%Y-%m-%d-%H-%M-%S")
    base = f"{stamp}-{identifier}" if identifier else stamp
    return base if mode == "train" else f"{base}-{mode}"


def create_run_dir(parent: str, base: str) -> str:
    """A new folder ``<parent>/<base>`` (or ``<base>-2``, ``-3``, ... when taken): each
    candidate is claimed by one ``mkdir``, which fails if another process got there first."""
    os.makedirs(parent, exist_ok=True)
    suffix = 1
    while True:
        path = os.path.join(parent, base if suffix == 1 else f"{base}-{suffix}")
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            suffix += 1


def newest_run(parent: str, identifier: str) -> str | None:
    """The newest ``<timestamp>[-<identifier>][-<k>]`` training folder under ``parent``."""
    if not os.path.isdir(parent):
        return None
    tail = f"-{re.escape(identifier)}" if identifier else ""
    pattern = re.compile(rf"^({_STAMP}){tail}(?:-(\d+))?$")
    found = []
    for name in os.listdir(parent):
        match = pattern.match(name)
        if match and os.path.isdir(os.path.join(parent, name)):
            found.append((match.group(1), int(match.group(2) or 1), name))
    return os.path.join(parent, max(found)[2]) if found else None


def claim_run_dir(options: RunOptions, mode: str) -> RunFolder:
    """This attempt's run folder (rank 0 decides, every rank gets the answer).

    Training: ``--run-name`` of an existing folder, or ``--resume`` (the named folder, else the
    newest one of ``--identifier``), continues it; otherwise a new folder is created. Other
    modes always create a new folder, and an existing ``--run-name`` is an error.
    """
    folder: RunFolder | None = None
    if dist.is_main():
        folder = _claim(options, mode)
    return dist.broadcast_object(folder)  # type: ignore[return-value]


def _claim(options: RunOptions, mode: str) -> RunFolder:
    if options.run_name:
        path = os.path.join(options.run_dir, options.run_name)
        os.makedirs(options.run_dir, exist_ok=True)
        try:
            os.mkdir(path)
            return RunFolder(path, created=True)
        except FileExistsError:
            if mode != "train":
                raise RunDirectoryExistsError(
                    f"--run-name {options.run_name!r}: {path!r} already exists; --mode {mode} writes a new "
                    "folder (choose another name)") from None
            if not os.path.isdir(path):
                raise RunDirectoryExistsError(f"--run-name {options.run_name!r}: {path!r} exists and is "
                                              "not a folder") from None
            return RunFolder(path, created=False)
    if options.resume and mode == "train":
        found = newest_run(options.run_dir, options.identifier)
        if found is not None:
            return RunFolder(found, created=False)
    return RunFolder(create_run_dir(options.run_dir, default_run_name(options.identifier, mode)), created=True)


def release_failed_start(folder: RunFolder) -> None:
    """Remove the folder a failed start created (rank 0), so that its name stays free."""
    if folder.created and dist.is_main():
        shutil.rmtree(folder.path, ignore_errors=True)


def trim_metrics(run_dir: str, last_step: int) -> int:
    """Drop metrics rows after ``last_step`` (``-1``: all) from ``metrics.jsonl`` and
    ``metrics.csv``: the work of a killed attempt after its last checkpoint is redone and
    logged again by the next one. Returns the number of JSON rows dropped."""
    dropped = 0
    path = os.path.join(run_dir, METRICS_JSONL)
    if os.path.exists(path):
        with open(path) as handle:
            lines = [line for line in handle if line.strip()]
        kept = [line for line in lines if int(json.loads(line)["step"]) <= last_step]
        dropped = len(lines) - len(kept)
        if dropped:
            write_text_atomic(path, "".join(kept))
    path = os.path.join(run_dir, METRICS_CSV)
    if os.path.exists(path):
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle))
        if rows:
            column = rows[0].index("step")
            kept_rows = [rows[0]] + [r for r in rows[1:] if r and int(r[column]) <= last_step]
            if len(kept_rows) != len(rows):
                buffer = io.StringIO()
                csv.writer(buffer).writerows(kept_rows)
                write_text_atomic(path, buffer.getvalue())
    return dropped


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def start_process(config: Config, cpu: bool) -> torch.device:
    """This process's device (``cuda:LOCAL_RANK`` unless ``cpu``), the process group under
    torchrun or SLURM, and the seed ``seed + rank``."""
    device = dist.local_device(prefer_cpu=cpu)
    dist.setup(device)
    seed_everything(int(config["seed"]) + dist.get_rank())
    return device


def open_run_dir(config: Config, options: RunOptions, mode: str,
                 folder: RunFolder | None = None) -> tuple[str, MultiLogger]:
    """The run directory (``folder``, else a newly claimed one) holding ``config.yml``, and
    the run's loggers (none off rank 0). A failure here removes a folder this start created."""
    folder = folder or claim_run_dir(options, mode)
    try:
        if dist.is_main():
            save_config(config, os.path.join(folder.path, "config.yml"))
        loggers = build_loggers(folder.path, config) if dist.is_main() else MultiLogger([])
    except BaseException:
        release_failed_start(folder)
        raise
    return folder.path, loggers
