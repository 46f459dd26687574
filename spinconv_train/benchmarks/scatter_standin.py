"""A small pure-torch stand-in for the three ``torch_scatter`` functions the reference
SpinConv code path uses (``scatter``, ``segment_coo``, ``segment_csr``).

Only used by ``spinconv_train.benchmarks.reference`` to run the reference implementation
side by side; the project itself never depends on torch_scatter.
"""
from __future__ import annotations

import types

import torch
from torch import Tensor

_REDUCTIONS = ("sum", "add", "mean", "max", "min", "mul")


def _broadcast_index(index: Tensor, src: Tensor, dim: int) -> Tensor:
    """Expand ``index`` to ``src``'s shape the way torch_scatter does (1-D along ``dim``)."""
    if index.dim() == 1:
        shape = [1] * src.dim()
        shape[dim] = -1
        return index.view(shape).expand_as(src)
    while index.dim() < src.dim():
        index = index.unsqueeze(-1)
    return index.expand_as(src)


def scatter(
    src: Tensor,
    index: Tensor,
    dim: int = -1,
    out: Tensor | None = None,
    dim_size: int | None = None,
    reduce: str = "sum",
) -> Tensor:
    """Reduce ``src`` into the slots given by ``index`` along ``dim`` (torch_scatter semantics)."""
    if reduce not in _REDUCTIONS:
        raise ValueError(f"scatter: reduce={reduce!r} not supported; use one of {_REDUCTIONS}")
    dim = dim % src.dim()
    if out is None:
        if dim_size is None:
            dim_size = int(index.max()) + 1 if index.numel() > 0 else 0
        shape = list(src.shape)
        shape[dim] = dim_size
        out = src.new_zeros(shape)
    full_index = _broadcast_index(index, src, dim)
    if reduce in ("sum", "add"):
        return out.scatter_add_(dim, full_index, src)
    if reduce == "mean":
        total = out.scatter_add_(dim, full_index, src)
        count = torch.zeros_like(total).scatter_add_(dim, full_index, torch.ones_like(src))
        return total / count.clamp(min=1)
    torch_reduce = {"max": "amax", "min": "amin", "mul": "prod"}[reduce]
    return out.scatter_reduce_(dim, full_index, src, reduce=torch_reduce, include_self=False)


def segment_coo(
    src: Tensor,
    index: Tensor,
    out: Tensor | None = None,
    dim_size: int | None = None,
    reduce: str = "sum",
) -> Tensor:
    """Reduce over sorted ``index`` along the first ``index.dim()`` dimensions' last axis."""
    return scatter(src, index, dim=index.dim() - 1, out=out, dim_size=dim_size, reduce=reduce)


def segment_csr(
    src: Tensor, indptr: Tensor, out: Tensor | None = None, reduce: str = "sum"
) -> Tensor:
    """Reduce consecutive segments ``[indptr[k], indptr[k+1])`` of ``src`` along dim 0."""
    if indptr.dim() != 1:
        raise NotImplementedError(
            f"segment_csr stand-in supports a 1-D indptr only, got shape {tuple(indptr.shape)}"
        )
    counts = indptr[1:] - indptr[:-1]
    index = torch.repeat_interleave(torch.arange(counts.numel(), device=src.device), counts)
    return scatter(src, index, dim=0, out=out, dim_size=counts.numel(), reduce=reduce)


def as_module() -> types.ModuleType:
    """A module object named ``torch_scatter`` exposing the three functions."""
    module = types.ModuleType("torch_scatter")
    module.__doc__ = "spinconv_train pure-torch stand-in for torch_scatter (benchmarks only)"
    module.scatter = scatter
    module.segment_coo = segment_coo
    module.segment_csr = segment_csr
    return module
