"""Hyperparameter sweeps: ``main.py --mode train --config-yml C --sweep-yml S``.

``S`` maps config keys (dotted, as on the command line) to lists of values; every
combination of one value per key (the grid) becomes one training run, with those values as
overrides on top of the config and the command line::

    optim.lr_initial: [1.0e-3, 5.0e-4]
    seed: [0, 1, 2]            # three seeds: e.g. a committee of models

Locally the runs follow one another; with ``--submit`` each is its own SLURM job. Run
directories are ``<name>-<label>``, the label naming the combination's values
(``lr_initial-0.001_seed-1``). Every combination's config is resolved and checked before
the first run starts, so a bad key or value fails the sweep at once.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from spinconv_train.atomic_files import write_text_atomic
from spinconv_train.config import Config, ConfigError
from spinconv_train.launch import slurm
from spinconv_train.launch.args import UsageError, resolve_config
from spinconv_train.rundir import default_run_name
from spinconv_train.tables import format_table


@dataclass(frozen=True)
class SweepPoint:
    """One combination: its overrides (``--key=value`` strings) and a run-name label."""

    values: dict[str, Any]
    overrides: list[str]
    label: str


def read_sweep(path: str) -> dict[str, list[Any]]:
    """The sweep file's ``{key: [values]}``; errors name the file and the key."""
    try:
        with open(path) as handle:
            data = yaml.safe_load(handle)
    except OSError as err:
        raise ConfigError(f"sweep file {path!r} cannot be read: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"sweep file {path!r} is not valid YAML: {err}") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"sweep file {path!r}: expected a mapping of config keys to lists of values, "
                          f"got {type(data).__name__}")
    for key, values in data.items():
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*", key):
            raise ConfigError(f"sweep file {path!r}: key {key!r} is not a config key such as optim.lr_initial")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep file {path!r}: key {key!r} needs a non-empty list of values, got {values!r}")
    return data


def _label_part(key: str, value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return re.sub(r"[^A-Za-z0-9_.+-]+", "", f"{key.rsplit('.', 1)[-1]}-{text}")


def sweep_points(grid: Mapping[str, list[Any]]) -> list[SweepPoint]:
    """Every combination of one value per key, in the order of the file (last key fastest)."""
    keys = list(grid)
    points = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        values = dict(zip(keys, combo))
        overrides = [f"--{k}={json.dumps(v)}" for k, v in values.items()]
        points.append(SweepPoint(values, overrides, "_".join(_label_part(k, v) for k, v in values.items())))
    labels = [p.label for p in points]
    if len(set(labels)) != len(labels):  # e.g. values that differ only in characters the label drops
        points = [SweepPoint(p.values, p.overrides, f"{i:02d}-{p.label}") for i, p in enumerate(points)]
    return points


def run_sweep(args: argparse.Namespace, overrides: Sequence[str], argv: Sequence[str],
              run: Callable[[argparse.Namespace, Config], dict[str, dict[str, float]]],
              entry: Callable[[list[str]], int]) -> None:
    """One training run per combination of ``args.sweep_yml`` (a parsed ``main.py`` command
    line; ``overrides``: its ``--key=value`` arguments; ``argv``: the whole, for submission).
    ``run`` executes one run here; ``entry`` (``main``) is what a submitted job calls."""

    if args.mode != "train":
        raise UsageError("--sweep-yml sweeps training runs: use it with --mode train")
    if args.checkpoint:
        raise UsageError("--sweep-yml starts new runs, it cannot resume one: leave out --checkpoint (to start "
                         "every run from a trained model use --finetune.checkpoint=PATH)")
    if "WORLD_SIZE" in os.environ:
        raise UsageError("--sweep-yml under torchrun: launch the sweep without torchrun (with --submit and "
                         "--num-gpus every run gets its own GPUs)")
    grid = read_sweep(args.sweep_yml)
    if args.seed is not None and "seed" in grid:
        raise UsageError(f"--seed {args.seed} and the sweep's seed values: give one of them")
    base = args.run_name or default_run_name(args.identifier, "train")
    plans = []
    for point in sweep_points(grid):
        try:
            config = resolve_config(args, list(overrides) + point.overrides)
        except ConfigError as err:
            raise ConfigError(f"sweep file {args.sweep_yml!r}, combination {point.label}: {err}") from None
        run_args = argparse.Namespace(**{**vars(args), "run_name": f"{base}-{point.label}", "sweep_yml": None})
        if os.path.exists(os.path.join(args.run_dir, run_args.run_name)):
            raise UsageError(f"run directory {os.path.join(args.run_dir, run_args.run_name)!r} already exists")
        plans.append((point, config, run_args))
    if args.submit:
        job_argv = slurm.strip_flags(argv, {"--sweep-yml": True})
        for point, config, run_args in plans:
            try:
                slurm.submit(run_args, job_argv + point.overrides, config, entry=entry)
            except ValueError as err:
                raise UsageError(str(err)) from None
        return
    results: dict[str, dict[str, Any]] = {}
    for index, (point, config, run_args) in enumerate(plans):
        print(f"sweep run {index + 1}/{len(plans)}: {run_args.run_name} {json.dumps(point.values)}", flush=True)
        history = run(run_args, config)
        results[point.label] = {"run_dir": os.path.join(args.run_dir, run_args.run_name), "values": point.values,
                                "trained": history.get("trained", {})}
    summary = os.path.join(args.run_dir, f"{base}-sweep.json")
    write_text_atomic(summary, json.dumps({"sweep": os.path.abspath(args.sweep_yml), "runs": results}, indent=2))
    rows = {label: r["trained"] for label, r in results.items() if r["trained"]}
    if rows:
        print("sweep, final validation metrics:\n" + format_table(rows), flush=True)
    print(f"sweep summary written to {summary}", flush=True)
