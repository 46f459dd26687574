"""Versions, hardware and thread settings of the machine a suite runs on, recorded in each
run's status so that a report states where its numbers were made."""
from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Mapping


def environment(cwd: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Versions, hardware, commit (of the checkout at ``cwd``) and thread settings (of the
    environment ``env`` runs get, default this process's) of this machine."""
    info = {"python": platform.python_version(), "platform": platform.platform()}
    for module in ("torch", "torch_geometric", "ase", "numpy", "matplotlib"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            info[module] = "not installed"
    try:
        info["git commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True,
                                            text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        info["git commit"] = "unknown"
    cpu = "unknown"
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    info["CPU"] = f"{cpu}, {os.cpu_count()} logical cores"
    info["OMP_NUM_THREADS"] = (os.environ if env is None else env).get("OMP_NUM_THREADS", "1 (set by reproduce.py)")
    return info
