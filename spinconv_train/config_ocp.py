"""OCP (ocp v0.x) config keys -> this project's settings, applied before validation.

:func:`translate` rewrites, in place, a merged configuration mapping that may be written in
the Open Catalyst Project's form: the positional ``dataset: [train, val, test]`` list with
per-split normaliser statistics, the task / optim / model keys of OCP's trainers. Every OCP
key is either mapped onto a native setting or accepted with one warning line naming it
(where it has no effect here); a value this project cannot honour is an error naming the
key. Native configurations pass through unchanged. docs/ocp.md has the table.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

logger = logging.getLogger("spinconv_train.ocp")

SPLIT_NAMES = ("train", "val", "test")
# Per-split keys of OCP's dataset entries that are not dataset settings here.
STAT_KEYS = ("target_mean", "target_std", "grad_target_mean", "grad_target_std")
SPLIT_KEYS = ("normalize_labels", *STAT_KEYS, "train_on_oc20_total_energies", "oc20_ref", "lin_ref")
TASK_KEYS = ("primary_metric", "relaxation_steps", "relaxation_fmax", "write_pos", "num_relaxation_batches",
             "eval_relaxations", "save_full_traj", "prediction_dtype", "strict_load",
             "set_deterministic_scatter")
OPTIM_KEYS = ("load_balancing",)
TOP_KEYS = ("slurm",)
# The metric OCP's trainers select checkpoints by when task.primary_metric is not set.
OCP_DEFAULT_METRIC = {"forces": "energy_force_within_threshold", "s2ef": "energy_force_within_threshold",
                      "energy": "energy_mae", "is2re": "energy_mae"}
HIGHER_IS_BETTER = ("energy_within_threshold", "energy_force_within_threshold", "forces_cos",
                    "average_distance_within_threshold")
GRADIENT_FORCE_MODELS = ("schnet", "dimenetplusplus", "dimenet++")
_NONE_VALUES = (None, False, "None", "none", "null", "")


class CompatError(ValueError):
    """An OCP key whose value this project cannot honour; the message names key and file."""


def is_ocp_form(data: Mapping[str, Any]) -> bool:
    """True when ``data`` uses a form only OCP's configs use (a positional dataset list, a
    split with normaliser statistics, an OCP-only task / optim / top-level key)."""
    dataset = data.get("dataset")
    if isinstance(dataset, list) or (isinstance(dataset, dict) and "src" in dataset):
        return True
    if isinstance(dataset, dict) and any(isinstance(s, dict) and set(s) & set(SPLIT_KEYS) for s in dataset.values()):
        return True
    task, optim = data.get("task"), data.get("optim")
    return (isinstance(task, dict) and bool(set(task) & set(TASK_KEYS))) or \
        (isinstance(optim, dict) and bool(set(optim) & set(OPTIM_KEYS))) or bool(set(data) & set(TOP_KEYS))



def origin_of(origins: Mapping[str, str], dotted: str) -> str:
    """The file (or ``command line``) that set ``dotted``, or its nearest parent's; ``defaults``."""
    key = dotted
    while key:
        if key in origins:
            return origins[key]
        key = key.rpartition(".")[0]
    return "defaults"

class _Edit:
    """Edits of the config mapping that keep each key's origin (file or command line)."""

    def __init__(self, data: MutableMapping[str, Any], origins: dict[str, str],
                 warn: Callable[[str], None]) -> None:
        self.data, self.origins, self._warn = data, origins, warn
        self.warnings: list[str] = []

    def origin(self, dotted: str) -> str:
        return origin_of(self.origins, dotted)

    def warn(self, dotted: str, message: str) -> None:
        line = f"{self.origin(dotted)}: OCP key '{dotted}': {message}"
        self.warnings.append(line)
        self._warn(line)

    def fail(self, dotted: str, message: str) -> CompatError:
        return CompatError(f"{self.origin(dotted)}: key '{dotted}': {message}")

    def section(self, name: str) -> dict[str, Any]:
        node = self.data.get(name)
        if node is None:
            node = self.data[name] = {}
        return node if isinstance(node, dict) else {}

    def set(self, dotted: str, value: Any, origin: str) -> None:
        parts = dotted.split(".")
        node = self.data
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
        self.origins[dotted] = origin

    def move_origins(self, old: str, new: str) -> None:
        for key in [k for k in self.origins if k == old or k.startswith(old + ".")]:
            self.origins[new + key[len(old):]] = self.origins[key]


def translate(data: MutableMapping[str, Any], origins: dict[str, str],
              warn: Callable[[str], None] | None = None) -> list[str]:
    """Rewrite ``data`` (merged config, includes and overrides applied) from OCP's form to
    the native one in place; ``origins`` (dotted key -> file) are kept up to date.

    Returns the warning lines (each also passed to ``warn``, by default logged)."""
    edit = _Edit(data, origins, warn or logger.warning)
    ocp_form = is_ocp_form(data)
    _dataset(edit, ocp_form)
    _task(edit)
    _model(edit)
    _optim(edit, ocp_form)
    for key in TOP_KEYS:
        if key in data:
            edit.warn(key, "not read here; submit SLURM jobs with --submit and --num-gpus / --num-nodes / "
                           "--slurm-partition / --slurm-mem / --slurm-timeout")
            data.pop(key)
    if ocp_form:
        _ocp_defaults(edit)
    return edit.warnings


# --------------------------------------------------------------------------- dataset
def _dataset(edit: _Edit, ocp_form: bool) -> None:
    dataset = edit.data.get("dataset")
    if isinstance(dataset, list):
        if len(dataset) > len(SPLIT_NAMES):
            raise edit.fail("dataset", f"OCP's positional dataset list is [train, val, test]; got {len(dataset)} "
                                       "entries (name extra validation splits dataset.val_<name>)")
        splits = {}
        for name, entry in zip(SPLIT_NAMES, dataset):
            if not isinstance(entry, dict):
                raise edit.fail("dataset", f"entry {name} of the positional list must be a mapping with 'src', "
                                           f"got {entry!r}")
            splits[name] = entry
            edit.move_origins("dataset", f"dataset.{name}")
        edit.data["dataset"] = dataset = splits
    elif isinstance(dataset, dict) and "src" in dataset:  # OCP: one mapping is the training set
        edit.move_origins("dataset", "dataset.train")
        edit.data["dataset"] = dataset = {"train": dataset}
    if not isinstance(dataset, dict):
        return
    for name, split in dataset.items():
        if isinstance(split, dict):
            _split_keys(edit, name, split, ocp_form)


def _split_keys(edit: _Edit, name: str, split: dict[str, Any], ocp_form: bool) -> None:
    where = f"dataset.{name}"
    for key, hint in (("train_on_oc20_total_energies", "write total energies as the LMDB's y instead"),
                      ("oc20_ref", "write total energies as the LMDB's y instead"),
                      ("lin_ref", "use task.element_references: true (fitted on the training split here)")):
        if key in split:
            if split[key] not in _NONE_VALUES:
                raise edit.fail(f"{where}.{key}", f"{split[key]!r} is not supported here; {hint}")
            split.pop(key)  # the off value: adsorption energies as stored, as here
    if name != "train":
        for key in ("normalize_labels", *STAT_KEYS):
            if key in split:
                edit.warn(f"{where}.{key}", "OCP reads normaliser settings from the training split only; ignored")
                split.pop(key)
        return
    has_flag = "normalize_labels" in split
    flag = split.pop("normalize_labels", None)
    stats = {key: split.pop(key) for key in STAT_KEYS if key in split}
    if not has_flag and not stats:
        if ocp_form and "normalize_labels" not in edit.section("task"):
            # OCP normalises only when asked to.
            edit.set("task.normalize_labels", False, edit.origin(where))
        return
    origin = edit.origin(f"{where}.normalize_labels" if has_flag else f"{where}.{next(iter(stats))}")
    flag = bool(flag) if has_flag else False
    task = edit.section("task")
    if "normalize_labels" in task and bool(task["normalize_labels"]) != flag:
        raise edit.fail(f"{where}.normalize_labels", f"says {flag} but task.normalize_labels says "
                                                     f"{task['normalize_labels']}; keep one of them")
    edit.set("task.normalize_labels", flag, origin)
    if not flag:
        for key in stats:
            edit.warn(f"{where}.{key}", "normalize_labels is not true, so OCP does not use it; ignored")
        return
    if not stats:
        return  # OCP fits the statistics on the training data, as this project does
    for key in ("target_mean", "target_std"):
        if key not in stats:
            raise edit.fail(f"{where}.{key}", f"missing: OCP's normaliser needs target_mean and target_std "
                                              f"(got {', '.join(sorted(stats))})")
    if float(stats.get("grad_target_mean", 0.0)) != 0.0:
        raise edit.fail(f"{where}.grad_target_mean", f"{stats['grad_target_mean']} is not supported: forces are "
                                                     "scaled, never shifted, here (a shift breaks F = -dE/dx)")
    if task.get("normalizer"):
        raise edit.fail(f"{where}.target_mean", "task.normalizer also gives normaliser statistics; keep one of them")
    normalizer = {"mean": float(stats["target_mean"]), "std": float(stats["target_std"]),
                  "force_std": float(stats.get("grad_target_std", stats["target_std"]))}
    edit.set("task.normalizer", normalizer, origin)
    logger.info("%s: normaliser statistics of %s used as given (mean %g, std %g, force std %g); remove "
                "target_mean / target_std to have this project fit them on the training split instead",
                origin, where, normalizer["mean"], normalizer["std"], normalizer["force_std"])


# --------------------------------------------------------------------------- task
def _task(edit: _Edit) -> None:
    task = edit.data.get("task")
    if not isinstance(task, dict):
        return
    if "primary_metric" in task:
        edit.move_origins("task.primary_metric", "task.metric")
        task["metric"] = task.pop("primary_metric")
    relax_opt = task.get("relax_opt")
    for key, native in (("relaxation_steps", "steps"), ("relaxation_fmax", "fmax")):
        if key in task:
            if relax_opt is None:
                relax_opt = task["relax_opt"] = {}
            if isinstance(relax_opt, dict):
                if native in relax_opt and relax_opt[native] != task[key]:
                    raise edit.fail(f"task.{key}", f"{task[key]!r} differs from task.relax_opt.{native} "
                                                   f"({relax_opt[native]!r}); keep one of them")
                edit.move_origins(f"task.{key}", f"task.relax_opt.{native}")
                relax_opt[native] = task.pop(key)
    if "write_pos" in task:
        edit.move_origins("task.write_pos", "task.write_relaxed_structures")
        task["write_relaxed_structures"] = bool(task.pop("write_pos"))
    if isinstance(relax_opt, dict) and "traj_dir" in relax_opt:
        edit.warn("task.relax_opt.traj_dir", "trajectories are written under the run directory here "
                                             "(task.write_trajectories: true), not to this folder")
        relax_opt.pop("traj_dir")
        task.setdefault("write_trajectories", True)
    relax_dataset = task.get("relax_dataset")
    if isinstance(relax_dataset, dict):
        for key in ("total_shards", "shard"):
            if key in relax_dataset:
                if relax_dataset[key] != (1 if key == "total_shards" else 0):
                    edit.warn(f"task.relax_dataset.{key}", "not sharded here: the whole relax_dataset is "
                                                           "relaxed; point src at one shard's LMDB instead")
                relax_dataset.pop(key)
    _flag(edit, task, "eval_relaxations", False, "relaxations are not run during training here; run "
          "--mode run-relaxations --checkpoint RUN/checkpoint.pt afterwards")
    _flag(edit, task, "save_full_traj", True, "written trajectories hold every step here")
    _flag(edit, task, "strict_load", True, "checkpoints always load strictly here (every parameter must fit)")
    _flag(edit, task, "set_deterministic_scatter", False, "no effect here")
    if "num_relaxation_batches" in task:
        edit.warn("task.num_relaxation_batches", "no effect here: the whole task.relax_dataset is relaxed; point "
                                                 "its src at a smaller LMDB to relax fewer systems")
        task.pop("num_relaxation_batches")
    if "prediction_dtype" in task:
        edit.warn("task.prediction_dtype", "no effect here: predictions.npz holds float32 values")
        task.pop("prediction_dtype")


def _flag(edit: _Edit, section: dict[str, Any], key: str, same: Any, message: str) -> None:
    """Pop OCP flag ``key``: its value ``same`` is this project's behaviour (mapped), any
    other value has no effect here (warned)."""
    if key in section:
        if section[key] != same:
            edit.warn(f"task.{key}", f"{section[key]!r}: {message}")
        section.pop(key)


# --------------------------------------------------------------------------- model
def _model(edit: _Edit) -> None:
    model = edit.data.get("model")
    if not isinstance(model, dict):
        return
    name = str(model.get("name", ""))
    if name in GRADIENT_FORCE_MODELS:
        if "otf_graph" in model:
            if not model["otf_graph"]:
                edit.warn("model.otf_graph", "False: edges stored in the LMDB are not read; the graph is built "
                                             "on the fly")
            model.pop("otf_graph")
        if "direct_forces" in model:
            if model["direct_forces"]:
                edit.warn("model.direct_forces", f"True: {name} computes forces as -dE/dx here; ignored")
            model.pop("direct_forces")
        if model.get("readout", "add") == "add":
            model.pop("readout", None)
    elif name == "spinconv" and "direct_forces" in model:
        estimator = "direct" if model.pop("direct_forces") else "grad"
        if "force_estimator" in model and (model["force_estimator"] == "grad") != (estimator == "grad"):
            raise edit.fail("model.direct_forces", f"contradicts model.force_estimator "
                                                   f"({model['force_estimator']!r}); keep force_estimator")
        model.setdefault("force_estimator", estimator)
        edit.move_origins("model.direct_forces", "model.force_estimator")


# --------------------------------------------------------------------------- optim
def _optim(edit: _Edit, ocp_form: bool) -> None:
    optim = edit.data.get("optim")
    if not isinstance(optim, dict):
        return
    if "load_balancing" in optim:
        if optim["load_balancing"] != "atoms":
            edit.warn("optim.load_balancing", f"{optim['load_balancing']!r}: batches are balanced by atoms here")
        optim.pop("load_balancing")
    if not ocp_form:
        return
    workers, cpus = optim.get("num_workers"), os.cpu_count() or 1
    if isinstance(workers, int) and not isinstance(workers, bool) and workers > cpus:
        edit.warn("optim.num_workers", f"{workers} is more than this machine's {cpus} CPUs; using {cpus}")
        optim["num_workers"] = cpus
    scheduler = optim.get("scheduler", "LambdaLR")
    if isinstance(scheduler, str) and scheduler.lower() == "null":
        optim["scheduler"] = "constant"  # OCP's "Null": the initial learning rate throughout
        optim["warmup_steps"] = 0
    elif isinstance(scheduler, str) and scheduler == "LambdaLR":
        # OCP's default: linear warm-up, then lr_gamma at each of lr_milestones (steps), as "step" here.
        optim["scheduler"] = "step"
    if optim.get("min_lr") is not None:
        edit.warn("optim.min_lr", "OCP's ReduceLROnPlateau keeps the learning rate at min_lr; here training "
                                  "stops early once the learning rate falls below it")


# Defaults of OCP's SchNet / DimeNet++ wrappers that differ from this project's models:
# set when an OCP config or checkpoint leaves them out (both fix max_neighbors at 50, as here).
# OCP's DimeNet++ forces hold the triplet angles fixed (detach_angles).
OCP_WRAPPER_DEFAULTS: dict[str, dict[str, Any]] = {
    "schnet": {"cutoff": 10.0},
    "dimenetplusplus": {"cutoff": 10.0, "detach_angles": True},
}


def _ocp_defaults(edit: _Edit) -> None:
    """Defaults of OCP's trainers that differ from this project's, for OCP-form configs."""
    optim = edit.section("optim")
    if "optimizer" not in optim:
        edit.set("optim.optimizer", "AdamW", "OCP default")
    model = edit.data.get("model")
    if isinstance(model, dict):
        name = "dimenetplusplus" if model.get("name") == "dimenet++" else model.get("name")
        for key, value in OCP_WRAPPER_DEFAULTS.get(name, {}).items():
            if key not in model:
                edit.set(f"model.{key}", value, "OCP default")
    task = edit.section("task")
    trainer = str(edit.data.get("trainer", "forces"))
    if task.get("metric") in (None, "mae") and trainer in OCP_DEFAULT_METRIC:
        edit.set("task.metric", OCP_DEFAULT_METRIC[trainer], "OCP default")
    metric = task.get("metric")
    scheduler = str(optim.get("scheduler", "")).lower()
    mode = optim.get("mode")
    if scheduler in ("reducelronplateau", "plateau") and mode in ("min", "max"):
        expected = "max" if metric in HIGHER_IS_BETTER else "min"
        if mode != expected:
            edit.warn("optim.mode", f"{mode!r} but the monitored metric {metric!r} is "
                                    f"{'higher' if expected == 'max' else 'lower'}-is-better (OCP then cut the "
                                    f"learning rate while the metric improved); using {expected!r}")
            optim["mode"] = expected
