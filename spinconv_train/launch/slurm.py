"""SLURM submission with submitit: ``main.py ... --submit``, and requeue on preemption.

The submitting process names the run (``<timestamp>[-<identifier>]``), builds a submitit
executor from the SLURM flags and submits a :class:`TrainingJob` that calls its ``entry``
(the command line's ``main``, passed in by the caller) with the same arguments on the
allocation. With ``--num-gpus N`` every node runs N tasks,
one per GPU; each task gets the RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR /
MASTER_PORT variables that ``torchrun`` would set, so the distributed code path is the
same for both launchers.

Preemption and time limits: SLURM signals the job ``slurm_signal_delay_s`` before it kills
it; submitit then calls :meth:`TrainingJob.checkpoint`, which resubmits the command with
``--checkpoint`` pointing at the newest ``checkpoint.pt`` of the run, and requeues the
job (after a time limit up to ``MAX_TIMEOUT_REQUEUES`` times; preemptions always). The
resumed attempt writes to ``<run>-requeue<k>`` (runs never write into an existing
directory), continuing from the saved step, sampler position and RNG state; work since the
last checkpoint (``optim.checkpoint_every`` steps, or the last evaluation) is redone.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from spinconv_train.rundir import default_run_name

logger = logging.getLogger(__name__)

# Flags that only concern the submission (with whether they take a value).
SUBMIT_FLAGS: dict[str, bool] = {
    "--submit": False, "--num-gpus": True, "--num-nodes": True, "--slurm-partition": True,
    "--slurm-mem": True, "--slurm-timeout": True,
}
# Flags the job sets itself on every attempt.
_JOB_FLAGS: dict[str, bool] = {"--run-name": True, "--checkpoint": True, "--run-dir": True}
# submitit's cluster choice; "local" runs the job as a local subprocess (tests, debugging).
CLUSTER_ENV = "SPINCONV_SUBMITIT_CLUSTER"
SIGNAL_DELAY_S = 120
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
        "slurm_signal_delay_s": SIGNAL_DELAY_S,
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

    Having a ``checkpoint`` method is what makes submitit requeue it when interrupted.
    """

    argv: list[str]  # the main.py command without submission and run-directory flags
    run_dir: str  # absolute parent folder of the run directories
    run_name: str  # the first attempt's run directory name
    entry: Callable[[list[str]], int]  # runs a command line on the allocation (``launch.cli.main``)
    attempt: int = 0
    resume_from: str | None = None  # checkpoint.pt the attempt starts from

    @property
    def attempt_name(self) -> str:
        return self._name(self.attempt)

    @property
    def history(self) -> list[str]:
        """Run directory names of the earlier attempts."""
        return [self._name(k) for k in range(self.attempt)]

    def _name(self, attempt: int) -> str:
        return self.run_name if attempt == 0 else f"{self.run_name}-requeue{attempt}"

    def command(self) -> list[str]:
        """The main.py arguments of this attempt."""
        argv = list(self.argv) + ["--run-dir", self.run_dir, "--run-name", self.attempt_name]
        if self.resume_from:
            argv += ["--checkpoint", self.resume_from]
        return argv

    def __call__(self) -> int:
        import submitit

        env = submitit.JobEnvironment()
        if env.num_tasks > 1:
            os.environ.update(distributed_environment(env.global_rank, env.local_rank, env.num_tasks,
                                                      env.hostnames[0], env.job_id))
        code = self.entry(self.command())
        if code != 0:
            raise RuntimeError(f"main.py {' '.join(self.command())} exited with code {code}")
        return code

    def latest_checkpoint(self) -> str | None:
        """The newest checkpoint.pt of this run: this attempt's, else the one it resumed from."""
        path = os.path.join(self.run_dir, self.attempt_name, "checkpoint.pt")
        return path if os.path.exists(path) else self.resume_from

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's preemption/timeout hook: the same command, resumed from the newest
        checkpoint, as the next attempt."""
        import submitit

        following = replace(self, attempt=self.attempt + 1, resume_from=self.latest_checkpoint())
        logger.warning("job interrupted: requeueing as %s (resuming from %s)", following.attempt_name,
                       following.resume_from or "scratch: no checkpoint yet")
        return submitit.helpers.DelayedSubmission(following)


def submit(args: argparse.Namespace, argv: Sequence[str], config: Any,
           entry: Callable[[list[str]], int]) -> Any:
    """Submit the command of ``argv`` (a ``--submit`` command line), run on the allocation by
    ``entry``, and return the job."""
    import submitit

    run_dir = os.path.abspath(args.run_dir)
    run_name = args.run_name or default_run_name(args.identifier, args.mode)
    if os.path.exists(os.path.join(run_dir, run_name)):
        raise ValueError(f"run directory {os.path.join(run_dir, run_name)!r} already exists")
    job_argv = strip_flags(argv, {**SUBMIT_FLAGS, **_JOB_FLAGS})
    if args.config_yml:  # the job may start in another directory: the config by absolute path
        job_argv = strip_flags(job_argv, {"--config-yml": True}) + ["--config-yml", os.path.abspath(args.config_yml)]
    resume = os.path.abspath(args.checkpoint) if args.checkpoint else None
    job = TrainingJob(job_argv, run_dir, run_name, entry, resume_from=resume)
    folder = os.path.join(run_dir, "slurm", "%j")
    executor = submitit.AutoExecutor(folder=folder, cluster=os.environ.get(CLUSTER_ENV) or None,
                                     slurm_max_num_timeout=MAX_TIMEOUT_REQUEUES)
    executor.update_parameters(**executor_parameters(args, config, run_name))
    submitted = executor.submit(job)
    print(f"submitted job {submitted.job_id}: run directory {os.path.join(run_dir, run_name)}, "
          f"logs {folder.replace('%j', str(submitted.job_id))}", file=sys.stderr, flush=True)
    return submitted
