"""How many spheres one projection / spin-convolution chunk holds.

Chunking changes only how the work is split (and so speed and peak memory), never the
result: every chunk runs the same per-sphere math.
"""
from __future__ import annotations

import torch

__all__ = ["AUTO_CHUNK_ELEMENTS_CPU", "AUTO_CHUNK_ELEMENTS_GPU", "chunk_spheres"]

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


def chunk_spheres(elements: int | str | None, grid_values: int, device: torch.device) -> int | None:
    """Spheres per chunk on ``device`` for a budget of ``elements`` grid values
    (``"auto"``: the device's default; None: no chunking), each sphere holding
    ``grid_values`` values (lat x long x hidden)."""
    if elements == "auto":
        elements = AUTO_CHUNK_ELEMENTS_CPU if device.type == "cpu" else AUTO_CHUNK_ELEMENTS_GPU
    return None if elements is None else max(1, int(elements) // grid_values)
