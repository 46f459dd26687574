"""Starting a run (training, evaluation, relaxation): this process's device, process group
and seed, and the run directory with the resolved config and the loggers."""
from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass

import numpy as np
import torch

from spinconv_train import distributed as dist
from spinconv_train.config import Config, save_config
from spinconv_train.loggers import MultiLogger, build_loggers


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


class RunDirectoryExistsError(ValueError):
    """``--run-name`` names a folder that already exists."""


def default_run_name(identifier: str, mode: str) -> str:
    """``<timestamp>[-<identifier>][-<mode>]`` (no mode suffix for training runs)."""
    stamp = time.strftime("%Y-%m-%d-%H-%M-%S")
    base = f"{stamp}-{identifier}" if identifier else stamp
    return base if mode == "train" else f"{base}-{mode}"


def make_run_dir(options: RunOptions, mode: str) -> str:
    """``<run_dir>/<timestamp>[-<identifier>]``, or ``<run_dir>/<run_name>`` when given
    (a new folder; rank 0 creates it)."""
    name = None
    if dist.is_main() and options.run_name:
        name = os.path.join(options.run_dir, options.run_name)
        try:
            os.makedirs(name)
        except FileExistsError:
            raise RunDirectoryExistsError(
                f"--run-name {options.run_name!r}: {name!r} already exists; runs never write into an "
                "existing run directory (resume with --checkpoint and a new name)") from None
    elif dist.is_main():
        base = default_run_name(options.identifier, mode)
        name = os.path.join(options.run_dir, base)
        suffix = 1
        while os.path.exists(name):
            suffix += 1
            name = os.path.join(options.run_dir, f"{base}-{suffix}")
        os.makedirs(name)
    return str(dist.broadcast_object(name))


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


def open_run_dir(config: Config, options: RunOptions, mode: str) -> tuple[str, MultiLogger]:
    """A new run directory holding ``config.yml``, and the run's loggers (none off rank 0)."""
    run_dir = make_run_dir(options, mode)
    if dist.is_main():
        save_config(config, os.path.join(run_dir, "config.yml"))
    loggers = build_loggers(run_dir, config) if dist.is_main() else MultiLogger([])
    return run_dir, loggers
