"""The shared loop: train steps, periodic evaluation and checkpoints, prediction."""
from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from spinconv_train import distributed as dist
from spinconv_train.atomic_files import save_npz_atomic
from spinconv_train.checkpoints import model_dtype
from spinconv_train.tables import format_table
from spinconv_train.tasks.metrics import MetricAccumulator
from spinconv_train.tasks.targets import batch_sids, require_labels, structure_ids
from spinconv_train.training.attempts import end_attempt
from spinconv_train.training.hooks import Hook, default_hooks
from spinconv_train.training.session import Session, attach_scheduler
from spinconv_train.training.signals import StopSignals, TrainingInterrupted, signal_name

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


def total_steps(optim: Mapping[str, Any], steps_per_epoch: int) -> int:
    """``optim.max_steps`` when set, else ``max_epochs × (optimiser) steps per epoch``."""
    if optim["max_steps"] is not None:
        return int(optim["max_steps"])
    return int(optim["max_epochs"]) * steps_per_epoch


def _progress(session: Session) -> bool:
    return bool(session.options.progress and session.config["logger"]["progress_bar"] and dist.is_main())


def _check_finite(session: Session, loss: torch.Tensor, batch: Any) -> None:
    bad = torch.tensor([0.0 if torch.isfinite(loss.detach()) else 1.0], device=loss.device)
    dist.all_reduce_sum(bad)  # every rank stops together
    if bad.item() == 0:
        return
    last = session.checkpoint_path()
    kept = (f"the last good checkpoint {last!r} is kept" if os.path.exists(last)
            else "no checkpoint had been written yet")
    raise NonFiniteLossError(
        f"non-finite training loss ({loss.item()}) at step {session.step + 1} (epoch {session.epoch}, batch "
        f"{session.batch_in_epoch + 1}); batch sids: {batch_sids(batch)}; {kept}, nothing was written after it")


def accumulate_gradients(session: Session, batch: Any, weight: float, sync: bool) -> dict[str, torch.Tensor]:
    """Forward and backward of ``batch``, adding ``weight`` times its loss gradient to the
    parameters' gradients; ``sync=False`` skips DDP's gradient all-reduce (for all but the
    last micro-batch of an accumulated step). Returns the detached outputs and the loss."""
    model = session.train_model
    model.train()
    session.task.targets.record_elements(batch.atomic_numbers)
    no_sync = getattr(model, "no_sync", None)
    context = no_sync() if (no_sync is not None and not sync) else contextlib.nullcontext()
    with context:
        with torch.autocast(device_type=session.device.type, enabled=session.amp):
            out = model(batch, **session.task.model_kwargs())
            loss = session.task.loss(out, batch)
        _check_finite(session, loss, batch)
        scaled = loss * weight  # exact for weight 1
        scaler = session.scaler
        (scaler.scale(scaled) if scaler is not None else scaled).backward()
    outputs = {k: v.detach().float() for k, v in out.items()}
    outputs["loss"] = loss.detach()
    return outputs


def optimizer_step(session: Session, hooks: Sequence[Hook] = ()) -> None:
    """Clip, step the optimiser (through the AMP scaler), zero the gradients for the next
    step, run the hooks (the EMA update) and advance the schedule."""
    optimizer, scaler = session.optimizer, session.scaler
    clip = session.config["optim"]["clip_grad_norm"]
    if clip:
        if scaler is not None:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(session.model.parameters(), float(clip))
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    for hook in hooks:
        hook.after_optimizer_step(session)
    session.step += 1
    session.scheduler.step(session.step)


def on_device(session: Session, batch: Any) -> Any:
    """``batch`` on the session's device, its floating-point fields in the model's
    ``precision`` (float64 runs see float64 positions, cells and labels)."""
    return on_device_for(session.config, session.device, batch)


def on_device_for(config: Mapping[str, Any], device: torch.device, batch: Any) -> Any:
    """``on_device`` without a session: ``batch`` on ``device`` in ``config``'s precision."""
    batch = batch.to(device)
    dtype = model_dtype(config)
    if dtype != torch.float32:
        for key in batch.keys():
            value = batch[key]
            if torch.is_tensor(value) and value.is_floating_point() and value.dtype != dtype:
                batch[key] = value.to(dtype)
    return batch


@torch.no_grad()
def evaluate(session: Session, loader: DataLoader, desc: str = "validating", split: str = "val",
             check_elements: bool = False) -> dict[str, float]:
    """Metrics (and the loss) of the evaluation weights over ``loader`` (the ``split``
    dataset, named in errors), all ranks combined. ``check_elements``: warn about structures
    with elements the model was not trained on (``--mode validate``; a training run's own
    validations do not, as its elements are still being recorded).

    The global RNG is forked, so evaluating never changes a training run's random stream.
    """
    model = session.eval_model
    model.eval()
    acc = MetricAccumulator([*session.task.metric_names(), "loss"])
    limit = session.config["optim"]["eval_max_batches"]
    with torch.random.fork_rng(devices=[]):
        for i, batch in enumerate(tqdm(loader, desc=desc, disable=not _progress(session), leave=False)):
            if limit is not None and i >= limit:
                break
            require_labels(session.task, batch, split)
            if check_elements:
                session.task.targets.check_batch_elements(batch, structure_ids(batch))
            batch = on_device(session, batch)
            out = model(batch, **session.task.model_kwargs())
            loss = session.task.loss(out, batch)
            n = int(batch.natoms.numel())
            acc.add("loss", (float(loss) * n, float(n)))
            session.task.update_metrics(acc, session.task.denormalize(out, batch), batch)
    return acc.compute(session.device)


def _announce(session: Session, text: str) -> None:
    if dist.is_main():
        print(text, flush=True)


def evaluate_extra_splits(session: Session, loaders: Mapping[str, DataLoader], label: str, epoch: float) -> None:
    """Evaluate the extra validation splits (``dataset.val_<name>``), log each under its name
    and keep them in ``session.history`` as ``<label>/<name>``."""
    for split, loader in loaders.items():
        metrics = evaluate(session, loader, f"validating ({split})", split)
        session.loggers.log(metrics, session.step, split, epoch)
        session.history[f"{label}/{split}"] = metrics


def _new_window(session: Session) -> MetricAccumulator:
    return MetricAccumulator([*session.task.metric_names(), "loss"])


def window_state(window: MetricAccumulator, device: torch.device) -> dict[str, dict[str, float]]:
    """The training-metric sums and counts not yet logged, summed over all ranks (a
    collective: every rank calls it), so that a resumed run logs the same rows under any
    process count."""
    names = sorted(window.sums)
    packed = torch.tensor([[window.sums[n], window.counts[n]] for n in names] or [[0.0, 0.0]],
                          dtype=torch.float64, device=device)
    dist.all_reduce_sum(packed)
    return {"sums": {n: float(packed[i, 0]) for i, n in enumerate(names)},
            "counts": {n: float(packed[i, 1]) for i, n in enumerate(names)}}


def restored_window(session: Session) -> MetricAccumulator:
    """A fresh window holding a checkpoint's unlogged sums (on rank 0, so each counts once)."""
    window = _new_window(session)
    if session.train_window is not None and dist.is_main():
        window.sums.update(session.train_window["sums"])
        window.counts.update(session.train_window["counts"])
    session.train_window = None
    return window


def _validate_and_checkpoint(session: Session, val_loader: DataLoader | None,
                             extra_val: Mapping[str, DataLoader], hooks: Sequence[Hook],
                             window: MetricAccumulator) -> None:
    metrics: dict[str, float] = {}
    if val_loader is not None:
        metrics = evaluate(session, val_loader)
        session.loggers.log(metrics, session.step, "val", session.epoch)
        session.history["trained"] = metrics
        _announce(session, f"step {session.step} val " + " ".join(f"{k} {v:.5g}" for k, v in metrics.items()))
        evaluate_extra_splits(session, extra_val, "trained", session.epoch)
        for hook in hooks:
            hook.after_validation(session, metrics)
    session.save(metrics=metrics, window=window_state(window, session.device))


def train(session: Session, train_loader: DataLoader, val_loader: DataLoader | None,
          extra_val: Mapping[str, DataLoader] | None = None,
          hooks: Sequence[Hook] | None = None) -> dict[str, dict[str, float]]:
    """Train to ``optim.max_steps`` / ``max_epochs`` (or until early stopping); evaluate every
    ``eval_every`` steps (or each epoch) and at the end, writing ``checkpoint.pt`` and
    ``best_checkpoint.pt``. ``extra_val`` (split name -> loader) are evaluated with the
    validation split and logged under their names; only ``val_loader`` selects the best checkpoint.

    Returns the untrained (or, fine-tuning, pretrained; new runs only) and final validation
    metrics, keyed ``untrained`` / ``pretrained`` / ``trained``, and ``<key>/<split>`` for the extra splits.
    ``hooks``: what runs after optimiser steps and validations (default :func:`default_hooks`).
    """
    extra_val = dict(extra_val or {})
    hooks = default_hooks() if hooks is None else list(hooks)
    optim = session.config["optim"]
    batches_per_epoch = len(train_loader)
    if batches_per_epoch == 0:
        raise ValueError("the training loader yields no batches (empty training split?)")
    accumulate = int(optim["accumulate_grad_batches"])
    steps_per_epoch = math.ceil(batches_per_epoch / accumulate)  # optimiser steps
    total = total_steps(optim, steps_per_epoch)
    attach_scheduler(session, total)
    if val_loader is None:
        if optim["early_stopping_patience"] is not None or optim["min_lr"] is not None:
            raise session.config.fail("optim.early_stopping_patience" if optim["early_stopping_patience"] is not None
                                      else "optim.min_lr", "early stopping is checked at validations: the config "
                                      "needs a dataset.val split")
        logger.warning("no dataset.val split: no validation metrics, best checkpoint or plateau schedule")
    start = "pretrained" if session.config["finetune"]["checkpoint"] else "untrained"
    if session.step == 0 and val_loader is not None:
        session.history[start] = evaluate(session, val_loader, f"validating ({start})")
        session.loggers.log(session.history[start], 0, "val", 0)
        _announce(session, f"{start} model, validation metrics:\n" + format_table({start: session.history[start]}))
        evaluate_extra_splits(session, extra_val, start, 0)
    stop = StopSignals()
    try:
        with stop:
            _train_steps(session, train_loader, val_loader, extra_val, hooks, total, stop)
    except TrainingInterrupted as interrupted:
        _end(session, interrupted.step, f"signal {signal_name(interrupted.signum)}: checkpoint written")
        raise
    except KeyboardInterrupt:
        _end(session, session.step, "SIGINT twice: stopped without a checkpoint")
        raise
    except Exception as err:
        _end(session, session.step, f"error: {type(err).__name__}: {err}")
        raise
    _end(session, session.step, f"early stopping: {session.stop_reason}" if session.stop_reason else "finished")
    if dist.is_main() and "trained" in session.history:
        labels = [k for k in ("untrained", "pretrained", "trained") if k in session.history]
        print("validation metrics:\n" + format_table({k: session.history[k] for k in labels}), flush=True)
        for split in extra_val:
            rows = {k: session.history[f"{k}/{split}"] for k in labels if f"{k}/{split}" in session.history}
            print(f"validation metrics, {split}:\n" + format_table(rows), flush=True)
    return session.history


def _train_steps(session: Session, train_loader: DataLoader, val_loader: DataLoader | None,
                 extra_val: Mapping[str, DataLoader], hooks: Sequence[Hook], total: int, stop: StopSignals) -> None:
    window = restored_window(session)
    bar = tqdm(total=total, initial=session.step, desc="training", disable=not _progress(session))
    try:
        _steps(session, train_loader, val_loader, extra_val, hooks, total, stop, window, bar)
    finally:
        bar.close()


def _steps(session: Session, train_loader: DataLoader, val_loader: DataLoader | None,
           extra_val: Mapping[str, DataLoader], hooks: Sequence[Hook], total: int, stop: StopSignals,
           window: MetricAccumulator, bar: Any) -> None:
    optim, log_cfg = session.config["optim"], session.config["logger"]
    batches_per_epoch = len(train_loader)
    accumulate = int(optim["accumulate_grad_batches"])
    eval_every, ckpt_every = optim["eval_every"], optim["checkpoint_every"]
    print_every = max(1, int(log_cfg["print_every"]))
    sampler = train_loader.batch_sampler
    tick = time.perf_counter()
    _stop_if_signalled(session, stop, window)
    session.stop_reason = None
    session.optimizer.zero_grad(set_to_none=True)
    if session.batch_in_epoch >= batches_per_epoch:  # a position past this epoch's end (another global batch)
        session.epoch, session.batch_in_epoch = session.epoch + 1, 0
    while session.step < total and not session.stop_reason:
        sampler.set_epoch(session.epoch)
        if session.batch_in_epoch:
            sampler.load_state_dict({"epoch": session.epoch, "batches_yielded": session.batch_in_epoch,
                                     "seed": session.config["seed"]})
        for batch in train_loader:
            require_labels(session.task, batch, "train")
            batch = on_device(session, batch)
            # micro-batches of one optimiser step: `accumulate` of them (fewer at an epoch's end),
            # each loss weighted by 1 / their number; checkpoints fall between steps only
            group_start = session.batch_in_epoch - session.batch_in_epoch % accumulate
            group = min(accumulate, batches_per_epoch - group_start)
            last = session.batch_in_epoch - group_start == group - 1
            out = accumulate_gradients(session, batch, 1.0 / group, sync=last)
            n = int(batch.natoms.numel())
            window.add("loss", (float(out["loss"]) * n, float(n)))
            session.task.update_metrics(window, session.task.denormalize(out, batch), batch)
            session.batch_in_epoch += 1
            if session.batch_in_epoch == batches_per_epoch:
                session.epoch, session.batch_in_epoch = session.epoch + 1, 0
            if not last:
                continue
            optimizer_step(session, hooks)
            bar.update(1)
            if session.step % print_every == 0:
                train_metrics = window.compute(session.device)
                train_metrics["lr"] = session.optimizer.param_groups[0]["lr"]
                session.loggers.log(train_metrics, session.step, "train", _epoch_float(session, batches_per_epoch))
                rate = (time.perf_counter() - tick) / print_every
                _announce(session, _train_line(session, total, batches_per_epoch, train_metrics, rate))
                window, tick = _new_window(session), time.perf_counter()
            done = session.step >= total
            epoch_end = session.batch_in_epoch == 0
            if done or (eval_every and session.step % eval_every == 0) or (not eval_every and epoch_end):
                _validate_and_checkpoint(session, val_loader, extra_val, hooks, window)
                tick = time.perf_counter()  # the step rate excludes evaluation
            elif ckpt_every and session.step % ckpt_every == 0:
                session.save(window=window_state(window, session.device))
            if not done:
                _stop_if_signalled(session, stop, window)
            if done or epoch_end or session.stop_reason:
                break


def _stop_if_signalled(session: Session, stop: StopSignals, window: MetricAccumulator) -> None:
    """At a step boundary: when any rank got a stop signal, write the checkpoint of this step,
    say so in one line, hand the signal to the handler installed before ours (submitit's
    requeue) and raise :class:`TrainingInterrupted`."""
    signum = stop.agreed(session.device)
    if signum is None:
        return
    session.save(window=window_state(window, session.device))
    path = session.checkpoint_path()
    if dist.is_main():
        logger.warning("%s received: stopped after step %d, checkpoint written to %s; rerun the same command "
                       "(or let the job requeue) to continue from it", signal_name(signum), session.step, path)
    _end(session, session.step, f"signal {signal_name(signum)}: checkpoint written")
    stop.chain(signum)
    raise TrainingInterrupted(signum, session.step, path)


def _end(session: Session, step: int, reason: str) -> None:
    """Record the attempt's end in ``attempts.jsonl`` (once; rank 0)."""
    if dist.is_main() and os.path.isdir(session.run_dir):
        end_attempt(session.run_dir, step, reason)


def _epoch_float(session: Session, batches_per_epoch: int) -> float:
    return round(session.epoch + session.batch_in_epoch / batches_per_epoch, 4)


def _train_line(session: Session, total: int, batches_per_epoch: int, metrics: Mapping[str, float],
                rate: float) -> str:
    keys = [k for k in ("loss", "energy_mae", "forces_mae") if k in metrics and math.isfinite(metrics[k])]
    parts = [f"step {session.step}/{total}", f"epoch {_epoch_float(session, batches_per_epoch):.2f}"]
    parts += [f"{k} {metrics[k]:.4g}" for k in keys]
    parts += [f"lr {metrics['lr']:.3g}", f"{rate:.3f} s/step"]
    return "  ".join(parts)


@torch.no_grad()
def predict(session: Session, loader: DataLoader, path: str) -> str:
    """Write ``predictions.npz`` (ids, float32 energy, free-atom forces, natoms, chunk_idx;
    stress (B,3,3) when the model is trained on it) for every structure of ``loader`` (labels not needed); return its path.
    ``forces`` holds the free atoms only (as OC20 scores them), so ``natoms`` counts each
    structure's *free* atoms, its rows of ``forces`` (all atoms when
    ``task.eval_on_free_atoms`` is false), and ``chunk_idx = cumsum(natoms)[:-1]`` splits
    ``forces`` per structure."""
    model = session.eval_model
    model.eval()
    parts: dict[str, list[Any]] = {}
    with torch.random.fork_rng(devices=[]):
        for batch in tqdm(loader, desc="predicting", disable=not _progress(session), leave=False):
            session.task.targets.check_batch_elements(batch, structure_ids(batch))
            batch = on_device(session, batch)
            out = model(batch, **session.task.model_kwargs())
            arrays = session.task.prediction_arrays(session.task.denormalize(out, batch), batch)
            for key, value in arrays.items():
                parts.setdefault(key, []).append(value)
    gathered = dist.gather_objects(parts)
    if not dist.is_main():
        return path
    merged: dict[str, list[Any]] = {}
    for rank_parts in gathered:
        for key, chunks in rank_parts.items():
            merged.setdefault(key, []).extend(chunks)
    out = {"ids": np.array([i for chunk in merged.get("ids", []) for i in chunk], dtype=str)}
    for key in ("energy", "forces", "natoms", "stress"):
        if key in merged:
            out[key] = np.concatenate(merged[key])
    if "forces" in out:
        out["chunk_idx"] = np.cumsum(out["natoms"])[:-1]
    save_npz_atomic(path, compress=True, **out)
    return path
