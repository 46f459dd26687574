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

import itertools
import json
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping

import yaml

from spinconv_train.config import ConfigError


@dataclass(frozen=True)
class SweepPoint:
    """One combination: its overrides (``--key=value`` strings) and a run-name label."""

    values: Dict[str, Any]
    overrides: List[str]
    label: str


def read_sweep(path: str) -> Dict[str, List[Any]]:
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


def sweep_points(grid: Mapping[str, List[Any]]) -> List[SweepPoint]:
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
