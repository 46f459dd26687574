"""The one entry path of ``main.py`` and the ``spinconv-train`` console command.

Importing this module imports nothing heavy: :func:`main` sets the process defaults that
must precede ``import torch``, then runs the command line.
"""
from __future__ import annotations

import os


def main(argv: list[str] | None = None) -> int:
    """Run the command line (``launch/cli.py``) and return its exit code."""
    # Idle OpenMP threads sleep instead of spinning (unless the user chose otherwise): spinning
    # threads slow every step on a shared or oversubscribed machine (docs/benchmarks.md,
    # "OpenMP"). Takes effect only when set before torch is imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from spinconv_train.launch.cli import main as run_command_line

    return run_command_line(argv)
