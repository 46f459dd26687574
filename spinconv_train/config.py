"""YAML run configurations: ``includes:``, dotted command-line overrides, validation.

A configuration is a mapping with the sections ``trainer``, ``dataset`` (named splits
``train`` / ``val`` / ``test``), ``task``, ``model``, ``optim``, ``logger`` and ``seed``.
Every key is checked against :data:`SCHEMA`; an error names the dotted key and the file
(or ``command line``) that set it.
"""
from __future__ import annotations

import copy
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from spinconv_train.atomic_files import write_text_atomic  # noqa: F401  (config.write_text_atomic)
from spinconv_train.config_ocp import CompatError, origin_of, translate

CLI_ORIGIN = "command line"
logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration key is unknown, of the wrong type, or its value is invalid."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` (no dot) as a float, as users write it."""


_FLOAT_RE = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_RE, list("-+0123456789."))


def parse_scalar(text: str) -> Any:
    """Parse a command-line override value as a YAML scalar (``1e-4`` -> float)."""
    return yaml.load(text, Loader=_Loader)


# --------------------------------------------------------------------------- schema
# Each leaf is (accepted types, default). ``None`` in the types means the key may be null.
# A section given as ``ANY_KEYS`` accepts any keys (checked later by the consumer).
ANY_KEYS = "any-keys"
# Names of extra validation splits: dataset.val_<name> (e.g. val_ood, val_ood_ads).
EXTRA_VAL_PATTERN = r"val_[A-Za-z0-9_]+"
NUM = (int, float)

SCHEMA: dict[str, Any] = {
    "includes": ((list, str), []),
    "trainer": ((str,), "forces"),
    "seed": ((int,), 0),
    # Floating-point precision of the model and of the batches it sees: float32, or float64
    # (slower; for force fields meant for long MD, as MACE and NequIP offer).
    "precision": ((str,), "float32"),
    "dataset": {
        # Each split is a mapping given to the dataset class; `src` is required.
        "train": ANY_KEYS,
        "val": ANY_KEYS,
        "test": ANY_KEYS,
        # More validation splits, evaluated and logged with `val` (which alone selects the
        # best checkpoint and drives the plateau schedule and early stopping).
        "__pattern__": EXTRA_VAL_PATTERN,
    },
    "task": {
        "dataset": ((str,), "lmdb"),
        # description / type / grad_input: descriptive (as in the reference configs), not read.
        "description": ((str,), ""),
        "type": ((str,), "regression"),
        "grad_input": ((str, None), None),
        "metric": ((str, None), None),
        "labels": ((list,), []),
        "target": ((str, None), None),
        "target_indices": ((list, None), None),
        "train_on_free_atoms": ((bool,), True),
        "eval_on_free_atoms": ((bool,), True),
        # forces trainer: also forces_mae / forces_cos per OC20 tag (subsurface, surface, adsorbate)
        "metrics_by_tag": ((bool,), False),
        "normalize_labels": ((bool,), True),
        "normalizer": ((dict, None), None),
        "normalizer_fit_samples": ((int,), 10000),
        "element_references": ((bool,), False),
        # --mode run-relaxations (checked in detail by spinconv_train/relaxation/settings.py)
        "relax_dataset": ANY_KEYS,
        "relax_opt": ANY_KEYS,
        "write_trajectories": ((bool,), False),
        "write_relaxed_structures": ((bool,), True),
    },
    "model": {"name": ((str,), None), "__extra__": ANY_KEYS},
    "optim": {
        "batch_size": ((int,), 8),
        "eval_batch_size": ((int, None), None),
        "num_workers": ((int,), 0),
        "optimizer": ((str,), "Adam"),
        "optimizer_params": ((dict,), {}),
        "lr_initial": (NUM, 1e-3),
        "weight_decay": (NUM, 0.0),
        "scheduler": ((str, None), None),
        "warmup_steps": ((int,), 0),
        "warmup_factor": (NUM, 0.2),
        "lr_milestones": ((list,), []),
        "lr_gamma": (NUM, 0.1),
        "lr_min_factor": (NUM, 0.0),
        "mode": ((str, None), None),
        "factor": (NUM, 0.8),
        "patience": ((int,), 3),
        "threshold": (NUM, 1e-4),
        "max_epochs": ((int, None), 1),
        "max_steps": ((int, None), None),
        "eval_every": ((int, None), None),
        "checkpoint_every": ((int, None), None),
        "energy_coefficient": (NUM, 1.0),
        "force_coefficient": (NUM, 30.0),
        "loss_energy": ((str,), "mae"),
        # forces trainer: the energy loss on errors per atom (E/N), for data whose structures
        # differ much in size (the normaliser still works on totals)
        "energy_per_atom": ((bool,), False),
        "loss_force": ((str,), "mae"),
        "stress_coefficient": (NUM, 0.0),
        "loss_stress": ((str,), "mae"),
        "clip_grad_norm": (NUM + (None,), None),
        # micro-batches whose gradients add up to one optimiser step (effective batch = batch_size x this)
        "accumulate_grad_batches": ((int,), 1),
        "ema_decay": (NUM + (None,), None),
        "eval_max_batches": ((int, None), None),
        # Early stopping, checked at each validation: stop after this many validations without a
        # new best monitored metric, or once the learning rate has fallen below min_lr.
        "early_stopping_patience": ((int, None), None),
        "min_lr": (NUM + (None,), None),
    },
    # Start a training run from a trained checkpoint's weights (spinconv_train/checkpoints/pretrained.py).
    "finetune": {
        "checkpoint": ((str, None), None),
        "weights": ((str,), "auto"),
        "targets": ((str,), "checkpoint"),
        "freeze": ((list,), []),
    },
    "logger": {
        "backends": ((list,), []),
        "project": ((str,), "spinconv_train"),
        "entity": ((str, None), None),
        "print_every": ((int,), 10),
        "progress_bar": ((bool,), True),
    },
}


# --------------------------------------------------------------------------- loading
def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        with open(path) as handle:
            data = yaml.load(handle, Loader=_Loader)
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping, got {type(data).__name__}")
    return data


def _merge(base: dict[str, Any], extra: Mapping[str, Any], origins: dict[str, str],
           origin: str | None, prefix: str = "") -> None:
    """Deep-merge ``extra`` into ``base`` in place, recording each leaf's origin (unless
    ``origin`` is None: the origins were recorded when ``extra`` was read)."""
    for key, value in extra.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value, origins, origin, dotted + ".")
        else:
            base[key] = copy.deepcopy(value)
            if origin is not None:
                for leaf in _leaves(value, dotted):
                    origins[leaf] = origin
                origins[dotted] = origin


def _leaves(value: Any, dotted: str) -> Iterable[str]:
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from _leaves(sub, f"{dotted}.{key}")
    else:
        yield dotted


def _load_with_includes(path: Path, origins: dict[str, str], stack: tuple[Path, ...]) -> dict[str, Any]:
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(str(p) for p in (*stack, path))
        raise ConfigError(f"config includes form a cycle: {chain}")
    data = _read_yaml(path)
    includes = data.pop("includes", [])
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise ConfigError(f"config file {str(path)!r}: key 'includes' must be a list of paths")
    merged: dict[str, Any] = {}
    for include in includes:
        target = resolve_include(path, include)
        _merge(merged, _load_with_includes(target, origins, (*stack, path)), origins, None)
    _merge(merged, data, origins, str(path))
    return merged


def resolve_include(including: Path, include: str) -> Path:
    """The file an ``includes:`` entry names: as OCP resolves it, relative to the working
    directory first, then relative to the including file's folder. When both exist and are
    different files, the working directory's is used and a warning says so."""
    candidates = [Path(include)] if os.path.isabs(include) else [Path.cwd() / include, including.parent / include]
    found = [c for c in candidates if c.is_file()]
    if not found:
        looked = " and ".join(repr(str(c)) for c in candidates)
        raise ConfigError(f"config file {str(including)!r}: included file {include!r} not found (looked for {looked})")
    if len(found) == 2 and found[0].resolve() != found[1].resolve():
        logger.warning("config file %r: include %r exists relative to the working directory (%s) and to the "
                       "including file's folder (%s); using the working directory's, as OCP does",
                       str(including), include, found[0], found[1])
    return found[0]


def parse_overrides(items: Sequence[str]) -> list[tuple[str, Any]]:
    """Turn ``["--optim.lr_initial=1e-4", "--model.x", "2"]`` into ``[(key, value), ...]``."""
    pairs: list[tuple[str, Any]] = []
    i = 0
    while i < len(items):
        item = items[i]
        if not item.startswith("--") or len(item) <= 2:
            raise ConfigError(f"{CLI_ORIGIN}: cannot read override {item!r}; use --section.key=value")
        body = item[2:]
        if "=" in body:
            key, text = body.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(items) or items[i + 1].startswith("--"):
                raise ConfigError(f"{CLI_ORIGIN}: override {item!r} has no value; use --{body}=value")
            key, text = body, items[i + 1]
            i += 2
        if "." not in key and key not in SCHEMA:
            raise ConfigError(f"{CLI_ORIGIN}: unknown option or config key {item!r}")
        pairs.append((key, parse_scalar(text)))
    return pairs


def apply_overrides(config: dict[str, Any], pairs: Sequence[tuple[str, Any]],
                    origins: dict[str, str] | None = None) -> None:
    """Set dotted keys in ``config`` (creating mappings on the way)."""
    for key, value in pairs:
        parts = key.split(".")
        node = config
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
        if origins is not None:
            for leaf in _leaves(value, key):
                origins[leaf] = CLI_ORIGIN
            origins[key] = CLI_ORIGIN


class Config(dict):
    """A resolved configuration (a plain dict) that remembers where each key came from."""

    origins: dict[str, str]

    def origin(self, dotted: str) -> str:
        """The file (or ``command line``) that set ``dotted``, or its nearest parent's."""
        return origin_of(self.origins, dotted)

    def fail(self, dotted: str, message: str) -> ConfigError:
        """Build a ConfigError naming ``dotted`` and where it was set; for a section, also the
        keys under it that the command line set (any of them may be the culprit)."""
        where = self.origin(dotted)
        from_cli = sorted(key for key, origin in self.origins.items()
                          if origin == CLI_ORIGIN and key.startswith(dotted + "."))
        if from_cli and where != CLI_ORIGIN:
            where += f" (and the command line: {', '.join(from_cli)})"
        return ConfigError(f"{where}: key '{dotted}': {message}")


def load_config(path: str | None, overrides: Sequence[str] = (), base: Mapping[str, Any] | None = None) -> Config:
    """Load ``path`` (with includes) over ``base``, apply overrides, fill defaults, validate."""
    origins: dict[str, str] = {}
    data: dict[str, Any] = {}
    if base is not None:
        _merge(data, base, origins, "checkpoint config")
    if path is not None:
        _merge(data, _load_with_includes(Path(path), origins, ()), origins, None)
    apply_overrides(data, parse_overrides(list(overrides)), origins)
    return _validated(data, origins)


def config_from_dict(data: Mapping[str, Any], origin: str = "config") -> Config:
    """Validate an in-memory configuration (tests, checkpoints)."""
    origins: dict[str, str] = {}
    merged: dict[str, Any] = {}
    _merge(merged, data, origins, origin)
    return _validated(merged, origins)


def _validated(data: dict[str, Any], origins: dict[str, str]) -> Config:
    """Wrap merged data as a Config: normalise, validate against the schema, fill defaults."""
    try:
        translate(data, origins)
    except CompatError as err:
        raise ConfigError(str(err)) from None
    config = Config(data)
    config.origins = origins
    _normalise_logger(config)
    _validate(config, SCHEMA, config, "")
    _fill_defaults(config, SCHEMA)
    _check_values(config)
    return config


def _normalise_logger(config: Config) -> None:
    logger = config.get("logger")
    if logger is None:
        config["logger"] = {}
    elif isinstance(logger, str):
        config["logger"] = {"backends": [logger]}
    elif isinstance(logger, list):
        config["logger"] = {"backends": list(logger)}
    elif isinstance(logger, dict) and "name" in logger:
        # The reference's `logger: {name: wandb, project: x}` form.
        logger = dict(logger)
        logger.setdefault("backends", [logger.pop("name")])
        config["logger"] = logger


def _type_name(types: tuple[Any, ...]) -> str:
    names = ["null" if t is None else t.__name__ for t in types]
    if "int" in names and "float" in names:
        names = ["number" if n in ("int", "float") else n for n in names]
    return " or ".join(dict.fromkeys(names))


def _validate(node: Mapping[str, Any], schema: Mapping[str, Any], config: Config, prefix: str) -> None:
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if key not in schema:
            if "__extra__" in schema:
                continue
            pattern = schema.get("__pattern__")
            if pattern is None or not re.fullmatch(pattern, key):
                known = ", ".join(k for k in schema if not k.startswith("__"))
                if pattern is not None:
                    known += f", or names matching {pattern}"
                raise config.fail(dotted, f"unknown key; known keys here: {known}")
            spec = ANY_KEYS
        else:
            spec = schema[key]
        if spec == ANY_KEYS:
            if not isinstance(value, dict):
                raise config.fail(dotted, f"must be a mapping, got {type(value).__name__} {value!r}")
            continue
        if isinstance(spec, dict):
            if not isinstance(value, dict):
                raise config.fail(dotted, f"must be a mapping, got {type(value).__name__} {value!r}")
            _validate(value, spec, config, dotted + ".")
            continue
        types, _ = spec
        if value is None and None in types:
            continue
        concrete = tuple(t for t in types if t is not None)
        ok = isinstance(value, concrete) and not (isinstance(value, bool) and bool not in concrete)
        if not ok:
            raise config.fail(dotted, f"expected {_type_name(types)}, got {type(value).__name__} {value!r}")


def _fill_defaults(node: dict[str, Any], schema: Mapping[str, Any]) -> None:
    for key, spec in schema.items():
        if key.startswith("__") or spec == ANY_KEYS:
            continue
        if isinstance(spec, dict):
            if key == "dataset":
                node.setdefault(key, {})
                continue
            _fill_defaults(node.setdefault(key, {}), spec)
        elif key not in node:
            node[key] = copy.deepcopy(spec[1])


_LOSSES = ("mae", "mse", "l2mae")
_OPTIMIZERS = ("adam", "adamw")
_SCHEDULERS = ("constant", "step", "cosine", "reducelronplateau", "plateau")


PRECISIONS = {"float32": "float32", "float64": "float64", "fp32": "float32", "fp64": "float64",
              "single": "float32", "double": "float64"}


def _check_values(config: Config) -> None:
    """Checks of values that the types alone do not catch."""
    if config["precision"] not in PRECISIONS:
        raise config.fail("precision", f"unknown precision {config['precision']!r}; use float32 or float64")
    config["precision"] = PRECISIONS[config["precision"]]
    optim = config["optim"]
    if optim["energy_per_atom"] and config["trainer"] not in ("forces", "s2ef"):
        raise config.fail("optim.energy_per_atom", f"applies to the forces trainer's energy loss; trainer "
                          f"{config['trainer']!r} regresses its targets per structure")
    for key in ("loss_energy", "loss_force", "loss_stress"):
        if optim[key].lower() not in _LOSSES:
            raise config.fail(f"optim.{key}", f"unknown loss {optim[key]!r}; known: {', '.join(_LOSSES)}")
    if optim["optimizer"].lower() not in _OPTIMIZERS:
        raise config.fail("optim.optimizer", f"unknown optimizer {optim['optimizer']!r}; known: Adam, AdamW")
    if optim["scheduler"] is not None and optim["scheduler"].lower() not in _SCHEDULERS:
        raise config.fail("optim.scheduler", f"unknown scheduler {optim['scheduler']!r}; known: "
                          "constant, step, cosine, ReduceLROnPlateau")
    if optim["mode"] is not None and optim["mode"] not in ("min", "max"):
        raise config.fail("optim.mode", f"must be 'min' or 'max', got {optim['mode']!r}")
    for key in ("energy_coefficient", "force_coefficient", "stress_coefficient"):
        if not optim[key] >= 0:
            raise config.fail(f"optim.{key}", f"must be >= 0, got {optim[key]}")
    _check_ranges(config)
    if optim["early_stopping_patience"] is not None and optim["early_stopping_patience"] < 1:
        raise config.fail("optim.early_stopping_patience", f"must be >= 1 (or null), got {optim['early_stopping_patience']}")
    if optim["min_lr"] is not None and not optim["min_lr"] > 0:
        raise config.fail("optim.min_lr", f"must be > 0 (or null), got {optim['min_lr']}")
    if optim["max_epochs"] is None and optim["max_steps"] is None:
        raise config.fail("optim.max_epochs", "set optim.max_epochs or optim.max_steps")
    if "name" not in config.get("model", {}) or not config["model"]["name"]:
        raise config.fail("model.name", "missing: name the model (e.g. spinconv, schnet)")
    _check_finetune(config)
    for split, value in config["dataset"].items():
        if "src" not in value:
            raise config.fail(f"dataset.{split}", "missing key 'src' (the data path)")
    extra = extra_val_splits(config)
    if extra and "val" not in config["dataset"]:
        raise config.fail(f"dataset.{extra[0]}", "extra validation splits need dataset.val (the split that "
                          "selects the best checkpoint)")


# optim keys and the range each must lie in: (lower, lower inclusive, upper, upper inclusive);
# None bounds are open. A null value passes where the key may be null.
_RANGES: dict[str, tuple[float | None, bool, float | None, bool]] = {
    "lr_initial": (0, False, None, False),
    "weight_decay": (0, True, None, False),
    "lr_gamma": (0, False, None, False),
    "warmup_factor": (0, True, 1, True),
    "warmup_steps": (0, True, None, False),
    "lr_min_factor": (0, True, 1, True),
    "factor": (0, False, 1, False),
    "patience": (0, True, None, False),
    "threshold": (0, True, None, False),
    "ema_decay": (0, True, 1, False),
    "clip_grad_norm": (0, False, None, False),
    "batch_size": (1, True, None, False),
    "accumulate_grad_batches": (1, True, None, False),
    "eval_batch_size": (1, True, None, False),
    "num_workers": (0, True, None, False),
    "max_steps": (1, True, None, False),
    "eval_every": (1, True, None, False),
    "checkpoint_every": (1, True, None, False),
    "eval_max_batches": (1, True, None, False),
}


def _check_ranges(config: Config) -> None:
    """Each optim number in its range (a negative learning rate, a decay of 1, ...); NaN fails."""
    optim = config["optim"]
    for key, (low, low_in, high, high_in) in _RANGES.items():
        value = optim.get(key)
        if value is None:
            continue
        ok = (low is None or (value >= low if low_in else value > low)) and \
             (high is None or (value <= high if high_in else value < high))
        if not ok:
            bounds = []
            if low is not None:
                bounds.append(f"{'>=' if low_in else '>'} {low}")
            if high is not None:
                bounds.append(f"{'<=' if high_in else '<'} {high}")
            raise config.fail(f"optim.{key}", f"must be {' and '.join(bounds)}, got {value}")


def extra_val_splits(config: Mapping[str, Any]) -> list[str]:
    """The ``dataset.val_<name>`` splits, in config order."""
    return [split for split in config.get("dataset", {}) if re.fullmatch(EXTRA_VAL_PATTERN, split)]


FINETUNE_WEIGHTS = ("auto", "ema", "model")
FINETUNE_TARGETS = ("checkpoint", "fit")


def _check_finetune(config: Config) -> None:
    section = config["finetune"]
    for key, known in (("weights", FINETUNE_WEIGHTS), ("targets", FINETUNE_TARGETS)):
        if section[key] not in known:
            raise config.fail(f"finetune.{key}", f"must be one of {', '.join(known)}; got {section[key]!r}")
    bad = [p for p in section["freeze"] if not isinstance(p, str) or not p]
    if bad:
        raise config.fail("finetune.freeze", f"must list parameter-name prefixes (strings); got {bad!r}")


# `src` values that name a source other than a path (the qm9 dataset's installed package).
NON_PATH_SOURCES = frozenset({"qm9pack"})


def check_dataset_paths(config: Config, splits: Iterable[str]) -> None:
    """Raise a ConfigError naming the key and file when a split's ``src`` does not exist."""
    for split in splits:
        if split not in config["dataset"]:
            raise config.fail(f"dataset.{split}", "this run needs the split but the config has none")
        check_source_paths(config, f"dataset.{split}.src", config["dataset"][split]["src"])


def check_source_paths(config: Config, key: str, src: Any) -> None:
    """Raise a ConfigError naming ``key`` when ``src`` (a path or a list of paths) is not a
    path or does not exist."""
    for path in (src if isinstance(src, list) else [src]):
        if not isinstance(path, str):
            raise config.fail(key, f"must be a path (or a list of paths), got {path!r}")
        if path not in NON_PATH_SOURCES and not os.path.exists(path):
            raise config.fail(key, f"path {path!r} does not exist")


def plain(config: Mapping[str, Any]) -> dict[str, Any]:
    """A plain-dict deep copy (no origins) suitable for YAML, checkpoints and comparisons."""
    return copy.deepcopy(dict(config))


def save_config(config: Mapping[str, Any], path: str) -> None:
    """Write the resolved configuration as YAML atomically."""
    write_text_atomic(path, yaml.safe_dump(plain(config), sort_keys=False))
