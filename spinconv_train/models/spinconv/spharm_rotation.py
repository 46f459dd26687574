"""Rotations about the edge direction acting on real spherical-harmonic coefficients.

Coefficients follow ``spharm_grid`` (e3nn order and normalisation, the edge direction on
e3nn's pole). A rotation by ``theta`` about the edge direction (longitude ``lambda ->
lambda + theta``) is the e3nn rotation ``o3.matrix_y(theta)``; its Wigner-D matrix,
``o3.wigner_D(l, theta, 0, 0)`` per degree, maps the coefficients ``c`` of ``f`` to
those of the rotated function ``f(R^-1 u)``. Rolling a grid by one column
(``torch.roll(g, 1, -1)``) is the rotation by ``2*pi/long``.

About the pole, ``D(theta)`` only couples slots of equal ``|m|`` and is a trigonometric
polynomial of degree ``lmax`` in ``theta``:
``D(theta) = A_0 + sum_{m=1..lmax} (A_m cos(m theta) + B_m sin(m theta))``, where ``A_m``
and ``B_m`` live on the slots of order ``|m| = m``. ``rotation_fourier_blocks`` returns those
blocks, which let a linear map of the rotated coefficients be evaluated at all rotation
angles with ``(lmax+1)`` small matmuls instead of one per angle.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from e3nn import o3

__all__ = ["order_slots", "pole_rotation_wigner", "rotation_fourier_blocks", "slot_degree_order"]

_F64 = torch.float64


def slot_degree_order(lmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Degree ``l`` and signed order ``m`` (about the pole) of every coefficient slot."""
    degrees = [l for l in range(lmax + 1) for _ in range(2 * l + 1)]
    orders = [m for l in range(lmax + 1) for m in range(-l, l + 1)]
    return torch.tensor(degrees), torch.tensor(orders)


def order_slots(lmax: int, m: int) -> torch.Tensor:
    """Slot indices with ``|order| == m``, sorted (for ``m >= 1``: ``(l, -m), (l, +m)`` per l)."""
    _, orders = slot_degree_order(lmax)
    return torch.nonzero(orders.abs() == m).flatten()


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Set torch's default dtype for a while (e3nn builds its so(3) generators in it)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def pole_rotation_wigner(lmax: int, angles: torch.Tensor) -> torch.Tensor:
    """Wigner-D matrices ``(A, L, L)`` float64 for rotations by ``angles`` (A,) about the pole.

    e3nn's ``wigner_D(l, alpha, 0, 0)`` is the rotation by ``alpha`` about its y axis, i.e.
    ``o3.matrix_y(alpha)``: the longitude increment about the edge direction. (Going through
    ``D_from_matrix`` would lose half the digits: it recovers the angles with an ``acos``
    near 1.)
    """
    angles = torch.as_tensor(angles, dtype=_F64).reshape(-1)
    zero = torch.zeros((), dtype=_F64)
    with default_dtype(_F64):
        mats = [
            torch.block_diag(*[o3.wigner_D(l, a, zero, zero) for l in range(lmax + 1)])
            for a in angles
        ]
    return torch.stack(mats).to(_F64)


def rotation_fourier_blocks(lmax: int) -> list[torch.Tensor]:
    """Per order ``m = 0..lmax``, the Fourier blocks of ``D(theta)`` on ``order_slots(m)``.

    Entry ``m`` is ``(1, n, n)`` (``A_0``) for ``m = 0`` and ``(2, n, n)`` (``A_m``, ``B_m``)
    otherwise, float64; ``D(theta)[S, S] = A_m cos(m theta) + B_m sin(m theta)`` on
    ``S = order_slots(lmax, m)``. Obtained by an exact DFT of ``2*lmax + 1`` Wigner matrices;
    raises RuntimeError if e3nn's matrices do not have the block structure assumed here.
    """
    n_samples = 2 * lmax + 1
    theta = 2 * math.pi * torch.arange(n_samples, dtype=_F64) / n_samples
    wig = pole_rotation_wigner(lmax, theta)
    blocks = []
    covered = torch.zeros_like(wig[0])
    for m in range(lmax + 1):
        slots = order_slots(lmax, m)
        cos_part = torch.einsum("s,sij->ij", torch.cos(m * theta), wig) * (2.0 if m else 1.0)
        parts = [cos_part / n_samples]
        if m:
            sin_part = torch.einsum("s,sij->ij", torch.sin(m * theta), wig) * 2.0
            parts.append(sin_part / n_samples)
        full = torch.stack(parts)
        sub = full[:, slots][:, :, slots]
        covered[slots[:, None], slots[None, :]] = 1.0
        blocks.append(sub.contiguous())
        rebuilt = torch.zeros_like(full)
        rebuilt[:, slots[:, None], slots[None, :]] = sub
        if not torch.allclose(rebuilt, full, atol=1e-12):
            raise RuntimeError(f"e3nn Wigner matrices about the pole mix orders other than |m|={m}")
    if not torch.allclose(wig * (1 - covered), torch.zeros_like(wig), atol=1e-12):
        raise RuntimeError("e3nn Wigner matrices about the pole couple different |m|")
    return blocks
