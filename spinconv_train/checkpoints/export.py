"""Exported models: a checkpoint reduced to what inference and fine-tuning need.

A training checkpoint also holds the optimiser's moments, the EMA copy, the scheduler, the
sampler position and RNG states, so it is two to three times the size of the weights. An
exported model keeps the resolved config, one set of weights (the EMA weights when the run
kept them, unless told otherwise), the normaliser / element references and, for the record,
the step, epoch and metrics of the run. It loads wherever a checkpoint is read for
inference (``--mode validate|predict|run-relaxations``, ``ModelCalculator``,
``run_md.py``, ``evaluate_structures.py``) and as ``finetune.checkpoint``; resuming training
from it is refused with an error that says so.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from spinconv_train import __version__
from spinconv_train.checkpoints import store as ckpt
from spinconv_train.checkpoints.builder import load
from spinconv_train.checkpoints.pretrained import pretrained_state

WEIGHT_CHOICES = ("auto", "ema", "model")
_KEPT = ("config", "targets", "step", "epoch", "best_metric", "metrics")


def export_payload(payload: Mapping[str, Any], source: str, weights: str = "auto") -> dict[str, Any]:
    """The exported form of the checkpoint ``payload`` read from ``source``.

    ``weights``: ``auto`` takes the EMA weights when the run kept an EMA, ``ema`` requires
    them, ``model`` takes the raw (last optimiser step) weights."""
    if weights not in WEIGHT_CHOICES:
        raise ValueError(f"weights must be one of {WEIGHT_CHOICES}, got {weights!r}")
    previous = payload.get(ckpt.EXPORT_KEY) or {}
    if previous:  # an exported model holds one set of weights: re-exporting keeps it
        if weights not in ("auto", previous.get("weights")):
            raise ckpt.CheckpointError(f"checkpoint {source!r} is an exported model holding only its "
                                       f"{previous.get('weights')!r} weights; cannot take {weights!r} weights")
        weights = "model"
    state = pretrained_state(payload, source, weights)
    chosen = "model" if weights == "model" or payload.get("ema") is None else "ema"
    exported = {key: payload.get(key) for key in _KEPT}
    exported["model"] = {name: tensor.detach().clone() for name, tensor in state.items()}
    exported[ckpt.EXPORT_KEY] = {
        "source": previous.get("source", os.path.abspath(source)),
        "weights": previous.get("weights", chosen),
        "spinconv_train": __version__,
        "torch": torch.__version__,
    }
    return exported


def export_checkpoint(source: str, destination: str, weights: str = "auto",
                      overwrite: bool = False) -> dict[str, Any]:
    """Write the exported form of checkpoint ``source`` to ``destination`` (atomically).

    Returns a summary (paths, sizes in bytes, weights taken, parameters, trainer, model)."""
    if os.path.abspath(source) == os.path.abspath(destination):
        raise ckpt.CheckpointError(f"export destination {destination!r} is the source checkpoint itself")
    if os.path.exists(destination) and not overwrite:
        raise ckpt.CheckpointError(f"export destination {destination!r} exists; choose another path or overwrite it")
    payload = load(source, use_ema=False).payload  # the model must build from it: no export that cannot load
    exported = export_payload(payload, source, weights)
    ckpt.save_atomic(exported, destination)  # creates the folder
    config = exported["config"]
    return {
        "source": source,
        "exported": destination,
        "source_bytes": os.path.getsize(source),
        "exported_bytes": os.path.getsize(destination),
        "weights": exported[ckpt.EXPORT_KEY]["weights"],
        "parameters": int(sum(t.numel() for t in exported["model"].values() if t.is_floating_point())),
        "trainer": config.get("trainer"),
        "model": config.get("model", {}).get("name"),
        "step": exported["step"],
    }
