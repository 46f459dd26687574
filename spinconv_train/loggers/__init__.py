"""Metrics loggers: the always-on CSV/JSONL files, tensorboard and wandb."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from spinconv_train.loggers import files, tensorboard, wandb_logger  # noqa: F401  (registers loggers)
from spinconv_train.loggers.base import Logger
from spinconv_train.registry import LOGGERS


class MultiLogger(Logger):
    """Forwards every call to several loggers."""

    def __init__(self, loggers: Sequence[Logger]) -> None:
        self.loggers = list(loggers)

    def log(self, metrics: Mapping[str, float], step: int, split: str, epoch: float | None = None) -> None:
        for logger in self.loggers:
            logger.log(metrics, step, split, epoch)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


def build_loggers(run_dir: str, config: Mapping[str, Any]) -> MultiLogger:
    """The file logger plus each backend named in ``logger.backends``."""
    names: list[str] = ["csv"]
    for name in config.get("logger", {}).get("backends", []):
        if LOGGERS.get(name) is not LOGGERS.get("csv") and name not in names:
            names.append(name)
    return MultiLogger([LOGGERS.get(name)(run_dir, config) for name in names])
