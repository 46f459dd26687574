"""SpinConv's speed machinery, kept apart from the blocks of the paper's figure.

The blocks call it through this one interface; their math does not depend on it. Chunks
and scratch buffers change only speed and memory, never the outputs; the precision rules
only act under ``torch.autocast`` (in full precision they are no-ops):

- ``chunk_spheres`` (``chunking.py``): how many spheres one projection / spin-convolution
  chunk holds on a device, which bounds inference memory and keeps chunks in cache.
- ``Scratch`` (``scratch.py``): reusable output buffers for the chunk loop without autograd.
- ``geometry_precision``, ``accumulation_dtype``, ``autocast_state`` (``precision.py``):
  mixed-precision rules (geometry in full precision, sums in float32, the autocast key of
  the spin convolution's kernel cache).

``GraphedSpinConv`` (``graphed.py``, CUDA-graph replay of a whole model) wraps the model
from outside and is imported from ``speed.graphed`` by its users, not by the blocks.
"""
from __future__ import annotations

from .chunking import chunk_spheres
from .precision import accumulation_dtype, autocast_state, geometry_precision
from .scratch import Scratch

__all__ = ["Scratch", "accumulation_dtype", "autocast_state", "chunk_spheres", "geometry_precision"]
