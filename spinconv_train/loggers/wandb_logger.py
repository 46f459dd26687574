"""Weights & Biases logging. Never prompts: without credentials it runs offline.

The mode comes from ``WANDB_MODE`` (``offline`` always works); files go to
``<run_dir>/wandb``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from spinconv_train.config import plain
from spinconv_train.loggers.base import Logger
from spinconv_train.registry import LOGGERS


def _mode() -> str:
    mode = os.environ.get("WANDB_MODE")
    if mode:
        return mode
    has_key = bool(os.environ.get("WANDB_API_KEY")) or os.path.exists(os.path.expanduser("~/.netrc"))
    return "online" if has_key else "offline"


@LOGGERS.register("wandb")
class WandbLogger(Logger):
    """One wandb run per training run; metrics as ``<split>/<metric>``."""

    def __init__(self, run_dir: str, config: Mapping[str, Any] | None = None) -> None:
        try:
            import wandb
        except ImportError:  # pragma: no cover - depends on the environment
            raise ImportError("logger 'wandb' needs the wandb package: pip install -e '.[wandb]'") from None
        config = config or {}
        section = config.get("logger", {})
        self.mode = _mode()
        self.run = wandb.init(
            project=section.get("project", "spinconv_train"), entity=section.get("entity"),
            name=os.path.basename(os.path.abspath(run_dir)), dir=run_dir, mode=self.mode,
            config=plain(config), reinit="finish_previous",
            settings=wandb.Settings(silent=True, console="off"),
        )

    def log(self, metrics: Mapping[str, float], step: int, split: str, epoch: float | None = None) -> None:
        payload = {f"{split}/{k}": float(v) for k, v in metrics.items()}
        if epoch is not None:
            payload["epoch"] = epoch
        self.run.log(payload, step=step)

    def close(self) -> None:
        self.run.finish()
