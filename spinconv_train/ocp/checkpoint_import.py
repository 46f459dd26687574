"""A checkpoint written by OCP's trainer -> this project's exported model.

OCP's ``BaseTrainer.save`` writes ``{"state_dict": {"module.<name>": ...}, "normalizers":
{"target": {"mean", "std"}, "grad_target": {...}}, "config": {..., "model": NAME,
"model_attributes": {...}}, "ema": {"shadow_params": [...]}, "epoch", "step", ...}``.
:func:`import_ocp_checkpoint` maps it onto the exported-model layout of
``trainers/export.py``: the OCP config translated to a native one (the model keys are
the same; SpinConv gets ``frame: reference`` and ``neighbor_cap: reference``, the
reference's edge frames and neighbour caps, and DimeNet++
``detach_angles: true``, forces with the triplet angles held constant, so that the imported
model computes the function the OCP model computed; keys left out take the OCP wrappers'
defaults), one set of weights (the EMA
weights when present, as OCP's validation used them) renamed to this project's modules,
and the normalisers. Any weight or setting that does not fit is an error naming the
parameter and both shapes.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch

from spinconv_train.config_ocp import OCP_WRAPPER_DEFAULTS

logger = logging.getLogger("spinconv_train.ocp")

WEIGHT_CHOICES = ("auto", "ema", "model")
# Run bookkeeping of OCP's trainer config with no counterpart in a model file.
BOOKKEEPING_KEYS = ("amp", "gpus", "cmd", "slurm", "noddp", "hide_eval_progressbar", "val_dataset",
                    "test_dataset", "model_attributes")

# Per OCP model name: (this project's model name, renames (pattern, replacement) applied in
# order to the name without "module.", names of reference tensors with no counterpart here).
_SPINCONV_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^energyembeddingblock\.", "energy_head.energyembeddingblock."),
    (r"^force_output_block\.", "force_head."),
    (r"\.spinconvblock\.GroupNorm\.", ".spinconvblock.group_norm."),
    (r"\.spinconvblock\.conv1\.", ".spinconvblock.spin_conv.conv1."),
)
# The reference's Gaussian-basis offsets (buffers recomputed from the config here).
_SPINCONV_DROPPED = re.compile(r"^(dist_block\.distance_expansion|distance_expansion_forces)\.offset$")
MODELS: dict[str, tuple[str, tuple[tuple[str, str], ...], Any]] = {
    "spinconv": ("spinconv", _SPINCONV_RENAMES, _SPINCONV_DROPPED),
    "schnet": ("schnet", ((r"^", "net."),), None),
    "dimenetplusplus": ("dimenetplusplus", ((r"^", "net."),), None),
}


class OcpImportError(ValueError):
    """An OCP checkpoint that cannot be imported; the message names the key or parameter."""


def read_ocp_checkpoint(path: str) -> dict[str, Any]:
    """Load an OCP trainer checkpoint on CPU and check its layout."""
    from spinconv_train.checkpoints.store import load_torch_file

    payload = load_torch_file(path, OcpImportError, "OCP checkpoint")
    if not isinstance(payload, dict) or "state_dict" not in payload or "config" not in payload:
        keys = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise OcpImportError(f"{path!r} is not a checkpoint of OCP's trainer (needs 'state_dict' and 'config'; "
                             f"has {keys})")
    return payload


def model_name(config: Mapping[str, Any], source: str) -> str:
    """The OCP model name of a checkpoint config (``model`` is a name in trainer configs,
    a mapping with ``name`` in YAML configs)."""
    model = config.get("model")
    name = model.get("name") if isinstance(model, Mapping) else model
    if name not in MODELS:
        raise OcpImportError(f"{source}: key 'config.model': model {name!r} cannot be imported; "
                             f"known: {', '.join(MODELS)}")
    return str(name)


def native_config_dict(config: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The OCP trainer config of a checkpoint as a native config mapping (not yet
    validated; OCP-only task / optim keys are translated by the config loader)."""
    name = model_name(config, source)
    model = dict(config["model"]) if isinstance(config.get("model"), Mapping) else {"name": name}
    model.update(config.get("model_attributes") or {})
    model["name"] = MODELS[name][0]
    if name == "spinconv":
        model["frame"] = "reference"
        model["neighbor_cap"] = "reference"
    if name == "dimenetplusplus":
        model["detach_angles"] = True  # OCP's code always held the angles fixed, whatever its config says
    for key, value in OCP_WRAPPER_DEFAULTS.get(name, {}).items():
        model.setdefault(key, value)
    native: dict[str, Any] = {"trainer": config.get("trainer", "forces"), "model": model,
                              "task": dict(config.get("task") or {}), "optim": dict(config.get("optim") or {})}
    if config.get("logger") is not None:
        native["logger"] = config["logger"]
    dataset = config.get("dataset")
    if isinstance(dataset, list):
        native["dataset"] = list(dataset)
    else:
        splits = {"train": dataset, "val": config.get("val_dataset"), "test": config.get("test_dataset")}
        native["dataset"] = {k: dict(v) for k, v in splits.items() if isinstance(v, Mapping) and "src" in v}
    seed = (config.get("cmd") or {}).get("seed")
    if isinstance(seed, int):
        native["seed"] = seed
    for key in config:
        if key not in native and key not in BOOKKEEPING_KEYS and key not in ("dataset",):
            logger.warning("%s: OCP checkpoint config key %r: not read here; ignored", source, key)
    return native


def rename(ocp_name: str, model: str) -> str | None:
    """This project's name of reference parameter ``ocp_name`` (no ``module.`` prefix), or
    None for a reference tensor with no counterpart here."""
    _, renames, dropped = MODELS[model]
    if dropped is not None and dropped.search(ocp_name):
        return None
    for pattern, replacement in renames:
        ocp_name = re.sub(pattern, replacement, ocp_name, count=1)
    return ocp_name


def _strip(name: str) -> str:
    return name[len("module."):] if name.startswith("module.") else name


def mapped_state(payload: Mapping[str, Any], model: str, native: torch.nn.Module, source: str,
                 weights: str) -> tuple[dict[str, torch.Tensor], str]:
    """The weights for ``native`` from ``payload`` (EMA ones under ``auto`` when present);
    returns (state dict, which weights: "ema" or "model")."""
    if weights not in WEIGHT_CHOICES:
        raise ValueError(f"weights must be one of {WEIGHT_CHOICES}, got {weights!r}")
    ema = payload.get("ema")
    if weights == "ema" and not ema:
        raise OcpImportError(f"{source}: has no EMA weights (its run had no optim.ema_decay); use --weights model")
    ocp_state = payload["state_dict"]
    names: list[tuple[str, str | None]] = [(_strip(k), rename(_strip(k), model)) for k in ocp_state]
    state = {new: ocp_state[old_full] for (old, new), old_full in zip(names, ocp_state) if new is not None}
    chosen = "model"
    if ema and weights != "model":
        state = _apply_ema(state, names, ema, native, source)
        chosen = "ema"
    if model == "spinconv":
        state = _spinconv_force_output(state, native, source)
    if model == "dimenetplusplus":
        state = _fold_output_biases(state, source)
    _check_fit(state, native, source)
    return state, chosen


def _apply_ema(state: dict[str, torch.Tensor], names: list[tuple[str, str | None]], ema: Mapping[str, Any],
               native: torch.nn.Module, source: str) -> dict[str, torch.Tensor]:
    """Replace the parameters of ``state`` by OCP's EMA ``shadow_params`` (a list in the
    order of the model's parameters, i.e. of its state dict without buffers)."""
    shadow = ema.get("shadow_params")
    if not isinstance(shadow, (list, tuple)):
        raise OcpImportError(f"{source}: key 'ema.shadow_params' must be a list of tensors, got "
                             f"{type(shadow).__name__}")
    native_params = dict(native.named_parameters())
    order = [new for _, new in names if new is not None and new in native_params]
    if len(order) != len(shadow):
        raise OcpImportError(f"{source}: key 'ema.shadow_params' holds {len(shadow)} tensors but the model has "
                             f"{len(order)} parameters")
    state = dict(state)
    for name, value in zip(order, shadow):
        if tuple(value.shape) != tuple(state[name].shape):
            raise OcpImportError(f"{source}: EMA weight of parameter {name!r} has shape {tuple(value.shape)}, "
                                 f"its weight in state_dict {tuple(state[name].shape)}")
        state[name] = value
    return state


def _spinconv_force_output(state: dict[str, torch.Tensor], native: torch.nn.Module,
                           source: str) -> dict[str, torch.Tensor]:
    """The reference's last force layer has two outputs of which it uses the first."""
    state = dict(state)
    target = native.state_dict()
    for suffix in ("weight", "bias"):
        name = f"force_head.block2.fc3.{suffix}"
        if name in state and name in target and state[name].shape[0] == 2 and target[name].shape[0] == 1:
            state[name] = state[name][:1]
    return state


def _fold_output_biases(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """OCP's DimeNet++ output blocks have a bias on ``lin_up`` (torch_geometric's have none);
    ``lin_up`` feeds ``lins.0`` linearly, so the bias moves into ``lins.0``'s:
    W0 (U x + b) + c0 = W0 U x + (W0 b + c0)."""
    state = dict(state)
    for name in [k for k in state if re.fullmatch(r"net\.output_blocks\.\d+\.lin_up\.bias", k)]:
        block = name[: -len("lin_up.bias")]
        weight, bias = state.get(f"{block}lins.0.weight"), state.get(f"{block}lins.0.bias")
        if weight is None or bias is None:
            raise OcpImportError(f"{source}: parameter {name!r} (shape {tuple(state[name].shape)}) has no place in "
                                 "the model: its output block has no further layer to fold it into "
                                 "(num_output_layers: 0)")
        state[f"{block}lins.0.bias"] = bias + weight @ state.pop(name)
    return state


def _check_fit(state: Mapping[str, torch.Tensor], native: torch.nn.Module, source: str) -> None:
    """Every parameter present, none extra, each shape equal; errors name them."""
    target = native.state_dict()
    missing = [k for k in target if k not in state]
    extra = [k for k in state if k not in target]
    if extra:
        raise OcpImportError(f"{source}: parameter {extra[0]!r} (shape {tuple(state[extra[0]].shape)}) has no "
                             f"place in the configured model" + (f" (and {len(extra) - 1} more)" if len(extra) > 1
                                                                  else ""))
    if missing:
        raise OcpImportError(f"{source}: parameter {missing[0]!r} (shape {tuple(target[missing[0]].shape)}) of "
                             "the configured model is not in the checkpoint"
                             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    for name, value in state.items():
        if tuple(value.shape) != tuple(target[name].shape):
            raise OcpImportError(f"{source}: parameter {name!r} has shape {tuple(value.shape)} in the checkpoint "
                                 f"and {tuple(target[name].shape)} in the model its config describes")


def target_state_dict(payload: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The normaliser of OCP's ``normalizers`` as this project's target state."""
    from spinconv_train.tasks.normalizer import Normalizer
    from spinconv_train.tasks.targets import TargetState

    normalizers = payload.get("normalizers") or {}
    target = normalizers.get("target")
    if not target:
        return TargetState().state_dict()
    grad = normalizers.get("grad_target") or {}

    def number(section: Mapping[str, Any], key: str, where: str) -> float:
        value = section.get(key)
        try:
            return float(torch.as_tensor(value).reshape(-1)[0])
        except Exception:  # noqa: BLE001 - any unreadable value is a bad checkpoint
            raise OcpImportError(f"{source}: key 'normalizers.{where}.{key}' is not a number: {value!r}") from None

    if grad and number(grad, "mean", "grad_target") != 0.0:
        raise OcpImportError(f"{source}: key 'normalizers.grad_target.mean' is {number(grad, 'mean', 'grad_target')}"
                             "; forces are scaled, never shifted, here")
    mean, std = number(target, "mean", "target"), number(target, "std", "target")
    force_std = number(grad, "std", "grad_target") if grad else std
    return TargetState(Normalizer(mean, std, force_std)).state_dict()


def import_payload(payload: Mapping[str, Any], source: str, weights: str = "auto",
                   build_model: Callable[[Any], torch.nn.Module] | None = None) -> dict[str, Any]:
    """The exported-model dict (``trainers/export.py`` layout) of OCP checkpoint ``payload``."""
    from spinconv_train import __version__
    from spinconv_train.checkpoints import store as ckpt
    from spinconv_train.config import ConfigError, config_from_dict, plain

    if build_model is None:
        from spinconv_train.checkpoints.builder import build_model
    where = f"OCP checkpoint {source!r}"
    name = model_name(payload["config"], where)
    try:
        config = config_from_dict(native_config_dict(payload["config"], where), origin=where)
        native = build_model(config)
    except ConfigError as err:
        raise OcpImportError(str(err)) from None
    state, chosen = mapped_state(payload, name, native, where, weights)
    metrics = payload.get("val_metrics") or {}
    metrics = {k: float(v["metric"]) for k, v in metrics.items() if isinstance(v, Mapping) and "metric" in v}
    return {
        "config": plain(config),
        "targets": target_state_dict(payload, where),
        "step": int(payload.get("step") or 0),
        "epoch": float(payload.get("epoch") or 0),
        "best_metric": payload.get("best_val_metric"),
        "metrics": metrics,
        "model": {k: v.detach().to(native.state_dict()[k].dtype).clone() for k, v in state.items()},
        ckpt.EXPORT_KEY: {"source": os.path.abspath(source), "weights": chosen, "spinconv_train": __version__,
                          "torch": torch.__version__, "imported_from": "ocp",
                          "ocp_primary_metric": payload.get("primary_metric")},
    }


def import_ocp_checkpoint(source: str, destination: str, weights: str = "auto",
                          overwrite: bool = False) -> dict[str, Any]:
    """Write the exported model of OCP checkpoint ``source`` to ``destination`` atomically;
    returns a summary (paths, weights taken, parameters, model, trainer, frame)."""
    from spinconv_train.checkpoints import store as ckpt

    if os.path.exists(destination) and not overwrite:
        raise OcpImportError(f"output {destination!r} exists; choose another path or pass --overwrite")
    exported = import_payload(read_ocp_checkpoint(source), source, weights)
    ckpt.save_atomic(exported, destination)
    model = exported["config"]["model"]
    return {"source": source, "exported": destination, "exported_bytes": os.path.getsize(destination),
            "weights": exported[ckpt.EXPORT_KEY]["weights"], "model": model["name"],
            "trainer": exported["config"]["trainer"], "frame": model.get("frame"),
            "parameters": int(sum(t.numel() for t in exported["model"].values() if t.is_floating_point())),
            "step": exported["step"]}
