"""Local frames (paper Sec. 3.1): equivariant, deterministic, without constant offsets.

Edge frame of edge j->i: x = the edge direction; the roll reference y is the part
perpendicular to x of a smooth weighted sum of the vectors from the source atom j to its
neighbours k (the same neighbourhood that is projected onto the edge's sphere):

    a1 = sum_k w(d_jk) u_perp(jk),      a2 = sum_k w(d_jk) (u_jk . x) u_perp(jk)
    a  = a1 + (1 - smoothstep(|a1| / tau)) a2,     y = a / |a|,   z = x cross y

so the reference vector has longitude 0. Every term is a function of relative positions
that rotates with the structure, hence the frame coordinates of all neighbours are
invariant up to rounding. The atom frame of the force head is built the same way from
the atom's own neighbour vectors (Gram-Schmidt, d3 = d1 x d2).

Residual degenerate case: when the weighted sums vanish (a neighbourhood symmetric
under a rotation about the edge, e.g. a perfect crystal, or a linear molecule) no
equivariant reference exists; the frame then falls back to the Cartesian axis least
parallel to x. For a linear neighbourhood every neighbour lies on a pole, where the
grid is uniform in longitude, so the result is still invariant; for symmetric sites of
perfect crystals it is invariant only up to the grid discretisation.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["atom_frames", "edge_frames", "smoothstep"]

_TAU = 0.1  # |a1| below which the second weighting is blended in (units of unit vectors)


def smoothstep(t: Tensor) -> Tensor:
    """C1 step from 0 (t <= 0) to 1 (t >= 1)."""
    t = t.clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _safe_norm(v: Tensor, tiny: float) -> tuple[Tensor, Tensor]:
    """Norm of (..., 3) vectors with finite gradients; returns (norm, ok-mask)."""
    sq = (v * v).sum(-1)
    ok = sq > tiny
    norm = torch.sqrt(torch.where(ok, sq, torch.ones_like(sq)))
    return norm, ok


def _fallback_axis(x: Tensor) -> Tensor:
    """Cartesian axis least parallel to each row of ``x`` (deterministic, not equivariant)."""
    idx = x.abs().argmin(dim=-1, keepdim=True)
    # (scatter, not one_hot: one_hot checks its indices on the host, a GPU synchronisation)
    return torch.zeros_like(x).scatter_(-1, idx, 1.0)


def _perpendicular_unit(x: Tensor, a: Tensor) -> Tensor:
    """Unit vector along the part of ``a`` perpendicular to unit ``x``; axis fallback when tiny."""
    tiny = torch.finfo(x.dtype).eps ** 2
    a_perp = a - (a * x).sum(-1, keepdim=True) * x
    norm, ok = _safe_norm(a_perp, tiny * 1e6)
    y = a_perp / norm.unsqueeze(-1)
    fb = _fallback_axis(x)
    fb = fb - (fb * x).sum(-1, keepdim=True) * x
    fb = fb / fb.norm(dim=-1, keepdim=True)
    return torch.where(ok.unsqueeze(-1), y, fb)


def _blend(primary: Tensor, secondary: Tensor, tau: float = _TAU) -> Tensor:
    """primary + (1 - smoothstep(|primary| / tau)) secondary, differentiable everywhere."""
    tiny = torch.finfo(primary.dtype).eps ** 2
    norm, ok = _safe_norm(primary, tiny)
    norm = torch.where(ok, norm, torch.zeros_like(norm))
    return primary + (1.0 - smoothstep(norm / tau)).unsqueeze(-1) * secondary


def edge_frames(
    unit: Tensor, pair_src: Tensor, pair_dst: Tensor, pair_weight: Tensor, pair_cos: Tensor
) -> Tensor:
    """Frames (E,3,3), rows (x, y, z), of all edges.

    Args:
        unit: (E,3) unit edge vectors (from target i to source j).
        pair_src, pair_dst: (P,) for each pair, the projected edge k->j and the edge j->i
            whose frame is built.
        pair_weight: (P,) smooth radial weight of the projected edge (0 for the reverse edge).
        pair_cos: (P,) unit[pair_src] . unit[pair_dst].
    """
    num_edges = unit.shape[0]
    x = unit
    u = unit.index_select(0, pair_src)  # (gathers by index_select: see model._edge_plan)
    u_perp = u - pair_cos.unsqueeze(-1) * x.index_select(0, pair_dst)
    wu = pair_weight.unsqueeze(-1) * u_perp
    a1 = unit.new_zeros(num_edges, 3).index_add_(0, pair_dst, wu)
    a2 = unit.new_zeros(num_edges, 3).index_add_(0, pair_dst, pair_cos.unsqueeze(-1) * wu)
    y = _perpendicular_unit(x, _blend(a1, a2))
    z = torch.cross(x, y, dim=-1)
    return torch.stack([x, y, z], dim=1)


def atom_frames(unit: Tensor, weight: Tensor, target: Tensor, num_atoms: int) -> Tensor:
    """Per-atom orthonormal frames (N,3,3), rows (d1, d2, d3), from incoming edge vectors.

    d1 follows v1 = sum_e w_e u_e, blended (when |v1| < tau) with sum_e w_e (1 - w_e) u_e;
    d2 follows the part perpendicular to d1 of sum_e w_e (u_e . d1) u_e, blended with that
    of sum_e w_e (1 - w_e) (u_e . d1)^2 u_e; d3 = d1 x d2. The second weightings differ in
    their radial and angular dependence, so they rarely vanish together.
    """
    wu = weight.unsqueeze(-1) * unit
    zeros = unit.new_zeros(num_atoms, 3)
    v1 = zeros.index_add(0, target, wu)
    v1b = zeros.index_add(0, target, (1.0 - weight).unsqueeze(-1) * wu)
    v1 = _blend(v1, v1b)
    tiny = torch.finfo(unit.dtype).eps ** 2
    n1, ok1 = _safe_norm(v1, tiny * 1e6)
    ez = torch.zeros_like(v1)
    ez[:, 2] = 1.0
    d1 = torch.where(ok1.unsqueeze(-1), v1 / n1.unsqueeze(-1), ez)
    c = (unit * d1.index_select(0, target)).sum(-1, keepdim=True)
    v2 = zeros.index_add(0, target, c * wu)
    v2b = zeros.index_add(0, target, c * c * (1.0 - weight).unsqueeze(-1) * wu)
    v2 = v2 - (v2 * d1).sum(-1, keepdim=True) * d1
    v2b = v2b - (v2b * d1).sum(-1, keepdim=True) * d1
    d2 = _perpendicular_unit(d1, _blend(v2, v2b))
    d3 = torch.cross(d1, d2, dim=-1)
    return torch.stack([d1, d2, d3], dim=1)
