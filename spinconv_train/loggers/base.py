"""The logger interface: ``log(metrics, step, split, epoch)`` and ``close()``."""
from __future__ import annotations

from typing import Mapping, Optional


class Logger:
    """A metrics sink. Subclasses write to a file, tensorboard or wandb."""

    def log(self, metrics: Mapping[str, float], step: int, split: str, epoch: Optional[float] = None) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release resources."""
