"""Run a suite's commands: each training run as a ``main.py`` subprocess stopped once it has
used its CPU budget (its best checkpoint and metrics stay), then ``--mode validate`` on the
best checkpoint; or each training run submitted as a SLURM job (``main.py --submit``).

Layout under the suite's run folder ``ROOT``::

    ROOT/<run>/                  main.py's run folder (metrics.jsonl, best_checkpoint.pt, ...)
    ROOT/validate/<run>-v<k>/    the k-th validation of that run's best checkpoint
    ROOT/status/<run>.json       command, exit code, CPU and wall seconds, whether the budget stopped it
    ROOT/logs/<run>.log          the training run's output
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from spinconv_train.config import write_text_atomic
from spinconv_train.results.environment import environment
from spinconv_train.results.suites import RunSpec

POLL_S = 1.0
GRACE_S = 30.0


@dataclass
class Outcome:
    """What running one command did."""

    command: list[str]
    returncode: int
    cpu_s: float
    wall_s: float
    stopped_by_budget: bool = False


def train_command(spec: RunSpec, root: str, python: str = sys.executable) -> list[str]:
    """The ``main.py --mode train`` command of ``spec`` (run folder ``root/<name>``)."""
    return [python, "main.py", "--mode", "train", "--config-yml", spec.config, "--run-dir", root,
            "--run-name", spec.name, "--seed", str(spec.seed), "--no-progress", *spec.overrides]


def best_checkpoint(spec: RunSpec, root: str) -> str | None:
    """The run's ``best_checkpoint.pt`` (else ``checkpoint.pt``), or None before the first one."""
    for name in ("best_checkpoint.pt", "checkpoint.pt"):
        path = os.path.join(root, spec.name, name)
        if os.path.exists(path):
            return path
    return None


def validate_commands(spec: RunSpec, root: str, python: str = sys.executable) -> list[list[str]]:
    """One ``main.py --mode validate`` command per entry of ``spec.validate``, on the best checkpoint."""
    checkpoint = best_checkpoint(spec, root) or os.path.join(root, spec.name, "best_checkpoint.pt")
    commands = []
    for k, extra in enumerate(spec.validate):
        run_dir, run_name = os.path.split(validation_dir(spec, root, k))
        commands.append([python, "main.py", "--mode", "validate", "--checkpoint", checkpoint, "--run-dir", run_dir,
                         "--run-name", run_name, "--no-progress", *extra])
    return commands


def _proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` and its reaped children (Linux ``/proc``)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(v) for v in fields[11:15]) / ticks  # utime, stime, cutime, cstime


def run_with_budget(command: Sequence[str], budget_cpu_s: float, log_path: str, cwd: str,
                    env: dict | None = None) -> Outcome:
    """Run ``command`` (output to ``log_path``); once it has used ``budget_cpu_s`` CPU seconds
    send SIGTERM (SIGKILL after a grace period). Without ``/proc`` the budget counts wall seconds."""
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    start = time.monotonic()
    stopped = False
    with open(log_path, "w") as log:
        proc = subprocess.Popen(list(command), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        stop_sent = None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                break
            used = _proc_cpu_seconds(proc.pid)
            used = time.monotonic() - start if used is None else used
            if stop_sent is None and used > budget_cpu_s:
                stopped, stop_sent = True, time.monotonic()
                proc.send_signal(signal.SIGTERM)
            elif stop_sent is not None and time.monotonic() - stop_sent > GRACE_S:
                proc.kill()
            time.sleep(POLL_S)
    cpu = usage.ru_utime + usage.ru_stime
    return Outcome(list(command), int(proc.returncode), round(cpu, 2), round(time.monotonic() - start, 2), stopped)


def run_plain(command: Sequence[str], log_path: str, cwd: str, env: dict | None = None) -> Outcome:
    """Run ``command`` to completion (output to ``log_path``)."""
    return run_with_budget(command, float("inf"), log_path, cwd, env)


def status_path(spec: RunSpec, root: str) -> str:
    return os.path.join(root, "status", f"{spec.name}.json")


def read_status(spec: RunSpec, root: str) -> dict | None:
    """The saved status of a run, or None when it has not run."""
    path = status_path(spec, root)
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        return json.load(handle)


def finished(status: dict | None) -> bool:
    """Whether a training run ended usefully: completed, or stopped by its budget."""
    return bool(status) and (status["train"]["returncode"] == 0 or status["train"]["stopped_by_budget"])


def _environment() -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    return env


def execute_run(spec: RunSpec, root: str, cwd: str, budget_cpu_s: float | None = None, jobs: int = 1) -> dict:
    """Train ``spec`` (unless a finished status exists) and validate its best checkpoint; returns
    and saves the status ``{"train": Outcome, "validate": [Outcome, ...], "budget_cpu_s",
    "parallel_runs" (``jobs``: runs of the suite at a time), "environment"}``."""
    env = _environment()
    status = read_status(spec, root)
    if not finished(status):
        set_aside_interrupted(spec, root)
        budget = spec.budget_cpu_s if budget_cpu_s is None else budget_cpu_s
        started_in = environment(cwd, env)
        train = run_with_budget(train_command(spec, root), budget, os.path.join(root, "logs", f"{spec.name}.log"),
                                cwd, env)
        status = {"train": asdict(train), "budget_cpu_s": budget, "parallel_runs": jobs, "environment": started_in,
                  "validate": []}
        write_text_atomic(status_path(spec, root), json.dumps(status, indent=1))
    return validate_run(spec, root, cwd, status)


def _move_aside(folder: str, suffix: str) -> None:
    """Rename ``folder`` to ``folder + suffix`` (replacing an older one of that name), if it exists."""
    if os.path.isdir(folder):
        aside = folder + suffix
        if os.path.isdir(aside):
            shutil.rmtree(aside)
        os.replace(folder, aside)


def validation_dir(spec: RunSpec, root: str, k: int) -> str:
    """The folder of the k-th validation of ``spec``'s best checkpoint."""
    return os.path.join(root, "validate", f"{spec.name}-v{k}")


def set_aside(spec: RunSpec, root: str, suffix: str) -> None:
    """Move the run folder of ``spec`` and its validation folders to ``<folder><suffix>``, so
    that a fresh attempt neither resumes the old one nor has its validations read as its own."""
    _move_aside(os.path.join(root, spec.name), suffix)
    for k in range(len(spec.validate)):
        _move_aside(validation_dir(spec, root, k), suffix)


def set_aside_interrupted(spec: RunSpec, root: str) -> None:
    """Set aside (``.interrupted``) a training run that was interrupted (no finished status):
    resumed, it would get a fresh CPU budget on top of what it used, so it starts again from
    scratch instead."""
    set_aside(spec, root, ".interrupted")


def validate_run(spec: RunSpec, root: str, cwd: str, status: dict) -> dict:
    """Run the validations of a finished training run that are not done yet; save and return its
    status. The folder of a validation that did not succeed is set aside (``.failed``) first."""
    if not finished(status) or best_checkpoint(spec, root) is None:
        return status
    done = len(status.get("validate", []))
    env = _environment()
    for k, command in enumerate(validate_commands(spec, root)):
        if k < done and status["validate"][k]["returncode"] == 0:
            continue
        _move_aside(validation_dir(spec, root, k), ".failed")
        outcome = run_plain(command, os.path.join(root, "logs", f"{spec.name}-v{k}.log"), cwd, env)
        status["validate"] = status.get("validate", [])[:k] + [asdict(outcome)]
        write_text_atomic(status_path(spec, root), json.dumps(status, indent=1))
    return status


def execute_suite(specs: Sequence[RunSpec], root: str, cwd: str, jobs: int = 1,
                  budget_cpu_s: float | None = None, progress: bool = True,
                  after: Callable[[RunSpec], object] | None = None) -> list[dict]:
    """Run ``specs`` locally, ``jobs`` at a time (one thread each); statuses in ``specs`` order.
    ``after(spec)`` is called as each run (training and validations) ends."""
    def one(spec: RunSpec) -> dict:
        status = execute_run(spec, root, cwd, budget_cpu_s, jobs)
        if after is not None:
            after(spec)
        if progress:
            train = status["train"]
            how = "budget" if train["stopped_by_budget"] else f"exit {train['returncode']}"
            print(f"{spec.name}: {how}, {train['cpu_s']:.0f} CPU s", file=sys.stderr, flush=True)
        return status

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, specs))


def submit_suite(specs: Sequence[RunSpec], root: str, cwd: str, submit_args: Sequence[str] = ()) -> list[Outcome]:
    """Submit each training run as a SLURM job (``main.py ... --submit``; its time limit is the
    run's budget in hours, as wall time). Validate later with ``reproduce.py --collect``."""
    outcomes = []
    for spec in specs:
        hours = f"{max(spec.budget_cpu_s / 3600.0, 0.1):.2f}" if spec.budget_cpu_s != float("inf") else None
        command = train_command(spec, root) + ["--submit", *submit_args]
        if hours is not None and "--slurm-timeout" not in submit_args:
            command += ["--slurm-timeout", hours]
        outcomes.append(run_plain(command, os.path.join(root, "logs", f"{spec.name}.submit.log"), cwd,
                                  _environment()))
    return outcomes
