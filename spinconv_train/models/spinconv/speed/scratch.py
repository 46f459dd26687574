"""Reusable output buffers for the inference chunk loop.

Without autograd, every chunk of spheres goes through the same projection and spin
convolution steps with (almost) the same shapes, and each step's output is dead once the
next step has read it. Writing those outputs into buffers kept for the whole forward pass,
instead of fresh tensors, avoids re-allocating ~80 MB per chunk: with glibc's default
malloc, freed blocks of that size go back to the system and every new one costs page
faults (docs/benchmarks.md has the numbers).

A buffer handed out under a name is valid until the same name is asked for again, so each
name must belong to one step of the pipeline. Never use it with autograd: the buffers are
overwritten by the next chunk.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["Scratch", "permuted_copy", "scratch_empty", "scratch_matmul"]


class Scratch:
    """Named, growing flat buffers; ``take`` returns a contiguous view of the asked shape."""

    def __init__(self) -> None:
        self._buffers: dict[str, Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        """A contiguous (uninitialised) tensor of ``shape`` backed by buffer ``name``."""
        numel = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < numel or buffer.dtype != dtype or buffer.device != device:
            buffer = torch.empty(numel, dtype=dtype, device=device)
            self._buffers[name] = buffer
        return buffer[:numel].view(shape)

    def __len__(self) -> int:
        return len(self._buffers)


def scratch_empty(scratch: Scratch | None, name: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """An uninitialised tensor of ``shape`` with ``like``'s dtype and device: buffer ``name``
    of ``scratch`` in the inference chunk loop, else a fresh tensor."""
    if scratch is None:
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    return scratch.take(name, shape, like.dtype, like.device)


def scratch_matmul(a: Tensor, b: Tensor, scratch: Scratch | None, name: str) -> Tensor:
    """``torch.matmul(a, b)``, written into buffer ``name`` of ``scratch`` when given."""
    if scratch is None:
        return torch.matmul(a, b)
    shape = tuple(torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])) + (a.shape[-2], b.shape[-1])
    return torch.matmul(a, b, out=scratch.take(name, shape, a.dtype, a.device))


def permuted_copy(x: Tensor, dims: tuple[int, ...], scratch: Scratch | None = None, name: str = "") -> Tensor:
    """``x.permute(dims)`` as a contiguous tensor, copied into a preallocated one (a fresh
    tensor, or buffer ``name`` of ``scratch``): faster than ``.reshape`` / ``.contiguous``
    of the permuted view."""
    view = x.permute(dims)
    out = scratch_empty(scratch, name, tuple(view.shape), x)
    out.copy_(view)
    return out
