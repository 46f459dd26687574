"""Chunks of spheres: how many one projection / spin-convolution chunk holds, which points
land in each, and the chunked splat plan the blocks run chunk by chunk.

Chunking changes only how the work is split (and so speed and peak memory), never the
result: every chunk runs the same per-sphere math.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

import torch
from torch import Tensor

from .scratch import Scratch

__all__ = [
    "AUTO_CHUNK_ELEMENTS_CPU",
    "AUTO_CHUNK_ELEMENTS_GPU",
    "ChunkedSplatPlan",
    "SphereChunk",
    "chunk_spheres",
    "sphere_chunks",
]

# Grid values (spheres x lat x long x hidden) per chunk: a 16 MiB float32 grid keeps the
# projection, the DFT, the spin-convolution matmuls and the per-edge embedding blocks in
# cache on CPUs (OC20 configuration, benchmark batch, 1 thread, CPU time: forward 5.1 s vs
# 9.6 s in one chunk, training step 13.3 s vs 20.6 s). On GPUs caches do not matter and a
# small batch is bound by kernel launches (H100, OC20 benchmark batch: 31.7 ms forward, of
# which 3.6 ms spin convolutions), so a chunk only bounds memory: 2^27 values (512 MiB per
# float32 grid) runs the benchmark batch (74 M values) in one chunk instead of two (~230
# fewer launches), and still bounds 2000-atom systems (2^26 there: 2.2 GB peak).
AUTO_CHUNK_ELEMENTS_CPU = 2**22
AUTO_CHUNK_ELEMENTS_GPU = 2**27

PlanT = TypeVar("PlanT")


def chunk_spheres(elements: int | str | None, grid_values: int, device: torch.device) -> int | None:
    """Spheres per chunk on ``device`` for a budget of ``elements`` grid values
    (``"auto"``: the device's default; None: no chunking), each sphere holding
    ``grid_values`` values (lat x long x hidden)."""
    if elements == "auto":
        elements = AUTO_CHUNK_ELEMENTS_CPU if device.type == "cpu" else AUTO_CHUNK_ELEMENTS_GPU
    return None if elements is None else max(1, int(elements) // grid_values)


@dataclass(frozen=True)
class SphereChunk:
    """Spheres ``[first, first + size)`` and the points that land on them."""

    points: slice | Tensor  # positions of the chunk's points among all points
    first: int
    size: int

    def select(self, per_point: Tensor) -> Tensor:
        """The rows of ``per_point`` (one row per point) that belong to this chunk; an index
        tensor gathers by index_select (its backward is deterministic on CPU, see
        ``SpinConv._edge_plan``)."""
        if isinstance(self.points, slice):
            return per_point[self.points]
        return per_point.index_select(0, self.points)


def sphere_chunks(dst: Tensor, num_dst: int, max_dst_per_chunk: int, dst_sorted: bool = False) -> list[SphereChunk]:
    """Chunk ``c`` holds spheres ``[c * max_dst_per_chunk, (c + 1) * max_dst_per_chunk)``
    and the points whose destination sphere ``dst`` (P,) lies there, in their order.
    ``dst_sorted``: the caller guarantees ``dst`` is non-decreasing, so every chunk's
    points are a contiguous slice (no sort, no gathers)."""
    if max_dst_per_chunk < 1:
        raise ValueError(f"max_dst_per_chunk must be >= 1, got {max_dst_per_chunk}")
    num_chunks = -(-num_dst // max_dst_per_chunk)
    if dst_sorted:
        firsts = torch.arange(1, num_chunks + 1, device=dst.device) * max_dst_per_chunk
        ends = torch.searchsorted(dst, firsts).tolist()
        order = None
    else:
        chunk_of = torch.div(dst, max_dst_per_chunk, rounding_mode="floor")
        order = torch.argsort(chunk_of, stable=True)
        ends = torch.cumsum(torch.bincount(chunk_of, minlength=num_chunks), 0).tolist()
    chunks, begin = [], 0
    for c, end in enumerate(ends):
        first = c * max_dst_per_chunk
        points = slice(begin, end) if order is None else order[begin:end]
        chunks.append(SphereChunk(points, first, min(max_dst_per_chunk, num_dst - first)))
        begin = end
    return chunks


@dataclass
class ChunkedSplatPlan(Generic[PlanT]):
    """Splat plans of consecutive ranges of destination spheres, in order (each plan has
    ``num_dst`` spheres, numbered from 0).

    Each chunk's grid and spectrum are small enough to stay in cache, and without autograd
    they are freed before the next chunk is projected, so inference memory is bounded by
    the chunk, not the system.
    """

    chunks: list[PlanT]
    num_dst: int
    _scratch: Scratch | None = None

    def inference_scratch(self) -> Scratch | None:
        """Buffers for the chunks' intermediates, kept with the plan so that every block
        using it shares them; None while autograd records (see ``scratch.py``)."""
        if torch.is_grad_enabled():
            return None
        if self._scratch is None:
            self._scratch = Scratch()
        return self._scratch
