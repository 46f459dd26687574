"""Tensorboard scalars under ``<run_dir>/tensorboard``."""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from spinconv_train.loggers.base import Logger
from spinconv_train.registry import LOGGERS


@LOGGERS.register("tensorboard")
class TensorboardLogger(Logger):
    """Writes ``<split>/<metric>`` scalars with torch's SummaryWriter."""

    def __init__(self, run_dir: str, config: Mapping[str, Any] | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter  # imported on use

        self.log_dir = os.path.join(run_dir, "tensorboard")
        self.writer = SummaryWriter(log_dir=self.log_dir)

    def log(self, metrics: Mapping[str, float], step: int, split: str, epoch: float | None = None) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(f"{split}/{name}", float(value), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
