"""SLURM submission with submitit: ``main.py ... --submit``, and requeue on preemption.

The submitting process claims the run folder (``<timestamp>[-<identifier>]``, made by one
``mkdir`` that fails on a collision, so two submissions in the same second get two
folders), builds a submitit executor from the SLURM flags and submits a
:class:`TrainingJob` that calls its ``entry`` (the command line's ``main``, passed in by
the caller) with the same arguments plus ``--run-name <folder> --resume``. With
``--num-gpus N`` every node runs N tasks, one per GPU; each task gets the RANK /
WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT variables that ``torchrun`` would set,
so the distributed code path is the same for both launchers.

One run, one folder: every attempt of the job (a time-limit requeue, ``scontrol requeue``,
preemption, a node failure; SLURM re-runs the batch script, submitit the pickled job)
continues in that folder from its newest ``checkpoint.pt`` and adds a line to its
``attempts.jsonl``. Signals: SLURM sends ``SIGUSR2`` ``slurm_signal_delay_s`` before a time
limit, and ``SIGTERM`` (``KillWait`` seconds, default 30, before ``SIGKILL``) when it
requeues, preempts or cancels; on either the training loop finishes its step, writes a
checkpoint and exits, and on ``SIGUSR2`` then hands over to submitit, which calls
:meth:`TrainingJob.checkpoint` and requeues the job (after a time limit up to
``MAX_TIMEOUT_REQUEUES`` times; preemptions always). Work since the last checkpoint is
redone only after a hard kill.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from spinconv_train.rundir import create_run_dir, default_run_name

logger = logging.getLogger(__name__)

# Flags that only concern the submission (with whether they take a value).
SUBMIT_FLAGS: dict[str, bool] = {
    "--submit": False, "--num-gpus": True, "--num-nodes": True, "--slurm-partition": True,
    "--slurm-mem": True, "--slurm-timeout": True,
}
# Flags the job sets itself on every attempt.
_JOB_FLAGS: dict[str, bool] = {"--run-name": True, "--run-dir": True, "--resume": False}
# submitit's cluster choice; "local" runs the job as a local subprocess (tests, debugging).
CLUSTER_ENV = "SPINCONV_SUBMITIT_CLUSTER"
SIGNAL_DELAY_S = 120
# Seconds before the time limit at which SLURM sends the requeue signal (checks with short limits set it lower).
SIGNAL_DELAY_ENV = "SPINCONV_SLURM_SIGNAL_DELAY_S"
# Requeues after reaching the time limit (submitit's default of 3 ends a long training run
# after three time limits; preemptions are not counted).
MAX_TIMEOUT_REQUEUES = 50


def strip_flags(argv: Sequence[str], flags: dict[str, bool]) -> list[str]:
    """``argv`` without ``flags`` (``--flag value`` and ``--flag=value`` forms)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in flags:
            skip = flags[name] and "=" not in arg
            continue
        out.append(arg)
    return out


def executor_parameters(args: argparse.Namespace, config: Any, job_name: str) -> dict[str, Any]:
    """submitit ``update_parameters`` keywords from the SLURM flags and the config."""
    gpus = int(args.num_gpus or 0)
    nodes = int(args.num_nodes or 1)
    if gpus < 0 or nodes < 1:
        raise ValueError(f"--num-gpus must be >= 0 and --num-nodes >= 1, got {gpus} and {nodes}")
    params: dict[str, Any] = {
        "name": job_name,
        "nodes": nodes,
        "tasks_per_node": max(gpus, 1),  # one process per GPU, as torchrun --nproc-per-node
        "cpus_per_task": int(config["optim"]["num_workers"]) + 1,
        "slurm_signal_delay_s": int(os.environ.get(SIGNAL_DELAY_ENV) or SIGNAL_DELAY_S),
    }
    if gpus:
        params["gpus_per_node"] = gpus
    if args.slurm_timeout is not None:
        if args.slurm_timeout <= 0:
            raise ValueError(f"--slurm-timeout is in hours and must be > 0, got {args.slurm_timeout}")
        params["timeout_min"] = max(1, int(round(60 * args.slurm_timeout)))
    if args.slurm_mem is not None:
        if args.slurm_mem <= 0:
            raise ValueError(f"--slurm-mem is in GB and must be > 0, got {args.slurm_mem}")
        params["mem_gb"] = args.slurm_mem
    if args.slurm_partition:
        params["slurm_partition"] = args.slurm_partition
    return params


def distributed_environment(global_rank: int, local_rank: int, world_size: int, master: str,
                            job_id: str) -> dict[str, str]:
    """The torchrun variables of one task (the port is derived from the job id, so that two
    jobs on one node do not collide)."""
    digits = "".join(ch for ch in str(job_id) if ch.isdigit()) or "0"
    return {
        "RANK": str(global_rank), "LOCAL_RANK": str(local_rank), "WORLD_SIZE": str(world_size),
        "MASTER_ADDR": master, "MASTER_PORT": str(20000 + int(digits[-6:]) % 20000),
    }


@dataclass
class TrainingJob:
    """The callable submitit runs on the allocation (one call per task and attempt).

    Every attempt runs the same command: ``--run-name <run> --resume`` continues the run
    folder from its newest checkpoint (or, before the first one, from ``--checkpoint`` when
    the submission gave one, else from scratch). Having a ``checkpoint`` method is what
    makes submitit requeue it when interrupted.
    """

    argv: list[str]  # the main.py command without submission and run-directory flags
    run_dir: str  # absolute parent folder of the run directory
    run_name: str  # the run directory's name (every attempt writes there)
    entry: Callable[[list[str]], int]  # runs a command line on the allocation (``launch.cli.main``)
    attempt: int = 0  # requeues through submitit so far (SLURM's own requeues re-run attempt 0)

    @property
    def folder(self) -> str:
        return os.path.join(self.run_dir, self.run_name)

    def command(self) -> list[str]:
        """The main.py arguments of every attempt."""
        return list(self.argv) + ["--run-dir", self.run_dir, "--run-name", self.run_name, "--resume"]

    def __call__(self) -> int:
        import submitit

        env = submitit.JobEnvironment()
        if env.num_tasks > 1:
            os.environ.update(distributed_environment(env.global_rank, env.local_rank, env.num_tasks,
                                                      env.hostnames[0], env.job_id))
        code = self.entry(self.command())
        if code > 128:  # stopped by a signal after writing its checkpoint: SLURM or submitit requeues
            raise SystemExit(code)  # not an error result: the next attempt continues the run
        if code != 0:
            raise RuntimeError(f"main.py {' '.join(self.command())} exited with code {code}")
        return code

    def latest_checkpoint(self) -> str | None:
        """The run's newest checkpoint.pt, if one was written yet."""
        path = os.path.join(self.folder, "checkpoint.pt")
        return path if os.path.exists(path) else None

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's preemption/timeout hook: the same command again (it continues the run folder)."""
        import submitit

        following = replace(self, attempt=self.attempt + 1)
        logger.warning("job interrupted: requeueing; the next attempt continues %s from %s", self.folder,
                       self.latest_checkpoint() or "scratch (no checkpoint yet)")
        return submitit.helpers.DelayedSubmission(following)


def submit(args: argparse.Namespace, argv: Sequence[str], config: Any,
           entry: Callable[[list[str]], int]) -> Any:
    """Submit the command of ``argv`` (a ``--submit`` command line), run on the allocation by
    ``entry``, and return the job."""
    import submitit

    run_dir = os.path.abspath(args.run_dir)
    if args.run_name:  # an existing folder is continued (as a rerun of the command would)
        folder = os.path.join(run_dir, args.run_name)
        created = not os.path.isdir(folder)
        os.makedirs(folder, exist_ok=True)
    else:
        folder, created = create_run_dir(run_dir, default_run_name(args.identifier, args.mode)), True
    run_name = os.path.basename(folder)
    job_argv = strip_flags(argv, {**SUBMIT_FLAGS, **_JOB_FLAGS})
    if args.config_yml:  # the job may start in another directory: the config by absolute path
        job_argv = strip_flags(job_argv, {"--config-yml": True}) + ["--config-yml", os.path.abspath(args.config_yml)]
    if args.checkpoint:
        job_argv = strip_flags(job_argv, {"--checkpoint": True}) + ["--checkpoint", os.path.abspath(args.checkpoint)]
    job = TrainingJob(job_argv, run_dir, run_name, entry)
    logs = os.path.join(run_dir, "slurm", "%j")
    try:
        executor = submitit.AutoExecutor(folder=logs, cluster=os.environ.get(CLUSTER_ENV) or None,
                                         slurm_max_num_timeout=MAX_TIMEOUT_REQUEUES)
        executor.update_parameters(**executor_parameters(args, config, run_name))
        submitted = executor.submit(job)
    except BaseException:
        if created:  # a failed submission leaves no folder behind
            shutil.rmtree(folder, ignore_errors=True)
        raise
    print(f"submitted job {submitted.job_id}: run directory {folder}, "
          f"logs {logs.replace('%j', str(submitted.job_id))}", file=sys.stderr, flush=True)
    return submitted
