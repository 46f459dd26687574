"""Small constant tensors made once per device and kept.

Making a constant from Python data on every call means a host-to-device copy per call on an
accelerator: it synchronises and cannot be captured in a CUDA graph. The blocks say what the
constant is (a function building it on the host); this keeps its copy per device and dtype.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Hashable

import torch
from torch import Tensor

__all__ = ["device_constant"]

Constant = Tensor | tuple[Tensor, ...]


def device_constant(
    build: Callable[..., Constant], *args: Hashable, device: torch.device, dtype: torch.dtype | None = None
) -> Constant:
    """``build(*args)`` (a tensor or a tuple of tensors) moved to ``device`` and cast to
    ``dtype`` (None: kept), made once per (build, args, device, dtype) and then reused.
    ``build`` must be a pure function of ``args``; the result must not be written to."""
    return _kept(build, args, device, dtype)


@functools.lru_cache(maxsize=64)
def _kept(build: Callable[..., Constant], args: tuple, device: torch.device, dtype: torch.dtype | None) -> Constant:
    value = build(*args)
    if isinstance(value, tuple):
        return tuple(t.to(device=device, dtype=dtype) for t in value)
    return value.to(device=device, dtype=dtype)
