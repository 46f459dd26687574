"""``main.py --mode train --dry-run``: check a training setup without training.

Builds what a run needs — the datasets of every split the config names, the model, the
fitted normaliser (or the finetune checkpoint's), the task and the monitored metric — then
runs one training step's forward and backward on the first training batch and one
evaluation batch of each validation split, and reports sizes, losses and times. The model
starts from the run's initial weights (same seed), so the reported loss is the real run's
first training loss (tested). Nothing is written: no run directory, no checkpoint, and the
weights are not updated. Use it before
submitting a long job: a bad path, key, label or shape fails here in seconds.
"""
from __future__ import annotations

import time
from typing import Any

import torch

from spinconv_train import checkpoints
from spinconv_train import distributed as dist
from spinconv_train.config import Config, extra_val_splits
from spinconv_train.rundir import seed_everything
from spinconv_train.tasks import data as build
from spinconv_train.tasks.build import monitored_metric
from spinconv_train.tasks.protocol import Task
from spinconv_train.tasks.targets import require_labels
from spinconv_train.training.loop import NonFiniteLossError, on_device_for


def dry_run(config: Config, cpu: bool = False) -> dict[str, Any]:
    """Build the training setup of ``config`` and time one step on one batch; a summary dict."""
    device = dist.local_device(prefer_cpu=cpu)
    optim = config["optim"]
    train_set = build.build_dataset(config, "train")
    seed_everything(int(config["seed"]))  # as a run does before building its model: the same initial weights
    built = checkpoints.build(config, train=True, train_dataset=train_set)  # as a new run builds it
    model, task = built.model, built.task
    build.check_embedding_covers(model, train_set, "train")
    metric = monitored_metric(config, task)
    model.to(device).train()
    loader = build.train_loader(train_set, optim["batch_size"], config["seed"], 0)
    batch = next(iter(loader))
    require_labels(task, batch, "train")
    batch = on_device_for(config, device, batch)
    start = time.perf_counter()
    loss = task.loss(model(batch, **task.model_kwargs()), batch)
    loss.backward()
    model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    summary: dict[str, Any] = {
        "trainer": config["trainer"], "model": config["model"]["name"], "device": str(device),
        "precision": config["precision"], "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "monitored_metric": metric, "normalizer": task.targets.state_dict()["normalizer"],
        "train_structures": len(train_set), "batch_structures": int(batch.natoms.numel()),
        "batch_atoms": int(batch.pos.shape[0]), "train_step_loss": float(loss.detach()),
        "train_step_seconds": round(time.perf_counter() - start, 4), "splits": {},
    }
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"the first training batch gives a non-finite loss ({float(loss.detach())})")
    model.eval()
    for split in [s for s in ("val", *extra_val_splits(config)) if s in config["dataset"]]:
        dataset = build.build_dataset(config, split)
        build.check_embedding_covers(model, dataset, split)
        first = next(iter(build.eval_loader(dataset, optim["eval_batch_size"] or optim["batch_size"], 0)))
        require_labels(task, first, split)
        summary["splits"][split] = {"structures": len(dataset),
                                    "first_batch_loss": _eval_loss(model, task, on_device_for(config, device, first))}
    if "test" in config["dataset"]:
        summary["splits"]["test"] = {"structures": len(build.build_dataset(config, "test"))}
    return summary


@torch.no_grad()
def _eval_loss(model: torch.nn.Module, task: Task, batch: Any) -> float:
    """The task's loss of ``model`` on one batch, as an evaluation computes it."""
    return float(task.loss(model(batch, **task.model_kwargs()), batch))
