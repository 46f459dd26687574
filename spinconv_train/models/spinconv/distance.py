"""Distance block (paper Fig. 2, "distance"): element-pair rescaled Gaussian basis.

Also holds the radial weight functions used elsewhere in the model: the reference's
cosine weight for the frame's reference vector and the optional smooth polynomial
cutoff envelope.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class GaussianBasis(nn.Module):
    """``num`` Gaussians with centres evenly on [start, stop], width = scalar x spacing."""

    def __init__(self, start: float, stop: float, num: int, width_scalar: float = 1.0) -> None:
        super().__init__()
        if num < 2:
            raise ValueError(f"num_basis_functions must be >= 2, got {num}")
        offset = torch.linspace(start, stop, num, dtype=torch.float64)
        spacing = float(offset[1] - offset[0])
        self.coeff = -0.5 / (width_scalar * spacing) ** 2
        self.register_buffer("offset", offset.to(torch.get_default_dtype()), persistent=False)

    def forward(self, dist: Tensor) -> Tensor:
        """(E,) distances -> (E, num) basis values."""
        diff = dist.unsqueeze(-1) - self.offset.to(dist.dtype)
        return torch.exp(self.coeff * diff * diff)


class DistanceBlock(nn.Module):
    """Per element pair, scale s in [1/scalar_max, scalar_max] and offset; basis; Linear."""

    def __init__(
        self,
        num_basis: int,
        out_channels: int,
        max_num_elements: int,
        scalar_max: float,
        basis: GaussianBasis,
        scale_distances: bool,
    ) -> None:
        super().__init__()
        self.max_num_elements = max_num_elements
        self.log_scalar_max = math.log(scalar_max)
        self.scale_distances = scale_distances
        self.basis = basis
        if scale_distances:
            self.dist_scalar = nn.Embedding(max_num_elements * max_num_elements, 1)
            self.dist_offset = nn.Embedding(max_num_elements * max_num_elements, 1)
            nn.init.uniform_(self.dist_scalar.weight, -1e-4, 1e-4)
            nn.init.uniform_(self.dist_offset.weight, -1e-4, 1e-4)
        self.fc1 = nn.Linear(num_basis, out_channels)

    def forward(self, dist: Tensor, source_element: Tensor, target_element: Tensor) -> Tensor:
        """(E,) distances and element indices -> (E, out_channels)."""
        if self.scale_distances:
            pair = source_element * self.max_num_elements + target_element
            scalar = torch.exp(self.log_scalar_max * (2.0 * torch.sigmoid(self.dist_scalar(pair).squeeze(-1)) - 1.0))
            dist = scalar * dist + self.dist_offset(pair).squeeze(-1)
        return self.fc1(self.basis(dist))


def cosine_weight(dist: Tensor, cutoff: float) -> Tensor:
    """0.5 (cos(pi d / cutoff) + 1) inside the cutoff, 0 outside (the reference's frame weight)."""
    inside = dist < cutoff
    w = 0.5 * (torch.cos(dist * (math.pi / cutoff)) + 1.0)
    return torch.where(inside, w, torch.zeros_like(w))


def polynomial_envelope(dist: Tensor, cutoff: float, exponent: int = 5) -> Tensor:
    """Smooth envelope 1 - (p+1)(p+2)/2 u^p + p(p+2) u^(p+1) - p(p+1)/2 u^(p+2), u = d/cutoff.

    Equal to 1 at d = 0 and to 0 with vanishing first and second derivatives at the
    cutoff; 0 beyond it.
    """
    p = exponent
    u = dist / cutoff
    up = u.pow(p)
    env = 1.0 - 0.5 * (p + 1) * (p + 2) * up + p * (p + 2) * up * u - 0.5 * p * (p + 1) * up * u * u
    return torch.where(u < 1.0, env, torch.zeros_like(env))
