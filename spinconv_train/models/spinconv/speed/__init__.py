"""SpinConv's speed machinery, kept apart from the blocks of the paper's figure.

The blocks hold the math and call this through this one interface (never a module of it);
it never imports a block. Chunks, scratch buffers, kept kernels and device constants change
only speed and memory, never the outputs; the precision rules only act under
``torch.autocast`` (in full precision they are no-ops):

- ``chunk_spheres``, ``sphere_chunks``, ``SphereChunk``, ``ChunkedSplatPlan``
  (``chunking.py``): how many spheres one projection / spin-convolution chunk holds on a
  device (bounding inference memory, keeping chunks in cache), which points land in each
  chunk, and the chunked splat plan with the scratch buffers its chunks share.
- ``Scratch``, ``scratch_empty``, ``scratch_matmul``, ``permuted_copy`` (``scratch.py``):
  reusable output buffers for the chunk loop without autograd, and the ops that write
  into them (or into fresh tensors when no buffers are given).
- ``KernelCache``, ``frozen_weights`` (``kernel_cache.py``): a kernel derived from a
  parameter (the spin convolution's Fourier-domain weights), kept between inference calls
  and rebuilt whenever the parameter, dtype, device, inference mode or autocast state change.
- ``device_constant`` (``constants.py``): small constant tensors (DFT matrices, index
  orders) made once per device and dtype.
- ``geometry_precision``, ``accumulation_dtype``, ``autocast_state`` (``precision.py``):
  mixed-precision rules (geometry in full precision, sums in float32, the autocast part of
  a kept kernel's key).

``GraphedSpinConv`` (``graphed.py``, CUDA-graph replay of a whole model) wraps the model
from outside and is imported from ``speed.graphed`` by its users, not by the blocks.
"""
from __future__ import annotations

from .chunking import ChunkedSplatPlan, SphereChunk, chunk_spheres, sphere_chunks
from .constants import device_constant
from .kernel_cache import KernelCache, frozen_weights
from .precision import accumulation_dtype, autocast_state, geometry_precision
from .scratch import Scratch, permuted_copy, scratch_empty, scratch_matmul

__all__ = [
    "ChunkedSplatPlan",
    "KernelCache",
    "Scratch",
    "SphereChunk",
    "accumulation_dtype",
    "autocast_state",
    "chunk_spheres",
    "device_constant",
    "frozen_weights",
    "geometry_precision",
    "permuted_copy",
    "scratch_empty",
    "scratch_matmul",
    "sphere_chunks",
]
