"""Force head of the force-centric model (paper Sec. 3.5), deterministic and equivariant.

Each atom gets an equivariant orthonormal frame (d1, d2, d3) from its neighbourhood
(frames.atom_frames). For each direction d_a the final edge messages into the atom are
projected onto a sphere with pole d_a and longitude zero at the next frame axis, spin-
convolved and passed through two embedding blocks to a scalar f_a; the force is
F = sum_a f_a d_a. Three spin convolutions per atom (the reference drew 5 x 3 random
rotations, so its forces were random at inference and equivariant only on average).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .embedding import EmbeddingBlock
from .frames import atom_frames_and_rank
from .message import SpinConvBlock
from .projection import make_splat_plans
from .speed import device_constant, geometry_precision


def _cyclic_row_orders() -> Tensor:
    """Sphere a has frame rows (d_a, d_{a+1}, d_{a+2}): cyclic, so every frame is right-handed."""
    return torch.tensor([[0, 1, 2], [1, 2, 0], [2, 0, 1]])


class ForceHead(nn.Module):
    """(E, hidden) final edge messages -> (N, 3) forces."""

    def __init__(
        self,
        hidden_channels: int,
        mid_channels: int,
        embedding_size: int,
        lat: int,
        long: int,
        max_num_elements: int,
        kind: str,
        act: Callable[[Tensor], Tensor],
        lmax: int | None,
        impl: str,
        interpolation: str = "bilinear",
    ) -> None:
        super().__init__()
        self.lat, self.long = lat, long
        self.interpolation = interpolation
        self.act = act
        self.spinconvblock = SpinConvBlock(hidden_channels, mid_channels, lat, long, kind, act, lmax, impl)
        self.block1 = EmbeddingBlock(mid_channels, mid_channels, mid_channels, embedding_size, 8, max_num_elements, act)
        self.block2 = EmbeddingBlock(mid_channels, 1, mid_channels, embedding_size, 8, max_num_elements, act)

    def forward(
        self,
        x: Tensor,
        unit: Tensor,
        target: Tensor,
        frame_weight: Tensor,
        atomic_numbers: Tensor,
        splat_scale: Tensor | None = None,
        max_dst_per_chunk: int | None = None,
    ) -> Tensor:
        num_atoms = atomic_numbers.shape[0]
        num_edges = unit.shape[0]
        with geometry_precision(unit):
            frames, rank = atom_frames_and_rank(unit, frame_weight, target, num_atoms, self.long)  # (N, 3, 3)
            spheres = frames[:, device_constant(_cyclic_row_orders, device=frames.device)].reshape(3 * num_atoms, 3, 3)
            axis = torch.arange(3, device=unit.device)
            src = torch.arange(num_edges, device=unit.device).repeat_interleave(3)
            dst = (3 * target).repeat_interleave(3) + axis.repeat(num_edges)
            coords = torch.bmm(spheres.index_select(0, dst), unit.index_select(0, src).unsqueeze(-1)).squeeze(-1)
            scale = None if splat_scale is None else splat_scale.index_select(0, src)
            plan = make_splat_plans(coords, src, dst, 3 * num_atoms, num_edges, self.lat, self.long, scale=scale,
                                    max_dst_per_chunk=max_dst_per_chunk, interpolation=self.interpolation)
        h = self.spinconvblock(x, plan)
        element = atomic_numbers.repeat_interleave(3)
        h = self.block1(h, element, element)
        f = self.block2(self.act(h), element, element).view(num_atoms, 3)
        with geometry_precision(frames):
            # Components along axes that are not equivariant are dropped: at a site symmetric
            # about d1 the force has no part across d1, at one without an axis none at all.
            defined = torch.stack([rank >= 1, rank >= 2, rank >= 2], dim=-1)  # (frames.atom_frames_and_rank)
            f = torch.where(defined, f.to(frames.dtype), torch.zeros((), dtype=frames.dtype, device=f.device))
            return torch.einsum("na,nab->nb", f, frames)


class EdgeForceHead(nn.Module):
    """(E, hidden) final edge messages -> (N, 3) forces as a sum over edge directions.

    Each edge j->i gets an invariant scalar s_ij from its message (two embedding blocks,
    conditioned on both elements) and F_i = sum_j s_ij u_ij, with u_ij the unit vector from
    i to j (times the cutoff envelope when one is used). Exactly equivariant and
    deterministic like ``ForceHead``, but needs no per-atom frame: at near-symmetric sites
    the contributions cancel instead of depending on an ill-posed frame.
    """

    def __init__(
        self,
        hidden_channels: int,
        mid_channels: int,
        embedding_size: int,
        max_num_elements: int,
        act: Callable[[Tensor], Tensor],
    ) -> None:
        super().__init__()
        self.act = act
        self.block1 = EmbeddingBlock(hidden_channels, mid_channels, mid_channels, embedding_size, 8,
                                     max_num_elements, act)
        self.block2 = EmbeddingBlock(mid_channels, 1, mid_channels, embedding_size, 8, max_num_elements, act)

    def forward(
        self,
        x: Tensor,
        unit: Tensor,
        edge_index: Tensor,
        atomic_numbers: Tensor,
        edge_scale: Tensor | None = None,
    ) -> Tensor:
        source, target = atomic_numbers[edge_index[0]], atomic_numbers[edge_index[1]]
        strength = self.block2(self.act(self.block1(x, source, target)), source, target)  # (E, 1)
        with geometry_precision(unit):
            strength = strength.to(unit.dtype)
            if edge_scale is not None:
                strength = strength * edge_scale.unsqueeze(-1)
            forces = unit.new_zeros(atomic_numbers.shape[0], 3)
            return forces.index_add_(0, edge_index[1], strength * unit)
