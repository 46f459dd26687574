"""Stop requests by signal: SIGTERM (SLURM's requeue, preemption, scancel, node drain),
SIGUSR1 / SIGUSR2 (time-limit and preemption warnings, submitit's requeue signal) and
SIGINT (Ctrl-C). The loop finishes its step, writes a checkpoint and exits; a second
Ctrl-C aborts at once."""
from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

import torch

from spinconv_train import distributed as dist

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)


class TrainingInterrupted(Exception):
    """Training stopped on a signal after writing its checkpoint."""

    def __init__(self, signum: int, step: int, checkpoint: str) -> None:
        super().__init__(f"{signal.Signals(signum).name} at step {step}: checkpoint {checkpoint}")
        self.signum, self.step, self.checkpoint = signum, step, checkpoint

    @property
    def exit_code(self) -> int:
        """``128 + signal number``, the shell's code for a process ended by that signal."""
        return 128 + int(self.signum)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class StopSignals:
    """While active (``with StopSignals() as stop``), the stop signals only set a flag; the
    handlers installed before are restored on exit and can be handed the signal afterwards
    (:meth:`chain`, e.g. submitit's requeue on its preemption signal)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # handlers only install there
            for signum in STOP_SIGNALS:
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt  # Ctrl-C twice: stop now, without the checkpoint
        if self.received is None:
            self.received = signum

    def agreed(self, device: torch.device) -> int | None:
        """The signal any rank received (all ranks call this at the same step, so that
        they stop together), or None."""
        flags = torch.zeros(len(STOP_SIGNALS), dtype=torch.float64, device=device)
        if self.received is not None:
            flags[STOP_SIGNALS.index(self.received)] = 1.0
        if dist.get_world_size() > 1:
            dist.all_reduce_sum(flags)
        hits = [STOP_SIGNALS[i] for i in range(len(STOP_SIGNALS)) if flags[i] > 0]
        if hits and self.received is None:
            self.received = int(hits[0])
        return int(self.received) if hits else None

    def chain(self, signum: int) -> None:
        """Call the handler that was installed before ours (a Python function, not the
        default action or Python's KeyboardInterrupt raiser)."""
        handler = self.previous.get(signum)
        if callable(handler) and handler is not signal.default_int_handler:
            handler(signum, None)
