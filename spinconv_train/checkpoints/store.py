"""Checkpoints: one dict with everything needed to resume exactly, written atomically."""
from __future__ import annotations

import os
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from spinconv_train.atomic_files import torch_save_atomic
from spinconv_train.config import plain

CHECKPOINT = "checkpoint.pt"
BEST_CHECKPOINT = "best_checkpoint.pt"
EXPORT_KEY = "exported"  # present in exported models (checkpoints/export.py): weights without training state


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not fit the configured model."""


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(payload: Mapping[str, Any], path: str) -> None:
    """Write the checkpoint ``payload`` to ``path`` atomically."""
    torch_save_atomic(dict(payload), path)


def load_torch_file(path: str, error: type[Exception], what: str) -> Any:
    """``torch.load`` of ``path`` on the CPU; a missing or unreadable file raises ``error``
    naming ``what`` (e.g. ``"checkpoint"``) and the path."""
    if not os.path.isfile(path):
        raise error(f"{what} {path!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
        raise error(f"{what} {path!r} cannot be read: {type(err).__name__}: {err}") from None


def read(path: str) -> dict[str, Any]:
    """The payload dict of a checkpoint written by :func:`save_atomic` (on CPU); the model
    and task are built from it by :func:`spinconv_train.checkpoints.load`."""
    payload = load_torch_file(path, CheckpointError, "checkpoint")
    for key in ("model", "config", "targets"):
        if key not in payload:
            raise CheckpointError(f"checkpoint {path!r} has no {key!r} entry; not a spinconv_train checkpoint")
    return payload


def require_training_state(payload: Mapping[str, Any], path: str) -> None:
    """Refuse to resume training from an exported model (it has no optimiser, sampler or RNG state)."""
    if payload.get(EXPORT_KEY) is not None:
        raise CheckpointError(
            f"checkpoint {path!r} is an exported model (weights only, no optimiser or sampler state) and cannot "
            f"resume training; start a new run from its weights with --finetune.checkpoint={path}")


def model_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``model.<key>`` settings where two model config sections differ."""
    keys = sorted(set(saved) | set(current))
    return [f"model.{k}: checkpoint {saved.get(k, '(unset)')!r}, config {current.get(k, '(unset)')!r}"
            for k in keys if saved.get(k) != current.get(k)]


def load_model_state(model: torch.nn.Module, payload: Mapping[str, Any], path: str,
                     model_config: Mapping[str, Any]) -> None:
    """Load weights after checking the model configuration matches the checkpoint's."""
    differences = model_differences(payload["config"].get("model", {}), model_config)
    if differences:
        raise CheckpointError(f"checkpoint {path!r} is from another model configuration: " + "; ".join(differences))
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {path!r} does not fit the configured model: {err}") from None


def build_payload(*, config: Mapping[str, Any], model: torch.nn.Module, optimizer: Any, scheduler: Any,
                  ema: Any, scaler: Any, targets: Any, step: int, epoch: int, batch_in_epoch: int,
                  sampler_seed: int, best_metric: Any, metrics: Mapping[str, float],
                  evals_since_best: int = 0, stop_reason: Any = None) -> dict[str, Any]:
    """The checkpoint dict (model, optimiser, scheduler, EMA, normalisers, position, RNG, config)."""
    return {
        "config": plain(config),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "ema": ema.state_dict() if ema is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "targets": targets.state_dict(),
        "step": int(step),
        "epoch": int(epoch),
        "sampler": {"epoch": int(epoch), "batches_yielded": int(batch_in_epoch), "seed": int(sampler_seed)},
        "rng": rng_state(),
        "best_metric": best_metric,
        "early_stopping": {"evals_since_best": int(evals_since_best), "stop_reason": stop_reason},
        "metrics": dict(metrics),
    }


def remove_temporaries(folder: str) -> list[str]:
    """Delete the ``.tmp-*`` files an interrupted atomic write left in ``folder``; return their names.

    Call only where no other process is writing into ``folder`` (the start of a run's attempt)."""
    removed = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        path = os.path.join(folder, name)
        if name.startswith(".tmp-") and os.path.isfile(path):
            os.unlink(path)
            removed.append(name)
    return removed
