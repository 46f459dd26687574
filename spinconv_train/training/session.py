"""A run's state (model, optimiser, position, ...) and how it is built, saved and restored."""
from __future__ import annotations

import gc
import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from spinconv_train import checkpoints
from spinconv_train import distributed as dist
from spinconv_train.checkpoints import store as ckpt
from spinconv_train.checkpoints.ema import build_ema
from spinconv_train.config import Config
from spinconv_train.loggers import MultiLogger
from spinconv_train.rundir import RunOptions, open_run_dir, start_process
from spinconv_train.tasks.build import monitored_metric
from spinconv_train.tasks.metrics import higher_is_better
from spinconv_train.tasks.protocol import Task
from spinconv_train.training.optim import build_optimizer
from spinconv_train.training.scheduler import LRScheduler

logger = logging.getLogger(__name__)


@dataclass
class Session:
    """Everything one process needs to train, evaluate or predict."""

    config: Config
    options: RunOptions
    device: torch.device
    run_dir: str
    model: torch.nn.Module
    task: Task
    metric: str
    loggers: MultiLogger
    ddp_model: torch.nn.Module | None = None
    optimizer: torch.optim.Optimizer | None = None
    scheduler: LRScheduler | None = None
    ema: torch.optim.swa_utils.AveragedModel | None = None
    scaler: torch.amp.GradScaler | None = None
    amp: bool = False
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_metric: float | None = None
    evals_since_best: int = 0  # validations since the monitored metric last improved
    stop_reason: str | None = None  # set when early stopping ends the run
    scheduler_state: dict[str, Any] | None = None  # from a checkpoint, until the scheduler exists
    history: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def eval_model(self) -> torch.nn.Module:
        """The EMA weights when EMA is on, else the model."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def train_model(self) -> torch.nn.Module:
        return self.ddp_model if self.ddp_model is not None else self.model

    def is_better(self, value: float) -> bool:
        if self.best_metric is None or not np.isfinite(self.best_metric):
            return bool(np.isfinite(value))
        return value > self.best_metric if higher_is_better(self.metric) else value < self.best_metric

    def close(self) -> None:
        """Close the loggers and release the DDP wrapper. Call before the process group is
        destroyed: a DDP reducer freed after that blocks forever in gloo's destructor."""
        self.loggers.close()
        self.ddp_model = None
        gc.collect()

    def checkpoint_path(self, best: bool = False) -> str:
        return os.path.join(self.run_dir, ckpt.BEST_CHECKPOINT if best else ckpt.CHECKPOINT)

    def save(self, best: bool = False, metrics: dict[str, float] | None = None) -> None:
        """Write ``checkpoint.pt`` (or ``best_checkpoint.pt``) atomically, on rank 0 only."""
        if not dist.is_main():
            return
        payload = ckpt.build_payload(
            config=self.config, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
            ema=self.ema, scaler=self.scaler, targets=self.task.targets, step=self.step, epoch=self.epoch,
            batch_in_epoch=self.batch_in_epoch, sampler_seed=self.config["seed"],
            best_metric=self.best_metric, metrics=metrics or {}, evals_since_best=self.evals_since_best,
            stop_reason=self.stop_reason)
        ckpt.save_atomic(payload, self.checkpoint_path(best))


def open_session(config: Config, options: RunOptions, mode: str, train_dataset: Any = None) -> Session:
    """Build the model and task (restoring ``options.checkpoint``, or fitting the target
    normaliser on ``train_dataset`` for a new run), plus the optimiser, EMA and AMP scaler
    when training."""
    device = start_process(config, options.cpu)
    training = mode == "train"
    if options.checkpoint:
        built = checkpoints.load(options.checkpoint, config, train=training, use_ema=not training)
    elif training:  # a new run
        built = checkpoints.build(config, train=True, train_dataset=train_dataset,
                                  progress=options.progress and dist.is_main())
    else:
        raise ckpt.CheckpointError(f"--mode {mode} needs --checkpoint (a checkpoint.pt of a trained run)")
    built.to(device)
    run_dir, loggers = open_run_dir(config, options, mode)
    session = Session(config=config, options=options, device=device, run_dir=run_dir, model=built.model,
                      task=built.task, metric=monitored_metric(config, built.task), loggers=loggers, ema=built.ema)
    if training:
        _add_training_state(session, built.payload)
    logger.info("run directory %s", run_dir)
    return session


def _add_training_state(session: Session, payload: Mapping[str, Any] | None) -> None:
    config, model = session.config, session.model
    optim = config["optim"]
    session.amp = warn_amp_on_cpu(session.options.amp, session.device)
    if session.amp and config["precision"] == "float64":
        raise config.fail("precision", "--amp trains in float16 autocast; it cannot be combined with precision: "
                          "float64 (leave out --amp, or use float32)")
    session.optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], optim)
    if optim["ema_decay"]:
        session.ema = build_ema(model, float(optim["ema_decay"]))
    session.scaler = torch.amp.GradScaler("cuda") if session.amp else None
    if dist.get_world_size() > 1:
        ids = [session.device.index] if session.device.type == "cuda" else None
        session.ddp_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if payload is not None:
        _restore_training_state(session, payload)


def attach_scheduler(session: Session, total_steps: int) -> None:
    """The scheduler needs the run length, known once the training loader exists."""
    session.scheduler = LRScheduler(session.optimizer, session.config["optim"], total_steps, session.metric)
    if session.scheduler_state is not None:
        session.scheduler.load_state_dict(session.scheduler_state)
    session.scheduler.set_lr(session.step)


def _restore_training_state(session: Session, payload: Mapping[str, Any]) -> None:
    path = session.options.checkpoint
    try:
        if payload.get("optimizer") is not None:
            session.optimizer.load_state_dict(payload["optimizer"])
        if session.ema is not None and payload.get("ema") is not None:
            session.ema.load_state_dict(payload["ema"])
        if session.scaler is not None and payload.get("scaler") is not None:
            session.scaler.load_state_dict(payload["scaler"])
    except (ValueError, RuntimeError, KeyError) as err:
        raise ckpt.CheckpointError(f"checkpoint {path!r}: cannot restore the training state: {err}") from None
    session.scheduler_state = payload.get("scheduler")
    session.step = int(payload["step"])
    session.epoch = int(payload["epoch"])
    session.batch_in_epoch = int(payload["sampler"]["batches_yielded"])
    session.best_metric = payload.get("best_metric")
    session.evals_since_best = int(payload.get("early_stopping", {}).get("evals_since_best", 0))
    ckpt.set_rng_state(payload["rng"])
    logger.info("resumed from %s at step %d (epoch %d, batch %d)", path, session.step, session.epoch,
                session.batch_in_epoch)


def warn_amp_on_cpu(amp: bool, device: torch.device) -> bool:
    """AMP runs on CUDA only; on CPU the flag is ignored with a warning."""
    if amp and device.type != "cuda":
        warnings.warn("--amp needs a CUDA device; training in float32 on CPU", RuntimeWarning, stacklevel=2)
        return False
    return amp
