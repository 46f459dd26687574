"""The one way a model and its task are made: from a config (a new run, from initial or
``finetune.checkpoint`` weights) or from a checkpoint (resume, validate, predict, relax,
the calculators, the commands, export). Inference reaches it without the training loop."""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import Dataset

from spinconv_train.checkpoints import pretrained, store
from spinconv_train.checkpoints.ema import ema_from_checkpoint
from spinconv_train.config import Config, config_from_dict
from spinconv_train.registry import MODELS
from spinconv_train.tasks import data
from spinconv_train.tasks.build import build_task, task_class
from spinconv_train.tasks.protocol import Task
from spinconv_train.tasks.targets import TargetState


def build_model(config: Config) -> torch.nn.Module:
    """Instantiate ``model.name`` with the section's other keys; unknown keys name the file."""
    section = dict(config["model"])
    name = section.pop("name")
    try:
        cls = MODELS.get(name)
    except KeyError as err:
        raise config.fail("model.name", str(err)) from None
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if not takes_any:
        known = [k for k in params if k != "self"]
        for key in section:
            if key not in params:
                raise config.fail(f"model.{key}", f"unknown argument of model {name!r}; known: {', '.join(known)}")
    task_cls = task_class(config)
    if "regress_forces" in params and "regress_forces" not in section:
        section["regress_forces"] = task_cls.regress_forces
    try:
        model = cls(**section)
    except (TypeError, ValueError) as err:
        raise config.fail("model", f"cannot build model {name!r}: {err}") from None
    if config["optim"]["stress_coefficient"] > 0:
        if not getattr(task_cls, "regress_forces", False):
            raise config.fail("optim.stress_coefficient", f"stress is trained by the forces trainer, not "
                              f"{config['trainer']!r}")
        if not getattr(model, "supports_stress", False):
            raise config.fail("optim.stress_coefficient", f"model {name!r} does not compute the stress; use "
                              "an energy-centric SpinConv (force_estimator: grad, use_pbc: true)")
    return model.to(model_dtype(config))


def model_dtype(config: Config) -> torch.dtype:
    """The torch dtype of ``precision`` (float32 or float64)."""
    return torch.float64 if config.get("precision", "float32") == "float64" else torch.float32


@dataclass
class ModelAndTask:
    """A model, its task (with the target state) and where they came from."""

    model: torch.nn.Module  # the trained (or initial) weights, as the optimiser left them
    task: Task
    config: Config
    payload: Mapping[str, Any] | None = None  # the checkpoint's dict (metadata, training state); None: new
    ema: AveragedModel | None = None  # the checkpoint's EMA weights, when kept and asked for

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights to evaluate with: the EMA weights when present, else the model."""
        return self.ema.module if self.ema is not None else self.model

    def to(self, device: torch.device) -> ModelAndTask:
        """Move the model (and the EMA weights) to ``device``; returns self."""
        self.model.to(device)
        if self.ema is not None:
            self.ema.to(device)
        return self


def build(config: Config, *, payload: Mapping[str, Any] | None = None, source: str = "",
          train: bool = False, use_ema: bool = True, train_dataset: Dataset | None = None,
          progress: bool = False) -> ModelAndTask:
    """The model and task of ``config``.

    With ``payload`` (a checkpoint read from ``source``): its weights and target state, after
    checking that its model settings are ``config``'s; its EMA weights when it kept them and
    ``use_ema``. Without: a new run's model, with initial weights (seed first: they are the
    run's) or ``finetune.checkpoint``'s, and that checkpoint's target state or one fitted on
    ``train_dataset`` (built from the config when not given). ``train``: the model is about to
    be trained, so the ``finetune.freeze`` blocks are held fixed.
    """
    model = build_model(config)
    ema = None
    if payload is None:
        targets = new_run_targets(config, model, train_dataset, progress)
    else:
        store.load_model_state(model, payload, source, config["model"])
        targets = TargetState.from_state_dict(payload["targets"])
        if use_ema:
            ema = ema_from_checkpoint(model, payload, config["optim"]["ema_decay"])
    if train:
        pretrained.freeze(model, config["finetune"]["freeze"], config)
    return ModelAndTask(model, build_task(config, targets), config, payload, ema)


def new_run_targets(config: Config, model: torch.nn.Module, train_dataset: Dataset | None,
                    progress: bool) -> TargetState:
    """A new run's target state: fitted on the training split, or, when fine-tuning with
    ``finetune.targets: checkpoint``, the checkpoint's (after checking the new data against
    it). Fine-tuned models remember the elements of both trainings."""
    section = config["finetune"]
    previous = pretrained.load_pretrained(model, config) if section["checkpoint"] else None
    if train_dataset is None:
        train_dataset = data.build_dataset(config, "train")
    keep = previous is not None and section["targets"] == "checkpoint"
    if previous is not None:
        field = task_class(config)(config["task"], config["optim"], TargetState()).energy_field
        pretrained.check_finetuning_data(config, previous, train_dataset, field, keep_targets=keep)
    if keep:
        return previous
    targets = data.fit_target_state(task_class(config), config, train_dataset, progress)
    if previous is not None and previous.elements is not None and targets.elements is not None:
        targets.elements |= previous.elements
    return targets


def load(path: str, config: Config | None = None, *, train: bool = False, use_ema: bool = True) -> ModelAndTask:
    """The model and task of checkpoint (or exported model) ``path``, built from ``config``
    (default: the config saved inside it). ``train``: resuming training, which an exported
    model cannot do. On the CPU; move with :meth:`ModelAndTask.to`."""
    payload = store.read(path)
    if train:
        store.require_training_state(payload, path)
    if config is None:
        config = config_from_dict(payload["config"], origin=f"checkpoint {path!r}")
    built = build(config, payload=payload, source=path, train=train, use_ema=use_ema)
    built.task.targets.source = path
    return built
