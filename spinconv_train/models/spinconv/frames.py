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

Symmetric neighbourhoods. When the neighbourhood is symmetric under a rotation about x
(lattice sites of a crystal or slab, a symmetric adsorption site) every vector built from
it lies on x, so ``a`` vanishes and no equivariant y exists. The roll is then taken from
the lowest angular harmonic that does not vanish: with zeta_k the perpendicular part of
u_jk as a complex number in any basis of the plane, C_m = sum_k w(d_jk) zeta_k^m turns by
exp(i m theta) when the structure turns by theta about x, so y at angle arg(C_m) / m is
equivariant up to a rotation by a multiple of 2 pi / m. Only orders m that divide the
grid's longitude count are used: such a rotation is then a roll of the sphere grid by
whole columns, which every spin convolution pools away exactly, so energies stay
invariant (for crystal sites, whose symmetry orders are 2, 3, 4 and 6, a longitude count
divisible by 12 always has one). Only when every order vanishes (all neighbours on the
axis, where longitude does not matter, or a symmetry whose order divides no usable m)
does y fall back to a Cartesian axis.

Bounded gradients. The branch is chosen by the size of |a| and |C_m| against
``FRAME_EPS``, a fixed threshold (not scaled by the dtype's epsilon) far above the
rounding of either precision: a vector of rounding size is never normalised, so the
frame's gradient is at most about 1 / FRAME_EPS times that of the sums, the branch is the
same in float32 and float64, and a step of a finite difference does not switch it.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["FRAME_EPS", "atom_frames", "atom_frames_and_rank", "edge_frames", "roll_orders", "smoothstep"]

_TAU = 0.1  # |a1| below which the second weighting is blended in (units of unit vectors)
# |reference vector| (and |C_m|) below which it is treated as vanishing, in units of
# radially weighted unit vectors (a generic neighbourhood gives O(1)); float32 rounding of
# these sums is ~1e-5 at most, float64's ~1e-14.
FRAME_EPS = 1e-3


def smoothstep(t: Tensor) -> Tensor:
    """C1 step from 0 (t <= 0) to 1 (t >= 1)."""
    t = t.clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def roll_orders(long: int | None) -> tuple[int, ...]:
    """Harmonic orders m >= 2 a frame may use on a grid with ``long`` longitudes: the
    divisors of ``long`` (a roll by 2 pi / m is then a whole number of columns)."""
    if long is None:
        return ()
    return tuple(m for m in range(2, long + 1) if long % m == 0)


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


def _plane_basis(x: Tensor) -> tuple[Tensor, Tensor]:
    """An orthonormal basis (e1, e2) of the plane perpendicular to unit ``x`` (not
    equivariant: e1 is the fallback axis made perpendicular, |its part| >= sqrt(2/3))."""
    fb = _fallback_axis(x)
    e1 = fb - (fb * x).sum(-1, keepdim=True) * x
    e1 = e1 / e1.norm(dim=-1, keepdim=True)
    return e1, torch.cross(x, e1, dim=-1)


def _harmonic_roll(
    x: Tensor, u_perp: Tensor, weight: Tensor, group: Tensor, orders: tuple[int, ...], select: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Roll references from angular harmonics: ``(y (G,3), found (G,))``.

    ``x`` (G,3) are the axes, ``u_perp`` (Q,3) the parts perpendicular to ``x[group]`` of the
    vectors around each axis, ``weight`` (Q,) their weights. y is at angle arg(C_m) / m of
    the first order m in ``orders`` with |C_m| >= FRAME_EPS; rows without one get the plane
    basis' e1 and ``found`` False. ``select``: optional bool (G,) mask of the rows that will
    use the result; on the CPU only their vectors are evaluated (elsewhere all, to stay free
    of host synchronisations), the others get unspecified finite values.
    """
    e1, e2 = _plane_basis(x)
    found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    if not orders:
        return e1, found
    if select is not None and x.device.type == "cpu":
        if not bool(select.any()):
            return e1, found
        keep = select.index_select(0, group).nonzero().squeeze(-1)
        u_perp, weight, group = u_perp.index_select(0, keep), weight.index_select(0, keep), group.index_select(0, keep)
    px = (u_perp * e1.index_select(0, group)).sum(-1)
    py = (u_perp * e2.index_select(0, group)).sum(-1)
    rho2 = px * px + py * py
    on_axis = rho2 <= torch.finfo(x.dtype).eps ** 2  # angle undefined; rho^m weighs it out
    angle = torch.atan2(torch.where(on_axis, torch.zeros_like(py), py), torch.where(on_axis, torch.ones_like(px), px))
    rho = torch.sqrt(torch.where(on_axis, torch.ones_like(rho2), rho2))
    rho = torch.where(on_axis, torch.zeros_like(rho), rho)
    m = torch.tensor(orders, dtype=x.dtype, device=x.device)
    amplitude = weight.unsqueeze(-1) * rho.unsqueeze(-1).pow(m)  # (Q, K)
    phase = angle.unsqueeze(-1) * m
    parts = torch.cat([amplitude * torch.cos(phase), amplitude * torch.sin(phase)], dim=-1)
    sums = x.new_zeros(x.shape[0], 2 * len(orders)).index_add_(0, group, parts)
    re, im = sums[:, : len(orders)], sums[:, len(orders):]
    big = re * re + im * im >= FRAME_EPS**2  # (G, K)
    # first usable order of each row (argmax of a bool picks the first True)
    first = big.to(torch.uint8).argmax(dim=-1, keepdim=True)
    found = big.any(dim=-1)
    re_m, im_m = re.gather(-1, first).squeeze(-1), im.gather(-1, first).squeeze(-1)
    re_m = torch.where(found, re_m, torch.ones_like(re_m))
    im_m = torch.where(found, im_m, torch.zeros_like(im_m))
    roll = torch.atan2(im_m, re_m) / m.index_select(0, first.squeeze(-1))
    y = torch.cos(roll).unsqueeze(-1) * e1 + torch.sin(roll).unsqueeze(-1) * e2
    return torch.where(found.unsqueeze(-1), y, e1), found


def _roll_reference(
    x: Tensor, a: Tensor, u_perp: Tensor, weight: Tensor, group: Tensor, orders: tuple[int, ...]
) -> tuple[Tensor, Tensor]:
    """``(y, rank)``: unit y perpendicular to x along the part of ``a`` perpendicular to x,
    or from the harmonics (``_harmonic_roll``) where that part is below FRAME_EPS.

    rank: 2 where y follows ``a`` (equivariant), 1 where it comes from a harmonic
    (equivariant up to a roll by 2 pi / m), 0 on the Cartesian fallback.
    """
    a_perp = a - (a * x).sum(-1, keepdim=True) * x
    norm, ok = _safe_norm(a_perp, FRAME_EPS**2)
    harmonic, found = _harmonic_roll(x, u_perp, weight, group, orders, ~ok)
    y = torch.where(ok.unsqueeze(-1), a_perp / norm.unsqueeze(-1), harmonic)
    rank = torch.where(ok, torch.full_like(norm, 2), found.to(norm.dtype))
    return y, rank


def _blend(primary: Tensor, secondary: Tensor, tau: float = _TAU) -> Tensor:
    """primary + (1 - smoothstep(|primary| / tau)) secondary, differentiable everywhere."""
    tiny = torch.finfo(primary.dtype).eps ** 2
    norm, ok = _safe_norm(primary, tiny)
    norm = torch.where(ok, norm, torch.zeros_like(norm))
    return primary + (1.0 - smoothstep(norm / tau)).unsqueeze(-1) * secondary


def edge_frames(
    unit: Tensor, pair_src: Tensor, pair_dst: Tensor, pair_weight: Tensor, pair_cos: Tensor,
    long: int | None = None,
) -> Tensor:
    """Frames (E,3,3), rows (x, y, z), of all edges.

    Args:
        unit: (E,3) unit edge vectors (from target i to source j).
        pair_src, pair_dst: (P,) for each pair, the projected edge k->j and the edge j->i
            whose frame is built.
        pair_weight: (P,) smooth radial weight of the projected edge (0 for the reverse edge).
        pair_cos: (P,) unit[pair_src] . unit[pair_dst].
        long: longitudes of the sphere grid; symmetric neighbourhoods take their roll from
            the harmonics whose order divides it (module docstring). None: no harmonics.
    """
    num_edges = unit.shape[0]
    x = unit
    u = unit.index_select(0, pair_src)  # (gathers by index_select: see model._edge_plan)
    u_perp = u - pair_cos.unsqueeze(-1) * x.index_select(0, pair_dst)
    wu = pair_weight.unsqueeze(-1) * u_perp
    a1 = unit.new_zeros(num_edges, 3).index_add_(0, pair_dst, wu)
    a2 = unit.new_zeros(num_edges, 3).index_add_(0, pair_dst, pair_cos.unsqueeze(-1) * wu)
    y, _ = _roll_reference(x, _blend(a1, a2), u_perp, pair_weight, pair_dst, roll_orders(long))
    z = torch.cross(x, y, dim=-1)
    return torch.stack([x, y, z], dim=1)


def atom_frames_and_rank(
    unit: Tensor, weight: Tensor, target: Tensor, num_atoms: int, long: int | None = None
) -> tuple[Tensor, Tensor]:
    """Per-atom orthonormal frames (N,3,3), rows (d1, d2, d3), from incoming edge vectors,
    and the number of frame axes that are equivariant (N,) long: 2 (d1 and the roll d2 are;
    d3 = d1 x d2 follows), 1 (d1 is, the roll only up to a multiple of 2 pi / m with m
    dividing ``long``: the site is symmetric about d1), 0 (no equivariant d1: the site is
    symmetric under an inversion or several rotation axes).

    d1 follows v1 = sum_e w_e u_e, blended (when |v1| < tau) with sum_e w_e (1 - w_e) u_e;
    d2 follows the part perpendicular to d1 of sum_e w_e (u_e . d1) u_e, blended with that
    of sum_e w_e (1 - w_e) (u_e . d1)^2 u_e (or the harmonics of the edges about d1); d3 =
    d1 x d2. The second weightings differ in their radial and angular dependence, so they
    rarely vanish together.
    """
    wu = weight.unsqueeze(-1) * unit
    zeros = unit.new_zeros(num_atoms, 3)
    v1 = zeros.index_add(0, target, wu)
    v1b = zeros.index_add(0, target, (1.0 - weight).unsqueeze(-1) * wu)
    v1 = _blend(v1, v1b)
    n1, ok1 = _safe_norm(v1, FRAME_EPS**2)
    ez = torch.zeros_like(v1)
    ez[:, 2] = 1.0
    d1 = torch.where(ok1.unsqueeze(-1), v1 / n1.unsqueeze(-1), ez)
    d1_edge = d1.index_select(0, target)
    c = (unit * d1_edge).sum(-1, keepdim=True)
    v2 = zeros.index_add(0, target, c * wu)
    v2b = zeros.index_add(0, target, c * c * (1.0 - weight).unsqueeze(-1) * wu)
    v2 = v2 - (v2 * d1).sum(-1, keepdim=True) * d1
    v2b = v2b - (v2b * d1).sum(-1, keepdim=True) * d1
    u_perp = unit - c * d1_edge
    d2, rank2 = _roll_reference(d1, _blend(v2, v2b), u_perp, weight, target, roll_orders(long))
    d3 = torch.cross(d1, d2, dim=-1)
    rank = torch.where(ok1, torch.where(rank2 == 2, 2, 1), 0)
    return torch.stack([d1, d2, d3], dim=1), rank


def atom_frames(unit: Tensor, weight: Tensor, target: Tensor, num_atoms: int, long: int | None = None) -> Tensor:
    """The frames of ``atom_frames_and_rank`` alone."""
    return atom_frames_and_rank(unit, weight, target, num_atoms, long)[0]
