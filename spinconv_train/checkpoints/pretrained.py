"""Fine-tuning: start a new training run from a trained checkpoint's weights.

The ``finetune`` config section::

    finetune:
      checkpoint: runs/<run>/best_checkpoint.pt  # weights to start from (null: a new model)
      weights: auto        # auto: the EMA weights when the checkpoint kept them; ema; model
      targets: checkpoint  # checkpoint: keep its normaliser / element references; fit: fit on this run's data
      freeze: []           # parameter-name prefixes held fixed, e.g. [dist_block, embeddingblock2]

Only the weights are taken: the optimiser, scheduler, step counter and EMA start afresh
(resuming an interrupted fine-tuning run with ``--checkpoint`` restores those as usual;
``freeze`` applies then too). The model section may differ from the checkpoint's in
settings that do not change the weights (cutoff, envelope, sphere interpolation, chunking):
the differences are logged; weights that do not fit are an error naming the file.
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from spinconv_train.checkpoints import store as ckpt
from spinconv_train.config import Config
from spinconv_train.datasets import DatasetError
from spinconv_train.datasets.coverage import EnergyScaleWarning, describe_elements, elements_from_counts, energy_scale_mismatch, referenced_energy_scale
from spinconv_train.datasets.element_refs import energies_and_counts
from spinconv_train.tasks.targets import TargetState

logger = logging.getLogger(__name__)


def pretrained_state(payload: Mapping[str, Any], path: str, weights: str) -> Mapping[str, torch.Tensor]:
    """The model state dict of ``payload`` to start from: its EMA weights (``ema``, or
    ``auto`` when the run kept an EMA) or its raw weights (``model``)."""
    ema = payload.get("ema")
    if weights == "ema" and ema is None:
        raise ckpt.CheckpointError(f"checkpoint {path!r} has no EMA weights (its run had no optim.ema_decay); "
                                   "use finetune.weights: model")
    if weights == "model" or ema is None:
        return payload["model"]
    prefix = "module."
    return {k[len(prefix):]: v for k, v in ema.items() if k.startswith(prefix)}


def load_pretrained(model: torch.nn.Module, config: Config) -> TargetState:
    """Load ``finetune.checkpoint``'s weights into ``model``; return its target state (normaliser,
    element references, elements seen), checked to apply to this run when ``finetune.targets``
    is ``checkpoint``."""
    section = config["finetune"]
    path = section["checkpoint"]
    try:
        payload = ckpt.read(path)
    except ckpt.CheckpointError as err:
        raise config.fail("finetune.checkpoint", str(err)) from None
    saved = payload["config"]
    if saved.get("model", {}).get("name") != config["model"]["name"]:
        raise config.fail("finetune.checkpoint", f"checkpoint {path!r} holds a {saved.get('model', {}).get('name')!r} "
                          f"model, the config builds {config['model']['name']!r}")
    differences = ckpt.model_differences(saved.get("model", {}), config["model"])
    try:
        model.load_state_dict(pretrained_state(payload, path, section["weights"]))
    except RuntimeError as err:
        raise ckpt.CheckpointError(f"finetune.checkpoint {path!r}: its weights do not fit the configured model "
                                   f"({'; '.join(differences)}): {err}") from None
    for line in differences:
        logger.info("fine-tuning with a changed setting: %s", line)
    logger.info("fine-tuning from %s (step %s of its run)", path, payload.get("step"))
    if section["targets"] == "checkpoint":
        _check_same_targets(config, saved, path)
    return TargetState.from_state_dict(payload["targets"])


FIX = "--finetune.targets=fit --task.element_references=true"


def check_finetuning_data(config: Config, pretrained: TargetState, dataset: Dataset, energy_field: str,
                          keep_targets: bool, sample: int = 1000) -> list[str]:
    """Warn (and return the messages) where the new training split does not fit the pretrained
    model: elements it never saw, and, when its normaliser and element references are kept
    (``keep_targets``), energies on another scale than they were fitted on."""
    path = config["finetune"]["checkpoint"]
    count = len(dataset)
    indices = np.sort(np.random.default_rng(config["seed"]).choice(count, size=min(count, sample), replace=False))
    try:
        energies, counts = energies_and_counts(dataset, field=energy_field, indices=indices.tolist())
    except DatasetError:  # unlabelled data are refused later, naming the split and field
        return []
    messages = []
    new = [] if pretrained.elements is None else sorted(elements_from_counts(counts) - pretrained.elements)
    if new:
        advice = (f"its element references and normaliser, kept by finetune.targets: checkpoint, do not cover "
                  f"them: use {FIX}") if keep_targets else "their embeddings start untrained"
        messages.append(f"dataset.train holds {describe_elements(new)}, which {path} never saw in training; {advice}")
    mean = pretrained.normalizer.mean.reshape(-1)
    if keep_targets and mean.numel() == 1:
        refs = None if pretrained.element_references is None else pretrained.element_references.references.numpy()
        scale = referenced_energy_scale(energies, counts, refs)
        mismatch = energy_scale_mismatch(scale, float(mean[0]), float(pretrained.normalizer.std.reshape(-1)[0]))
        if mismatch:
            messages.append(f"the energies ({energy_field}) of dataset.train do not match the normaliser of {path}: "
                            f"{mismatch} (over {scale.count} structures, after its element references). Its "
                            f"predictions start far off and fine-tuning has to undo that; fit them on the new data "
                            f"with {FIX}")
    for message in messages:
        warnings.warn(message, EnergyScaleWarning, stacklevel=2)
    return messages


def _check_same_targets(config: Config, saved: Mapping[str, Any], path: str) -> None:
    """Keeping a checkpoint's normaliser only makes sense for the same trainer and target."""
    for key in ("trainer", "task.target", "task.target_indices"):
        head, _, leaf = key.partition(".")
        old = saved.get(head, {}).get(leaf) if leaf else saved.get(head)
        new = config[head][leaf] if leaf else config[head]
        if old != new:
            raise config.fail("finetune.targets", f"checkpoint {path!r} was trained with {key} {old!r}, this run "
                              f"has {new!r}: its normaliser does not apply; use finetune.targets: fit")


def freeze(model: torch.nn.Module, prefixes: list[str], config: Config) -> int:
    """Set ``requires_grad = False`` on parameters whose names start with a prefix; return how
    many parameter values were frozen. A prefix that matches nothing is an error."""
    if not prefixes:
        return 0
    named = dict(model.named_parameters())
    total = sum(p.numel() for p in named.values())
    frozen = 0
    for prefix in prefixes:
        hits = [name for name in named if name == prefix or name.startswith(prefix + ".")]
        if not hits:
            tops = sorted({name.split(".")[0] for name in named})
            raise config.fail("finetune.freeze", f"prefix {prefix!r} matches no parameter; top-level modules: "
                              f"{', '.join(tops)}")
        for name in hits:
            if named[name].requires_grad:
                named[name].requires_grad_(False)
                frozen += named[name].numel()
    if frozen == total:
        raise config.fail("finetune.freeze", "freezes every parameter; nothing would train")
    logger.info("froze %d of %d parameter values (%s)", frozen, total, ", ".join(prefixes))
    return frozen
