"""SpinConv, split along the paper's figure: edges, distance block, embedding block, local
frames, sphere projection, spin convolution, message block, energy and force heads."""
from .model import SpinConv

__all__ = ["SpinConv"]
