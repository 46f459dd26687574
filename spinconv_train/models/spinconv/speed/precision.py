"""Mixed-precision rules of the model: geometry in full precision, sums accumulated in float32.

Under ``torch.autocast`` the learned layers (linear maps, spin convolutions) may run in
float16/bfloat16, but the geometry must not: sphere coordinates rounded to three digits
would move neighbours between grid cells and break the rotation invariance, and per-atom
sums of ~40 half-precision edge messages lose the energy's small differences.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = ["accumulation_dtype", "autocast_state", "geometry_precision"]


@contextlib.contextmanager
def geometry_precision(reference: Tensor) -> Iterator[None]:
    """Autocast switched off on ``reference``'s device: ops run in their inputs' dtype."""
    with torch.autocast(device_type=reference.device.type, enabled=False):
        yield


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype to sum ``dtype`` values in: float32 for half types, else ``dtype`` itself."""
    return torch.promote_types(dtype, torch.float32)


def autocast_state(device_type: str) -> tuple[bool, torch.dtype | None]:
    """(autocast enabled on ``device_type``, its dtype); the per-device query of torch >= 2.4
    with a fallback for torch 2.3 (CPU and CUDA only there)."""
    if hasattr(torch, "get_autocast_dtype"):
        return torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)
    if device_type == "cpu":
        return torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
    return torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype()
