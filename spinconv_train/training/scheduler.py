"""Learning-rate schedules: linear warm-up times step / cosine / constant, and
ReduceLROnPlateau whose mode follows the monitored metric (min for errors, max for
EwT / EFwT / cosine)."""
from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from typing import Any

import torch

from spinconv_train.tasks.metrics import higher_is_better

_ALIASES = {None: "constant", "constant": "constant", "step": "step", "cosine": "cosine",
            "reducelronplateau": "plateau", "plateau": "plateau"}


class LRScheduler:
    """Sets the optimiser's learning rate from the step count and validation metrics.

    ``lr(step) = lr_initial · warmup(step) · schedule(step) · plateau_scale``.
    Call :meth:`step` after every optimiser step and :meth:`on_validation` after each
    evaluation.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, optim: Mapping[str, Any],
                 total_steps: int, metric: str) -> None:
        self.optimizer = optimizer
        self.kind = _ALIASES[optim["scheduler"].lower() if optim["scheduler"] else None]
        self.base_lr = float(optim["lr_initial"])
        self.warmup_steps = int(optim["warmup_steps"])
        self.warmup_factor = float(optim["warmup_factor"])
        self.milestones = sorted(int(m) for m in optim["lr_milestones"])
        self.gamma = float(optim["lr_gamma"])
        self.min_factor = float(optim["lr_min_factor"])
        self.total_steps = max(1, int(total_steps))
        self.metric = metric
        expected = "max" if higher_is_better(metric) else "min"
        mode = optim.get("mode") or expected
        if self.kind == "plateau" and mode != expected:
            raise ValueError(f"optim.mode is {mode!r} but the monitored metric {metric!r} is "
                             f"{'higher' if expected == 'max' else 'lower'}-is-better (mode {expected!r})")
        self.mode = mode
        self.factor = float(optim["factor"])
        self.patience = int(optim["patience"])
        self.threshold = float(optim["threshold"])
        self.scale = 1.0
        self.best: float | None = None
        self.num_bad = 0
        self.set_lr(0)

    def factor_at(self, step: int) -> float:
        """The multiplier of ``lr_initial`` after ``step`` optimiser steps (plateau excluded)."""
        warm = 1.0
        if step < self.warmup_steps:
            warm = self.warmup_factor + (1.0 - self.warmup_factor) * step / self.warmup_steps
        if self.kind == "step":
            main = self.gamma ** bisect.bisect_right(self.milestones, step)
        elif self.kind == "cosine":
            progress = min(step, self.total_steps) / self.total_steps
            main = self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            main = 1.0
        return warm * main

    def set_lr(self, step: int) -> float:
        lr = self.base_lr * self.factor_at(step) * self.scale
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def step(self, step: int) -> float:
        """Update the learning rate for the next step; return it."""
        return self.set_lr(step)

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        margin = abs(self.best) * self.threshold
        return value < self.best - margin if self.mode == "min" else value > self.best + margin

    def on_validation(self, metrics: Mapping[str, float], step: int) -> None:
        """ReduceLROnPlateau: scale the rate by ``factor`` after ``patience`` bad evaluations."""
        if self.kind != "plateau":
            return
        if self.metric not in metrics:
            raise KeyError(f"scheduler monitors {self.metric!r} but validation gave {sorted(metrics)}")
        value = float(metrics[self.metric])
        if self._improved(value):
            self.best, self.num_bad = value, 0
        else:
            self.num_bad += 1
            if self.num_bad > self.patience:
                self.scale *= self.factor
                self.num_bad = 0
        self.set_lr(step)

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "best": self.best, "num_bad": self.num_bad}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.scale, self.best, self.num_bad = state["scale"], state["best"], state["num_bad"]
