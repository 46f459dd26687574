"""Message block (paper Fig. 2): spin convolution of the projected neighbourhood, then
embedding blocks, with a distance term added before the last activation."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .activation import activate
from .embedding import EmbeddingBlock, he_init_
from .projection import SplatPlan, grid_from_flat, splat, splat_dtype
from .speed import ChunkedSplatPlan, Scratch
from .spin_conv import GridSpinConv, build_spin_conv


class SpinConvBlock(nn.Module):
    """Projection onto the sphere -> spin convolution -> GroupNorm: (M, C) -> (num_dst, out).

    ``uniform_poles`` (default true): each pole row is replaced by its mean over longitude
    (projection.py); false keeps the rows as splatted, as the reference did (models
    imported from OCP checkpoints, ``frame: reference``)."""

    uniform_poles = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        lat: int,
        long: int,
        kind: str,
        act: Callable[[Tensor], Tensor],
        lmax: int | None,
        impl: str,
    ) -> None:
        super().__init__()
        self.spin_conv = build_spin_conv(kind, in_channels, out_channels, lat, long, lmax=lmax, act=act, impl=impl)
        self.group_norm = nn.GroupNorm(max(in_channels // 8, 1), out_channels)

    def forward(self, x: Tensor, plan: SplatPlan | ChunkedSplatPlan) -> Tensor:
        kernel = self.kernel(x, plan)
        if isinstance(plan, ChunkedSplatPlan):
            scratch = plan.inference_scratch()
            return torch.cat([self.forward_plan(x, chunk, kernel, scratch) for chunk in plan.chunks])
        return self.forward_plan(x, plan, kernel)

    def kernel(self, x: Tensor, plan: SplatPlan | ChunkedSplatPlan) -> Tensor | None:
        """The spin convolution's prepared weights for this pass (shared by its chunks)."""
        if not isinstance(self.spin_conv, GridSpinConv):
            return None
        first = plan.chunks[0] if isinstance(plan, ChunkedSplatPlan) else plan
        return self.spin_conv.flat_kernel(splat_dtype(x.dtype, first.weight.dtype), x.device)

    def forward_plan(
        self, x: Tensor, plan: SplatPlan, kernel: Tensor | None = None, scratch: Scratch | None = None
    ) -> Tensor:
        """The spheres of one (unchunked) plan: (M, C) -> (plan.num_dst, out).

        ``scratch``: buffers for the intermediates when chunks run without autograd.
        """
        out = None
        if scratch is not None:
            rows = plan.long * plan.num_dst * plan.lat
            out = scratch.take("grid", (rows, x.shape[1]), splat_dtype(x.dtype, plan.weight.dtype), x.device)
        flat = splat(x, plan, out=out)
        if not self.uniform_poles:
            h = self.spin_conv(flat.view(plan.long, plan.num_dst, plan.lat, -1).permute(1, 3, 2, 0))
        elif isinstance(self.spin_conv, GridSpinConv):
            h = self.spin_conv.forward_flat(flat, plan.num_dst, kernel=kernel, scratch=scratch)  # no (E, C, lat, long) copy
        else:
            h = self.spin_conv(grid_from_flat(flat, plan))
        return self.group_norm(h)


class MessageBlock(nn.Module):
    """One interaction: new edge messages (E, out) from edge messages (E, in)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        mid_channels: int,
        embedding_size: int,
        lat: int,
        long: int,
        max_num_elements: int,
        kind: str,
        act: Callable[[Tensor], Tensor],
        lmax: int | None,
        impl: str,
        num_experts: int = 8,
    ) -> None:
        super().__init__()
        self.act = act
        self.spinconvblock = SpinConvBlock(in_channels, mid_channels, lat, long, kind, act, lmax, impl)
        self.embeddingblock1 = EmbeddingBlock(
            mid_channels, mid_channels, mid_channels, embedding_size, num_experts, max_num_elements, act
        )
        self.embeddingblock2 = EmbeddingBlock(
            mid_channels, out_channels, mid_channels, embedding_size, num_experts, max_num_elements, act
        )
        # He init: PyTorch's default would shrink the distance term ~10x (see embedding.py).
        self.distfc1 = he_init_(nn.Linear(mid_channels, mid_channels))
        self.distfc2 = he_init_(nn.Linear(mid_channels, mid_channels))

    def forward(
        self,
        x: Tensor,
        x_dist: Tensor,
        source_element: Tensor,
        target_element: Tensor,
        plan: SplatPlan | ChunkedSplatPlan,
    ) -> Tensor:
        if not isinstance(plan, ChunkedSplatPlan):
            return self._message(self.spinconvblock(x, plan), x_dist, source_element, target_element)
        # Everything after the projection is per edge: run it chunk by chunk too, so that
        # the (chunk, 8 * mid) expert activations stay in cache.
        out, start = [], 0
        kernel = self.spinconvblock.kernel(x, plan)
        scratch = plan.inference_scratch()
        for chunk in plan.chunks:
            end = start + chunk.num_dst
            h = self.spinconvblock.forward_plan(x, chunk, kernel, scratch)
            out.append(self._message(h, x_dist[start:end], source_element[start:end], target_element[start:end]))
            start = end
        return torch.cat(out)

    def _message(self, h: Tensor, x_dist: Tensor, source_element: Tensor, target_element: Tensor) -> Tensor:
        h = self.embeddingblock1(h, source_element, target_element)
        h = h + self.distfc2(activate(self.act, self.distfc1(x_dist)))
        return self.embeddingblock2(activate(self.act, h), source_element, target_element)
