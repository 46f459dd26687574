"""A run's state (model, optimiser, position, ...) and how it is built, saved and restored."""
from __future__ import annotations

import gc
import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import yaml

from spinconv_train import checkpoints
from spinconv_train import distributed as dist
from spinconv_train.checkpoints import store as ckpt
from spinconv_train.checkpoints.ema import build_ema
from spinconv_train.config import Config, plain
from spinconv_train.datasets.sampler import WorldSizeChangeError, resume_position
from spinconv_train.loggers import MultiLogger
from spinconv_train.rundir import RunDirectoryExistsError, RunFolder, RunOptions, claim_run_dir, open_run_dir, release_failed_start, start_process, trim_metrics
from spinconv_train.tasks.build import monitored_metric
from spinconv_train.tasks.metrics import higher_is_better
from spinconv_train.tasks.protocol import Task
from spinconv_train.training.attempts import begin_attempt
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
    train_window: dict[str, dict[str, float]] | None = None  # metrics of steps not yet logged (all ranks summed)
    start_step: int = 0  # the step this attempt started at

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

    def save(self, best: bool = False, metrics: dict[str, float] | None = None,
             window: dict[str, dict[str, float]] | None = None) -> None:
        """Write ``checkpoint.pt`` (or ``best_checkpoint.pt``) atomically, on rank 0 only.

        The sampler position is also stored as structures consumed in the epoch, with the
        process count and per-process batch size, so that another process count can resume
        it; ``window`` holds the sums of the training metrics not yet logged."""
        if not dist.is_main():
            return
        payload = ckpt.build_payload(
            config=self.config, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
            ema=self.ema, scaler=self.scaler, targets=self.task.targets, step=self.step, epoch=self.epoch,
            batch_in_epoch=self.batch_in_epoch, sampler_seed=self.config["seed"],
            best_metric=self.best_metric, metrics=metrics or {}, evals_since_best=self.evals_since_best,
            stop_reason=self.stop_reason)
        world, batch = dist.get_world_size(), int(self.config["optim"]["batch_size"])
        payload["sampler"].update(world_size=world, batch_size=batch,
                                  structures=self.batch_in_epoch * world * batch)
        if window is not None:
            payload["train_window"] = window
        ckpt.save_atomic(payload, self.checkpoint_path(best))


def open_session(config: Config, options: RunOptions, mode: str, train_dataset: Any = None) -> Session:
    """Build the model and task (restoring ``options.checkpoint``, or fitting the target
    normaliser on ``train_dataset`` for a new run), plus the optimiser, EMA and AMP scaler
    when training.

    Training in an existing run folder continues it from its own newest ``checkpoint.pt``
    (else from ``options.checkpoint``, else from scratch): leftover temporary files are
    removed, metrics rows after the resumed step (work of a killed attempt, to be redone)
    are dropped, and the attempt is recorded in ``attempts.jsonl``. A start that fails
    removes the folder it created."""
    device = start_process(config, options.cpu)
    training = mode == "train"
    folder = claim_run_dir(options, mode)
    try:
        if training and not folder.created:
            options = _continue_in(folder, config, options)
        if options.checkpoint:
            built = checkpoints.load(options.checkpoint, config, train=training, use_ema=not training)
        elif training:  # a new run
            built = checkpoints.build(config, train=True, train_dataset=train_dataset,
                                      progress=options.progress and dist.is_main())
        else:
            raise ckpt.CheckpointError(f"--mode {mode} needs --checkpoint (a checkpoint.pt of a trained run)")
        built.to(device)
        if training and not folder.created and dist.is_main():
            dropped = trim_metrics(folder.path, int(built.payload["step"]) if built.payload else -1)
            if dropped:
                logger.info("dropped %d metrics rows logged after the resumed step (redone now)", dropped)
        run_dir, loggers = open_run_dir(config, options, mode, folder)
    except BaseException:
        release_failed_start(folder)
        raise
    session = Session(config=config, options=options, device=device, run_dir=run_dir, model=built.model,
                      task=built.task, metric=monitored_metric(config, built.task), loggers=loggers, ema=built.ema)
    if training:
        _add_training_state(session, built.payload)
        session.start_step = session.step
        if dist.is_main():
            begin_attempt(run_dir, session.step, dist.get_world_size(), options.checkpoint)
    logger.info("run directory %s", run_dir)
    return session


def _continue_in(folder: RunFolder, config: Config, options: RunOptions) -> RunOptions:
    """Options for continuing the run in ``folder``: its own checkpoint when it has one.
    Its saved config must equal this one unless ``--resume`` accepts the change."""
    saved = os.path.join(folder.path, "config.yml")
    if os.path.exists(saved):
        with open(saved) as handle:
            before = yaml.safe_load(handle) or {}
        now = yaml.safe_load(yaml.safe_dump(plain(config), sort_keys=False))
        changed = config_differences(before, now)
        if changed and not options.resume:
            raise RunDirectoryExistsError(
                f"{folder.path!r} holds a run with another config ({'; '.join(changed[:5])}"
                f"{'; ...' if len(changed) > 5 else ''}): pass --resume to continue it with this config, "
                "or choose another --run-name")
        if changed:
            logger.warning("continuing %s with a changed config: %s", folder.path, "; ".join(changed))
    if dist.is_main():
        removed = ckpt.remove_temporaries(folder.path)
        if removed:
            logger.info("removed %d temporary files left by an interrupted write in %s", len(removed), folder.path)
    own = os.path.join(folder.path, ckpt.CHECKPOINT)
    if os.path.exists(own):
        logger.info("continuing run %s from its checkpoint %s", folder.path, own)
        return replace(options, checkpoint=own)
    logger.info("continuing run %s, which has no checkpoint yet: %s", folder.path,
                f"from {options.checkpoint}" if options.checkpoint else "from scratch")
    return options


def config_differences(before: Any, now: Any, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every setting that differs between two plain configs."""
    if isinstance(before, dict) and isinstance(now, dict):
        out: list[str] = []
        for key in sorted(set(before) | set(now), key=str):
            out += config_differences(before.get(key, "(unset)"), now.get(key, "(unset)"),
                                      f"{prefix}.{key}" if prefix else str(key))
        return out
    return [] if before == now else [f"{prefix}: {before!r} -> {now!r}"]


def _add_training_state(session: Session, payload: Mapping[str, Any] | None) -> None:
    config, model = session.config, session.model
    optim = config["optim"]
    session.amp = warn_amp_on_cpu(session.options.amp, session.device)
    if session.amp and config["precision"] == "float64":
        raise config.fail("precision", "--amp trains in float16 autocast; it cannot be combined with precision: "
                          "float64 (leave out --amp, or use float32)")
    session.optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], optim)
    session.scaler = torch.amp.GradScaler("cuda") if session.amp else None
    if dist.get_world_size() > 1:
        # DDP copies rank 0's weights to every rank here; before this each rank holds its own
        # initialisation (seeded with seed + rank)
        ids = [session.device.index] if session.device.type == "cuda" else None
        session.ddp_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if optim["ema_decay"]:  # after DDP: every rank's EMA starts from rank 0's weights
        session.ema = build_ema(model, float(optim["ema_decay"]))
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
    world, batch = dist.get_world_size(), int(session.config["optim"]["batch_size"])
    try:
        session.batch_in_epoch, replayed = resume_position(payload["sampler"], world, batch,
                                                           session.options.allow_world_size_change)
    except WorldSizeChangeError as err:
        raise ckpt.CheckpointError(f"checkpoint {path!r}: {err}") from None
    if replayed:
        logger.warning("resuming with another global batch: the last %d structures before the checkpoint's position "
                       "in epoch %d are trained on again", replayed, session.epoch)
    session.train_window = payload.get("train_window")
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
