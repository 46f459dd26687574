"""The logger interface: ``log(metrics, step, split, epoch)`` and ``close()``."""
from __future__ import annotations

from collections.abc import Mapping


class Logger:
    """A metrics sink. Subclasses write to a file, tensorboard or wandb."""

    def log(self, metrics: Mapping[str, float], step: int, split: str, epoch: float | None = None) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release resources."""
