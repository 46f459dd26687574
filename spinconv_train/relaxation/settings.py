"""The relaxation settings of a config (``task.relax_dataset``, ``task.relax_opt``,
``task.write_trajectories``), checked with errors that name the key and the file.

Layout (as the reference's configs)::

    task:
      relax_dataset: {src: data/oc20_mini/is2re/val_id}   # any dataset config; name: lmdb default
      relax_opt: {name: lbfgs, fmax: 0.05, steps: 200, maxstep: 0.04,
                  memory: 50, damping: 1.0, alpha: 70.0,   # optimiser-specific keys optional
                  relax_cell: false,                       # true: cell too (needs the stress)
                  batch_size: 8}                           # structures relaxed together (batched model calls)
      write_trajectories: false                             # one ASE .traj per system when true
      write_relaxed_structures: true                        # relaxed.extxyz with every relaxed system
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from spinconv_train.config import Config

# Optimiser name -> (ase.optimize class name, extra constructor keys with defaults).
# LBFGS defaults follow the reference's ML relaxation (memory 50, damping 1, alpha 70).
OPTIMIZERS: dict[str, tuple] = {
    "lbfgs": ("LBFGS", {"memory": 50, "damping": 1.0, "alpha": 70.0}),
    "bfgs": ("BFGS", {"alpha": 70.0}),
    "fire": ("FIRE", {"dt": 0.1, "dtmax": 1.0}),
}
COMMON_KEYS = {"name": "lbfgs", "fmax": 0.05, "steps": 200, "maxstep": 0.04}
# Structures relaxed at once, each with its own optimiser, sharing batched model calls
# (spinconv_train/calculators/batched.py); 1 relaxes them one after another.
DEFAULT_BATCH_SIZE = 8


class OptionError(ValueError):
    """A bad ``relax_opt`` value; ``key`` is the dotted key it concerns."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"key '{key}': {message}")
        self.message = message


@dataclass
class RelaxOptions:
    """One optimiser choice: ``name`` (lbfgs / bfgs / fire), convergence ``fmax`` (eV/Å,
    largest force norm over free atoms), ``steps`` (at most), ``maxstep`` (Å) and the
    optimiser's own keyword arguments in ``extra``."""

    name: str = "lbfgs"
    fmax: float = 0.05
    steps: int = 200
    maxstep: float = 0.04
    extra: dict[str, float] = field(default_factory=dict)
    relax_cell: bool = False
    batch_size: int = DEFAULT_BATCH_SIZE

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any], where: str = "task.relax_opt") -> RelaxOptions:
        """Check ``section`` (a ``relax_opt`` mapping); an ``OptionError`` names the bad key."""
        if not isinstance(section, Mapping):
            raise OptionError(where, f"must be a mapping, got {type(section).__name__}")
        name = str(section.get("name", COMMON_KEYS["name"])).lower()
        if name not in OPTIMIZERS:
            raise OptionError(f"{where}.name", f"unknown optimiser {section.get('name')!r}; "
                             f"known: {', '.join(OPTIMIZERS)}")
        own = OPTIMIZERS[name][1]
        relax_cell = section.get("relax_cell", False)
        if not isinstance(relax_cell, bool):
            raise OptionError(f"{where}.relax_cell", f"must be true or false, got {relax_cell!r}")
        batch_size = section.get("batch_size", DEFAULT_BATCH_SIZE)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise OptionError(f"{where}.batch_size", f"must be an integer >= 1, got {batch_size!r}")
        section = {key: value for key, value in section.items() if key not in ("relax_cell", "batch_size")}
        unknown = sorted(set(section) - set(COMMON_KEYS) - set(own))
        if unknown:
            raise OptionError(f"{where}.{unknown[0]}", f"unknown for optimiser {name!r}; known keys: "
                             f"{', '.join(sorted(set(COMMON_KEYS) | set(own) | {'relax_cell', 'batch_size'}))}")
        values = {key: section.get(key, default) for key, default in {**COMMON_KEYS, **own}.items() if key != "name"}
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise OptionError(f"{where}.{key}", f"must be a positive number, got {value!r}")
        if int(values["steps"]) != values["steps"]:
            raise OptionError(f"{where}.steps", f"must be an integer, got {values['steps']!r}")
        extra = {key: values[key] for key in own}
        if name == "lbfgs":
            extra["memory"] = int(extra["memory"])
        return cls(name=name, fmax=float(values["fmax"]), steps=int(values["steps"]),
                   maxstep=float(values["maxstep"]), extra=extra, relax_cell=relax_cell, batch_size=batch_size)


@dataclass
class RelaxSettings:
    """Everything ``--mode run-relaxations`` reads from the config."""

    dataset: dict[str, Any]
    options: RelaxOptions
    write_trajectories: bool = False
    write_relaxed_structures: bool = True


def relax_settings(config: Config) -> RelaxSettings:
    """The relaxation settings of ``config``; a ``ConfigError`` names the key and its file."""
    task = config["task"]
    dataset = task.get("relax_dataset")
    if not dataset:
        raise config.fail("task.relax_dataset", "run-relaxations reads its structures from "
                          "task.relax_dataset: {src: <lmdb file or folder>} (none given; "
                          "on the command line: --task.relax_dataset.src=PATH)")
    if not isinstance(dataset, Mapping) or "src" not in dataset:
        raise config.fail("task.relax_dataset", "missing key 'src' (the data path)")
    try:
        options = RelaxOptions.from_mapping(task.get("relax_opt") or {})
    except OptionError as err:
        raise config.fail(err.key, err.message) from None
    return RelaxSettings(dataset=dict(dataset), options=options,
                         write_trajectories=bool(task.get("write_trajectories", False)),
                         write_relaxed_structures=bool(task.get("write_relaxed_structures", True)))
