"""Real spherical harmonics on the SpinConv latitude/longitude grid.

Grid convention (docs/design.md, "Sphere grid convention"): row ``i`` of a ``lat x long``
grid is the latitude ``phi_i = -pi/2 + pi*i/(lat-1)`` (both poles are rows), column ``k``
the longitude ``lambda_k = 2*pi*k/long``; a grid point has edge-frame coordinates
``(x, y, z) = (sin phi, cos phi cos lambda, cos phi sin lambda)``. The pole is the frame's
x axis (the edge direction).

Spherical harmonics come from e3nn (``o3.spherical_harmonics``, "component" normalisation:
every basis function has mean square 1 over the sphere, ``Y_00 = 1``). e3nn's special
(polar) axis is its y axis, so frame coordinates are handed to e3nn cyclically permuted,
``(x_e3nn, y_e3nn, z_e3nn) = (z, x, y)``: a proper rotation that puts the edge direction on
e3nn's pole and makes e3nn's azimuth equal to the grid longitude. Coefficient slots are in
e3nn order (l = 0..lmax, then m = -l..l); m is the angular order about the edge direction.

Grid -> coefficients is a weighted least-squares fit with the area weights of the grid
(Clenshaw-Curtis in latitude, both poles included; uniform in longitude). When the grid
resolves products of degree-lmax functions (``lat >= 2*lmax + 1`` and ``long >= 2*lmax + 1``)
this is the usual quadrature projection ``c_lm = mean_sphere(f * Y_lm)``; on coarser grids
it still returns the exact coefficients of any function band-limited to ``lmax``, which
needs ``lat >= lmax + 2`` and ``long >= 2*lmax + 1`` (checked).
"""
from __future__ import annotations

import math

import torch
from e3nn import o3

__all__ = [
    "check_grid_resolves",
    "clenshaw_curtis_weights",
    "frame_to_e3nn",
    "grid_frame_vectors",
    "grid_area_weights",
    "num_coefficients",
    "projection_matrix",
    "sh_on_grid",
    "spherical_harmonics_frame",
]

_F64 = torch.float64


def num_coefficients(lmax: int) -> int:
    """Number of real spherical-harmonic coefficients up to degree ``lmax``: ``(lmax+1)^2``."""
    return (lmax + 1) ** 2


def check_grid_resolves(lat: int, long: int, lmax: int) -> None:
    """Raise ValueError unless a ``lat x long`` grid determines all coefficients up to ``lmax``.

    Orders ``m <= lmax`` need ``long >= 2*lmax + 1`` longitudes (``sin(m*lambda)`` must not
    vanish on the grid, and no two orders may alias); orders ``m >= 1`` vanish on the pole
    rows, so ``lmax`` degrees of order 1 need ``lat - 2 >= lmax`` interior rows.
    """
    if isinstance(lmax, bool) or not isinstance(lmax, int) or lmax < 0:
        raise ValueError(f"lmax must be a non-negative int, got {lmax!r}")
    for name, value, low in (("lat", lat, 2), ("long", long, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"sphere size {name} must be an int >= {low}, got {value!r}")
    if long < 2 * lmax + 1 or lat < lmax + 2:
        raise ValueError(
            f"a {lat} (lat) x {long} (long) sphere grid cannot resolve spherical harmonics up to "
            f"lmax={lmax}: need long >= 2*lmax+1 = {2 * lmax + 1} and lat >= lmax+2 = {lmax + 2}"
        )


def grid_frame_vectors(lat: int, long: int, dtype: torch.dtype = _F64) -> torch.Tensor:
    """Unit vectors ``(lat, long, 3)`` of the grid points in edge-frame coordinates (x = pole)."""
    phi = -math.pi / 2 + math.pi * torch.arange(lat, dtype=_F64) / (lat - 1)
    lam = 2 * math.pi * torch.arange(long, dtype=_F64) / long
    phi, lam = phi[:, None].expand(lat, long), lam[None, :].expand(lat, long)
    vec = torch.stack([phi.sin(), phi.cos() * lam.cos(), phi.cos() * lam.sin()], dim=-1)
    return vec.to(dtype)


def frame_to_e3nn(vec: torch.Tensor) -> torch.Tensor:
    """Frame coordinates ``(x, y, z)`` -> e3nn coordinates ``(z, x, y)`` (pole on e3nn's y)."""
    return vec[..., [2, 0, 1]]


def spherical_harmonics_frame(lmax: int, vec: torch.Tensor) -> torch.Tensor:
    """Real spherical harmonics ``(..., (lmax+1)^2)`` of frame vectors ``vec`` (..., 3)."""
    return o3.spherical_harmonics(
        list(range(lmax + 1)), frame_to_e3nn(vec), normalize=True, normalization="component"
    )


def clenshaw_curtis_weights(n: int) -> torch.Tensor:
    """Clenshaw-Curtis weights for ``int_0^pi g(theta) sin(theta) dtheta``, nodes ``j*pi/(n-1)``.

    Exact when ``g`` is a polynomial in ``cos(theta)`` of degree ``<= n - 1``; weights sum to 2.
    """
    if n < 2:
        raise ValueError(f"Clenshaw-Curtis needs at least 2 nodes, got {n}")
    intervals = n - 1
    theta = math.pi * torch.arange(n, dtype=_F64) / intervals
    total = torch.ones(n, dtype=_F64)
    for k in range(1, intervals // 2 + 1):
        b = 1.0 if 2 * k == intervals else 2.0
        total = total - b / (4 * k * k - 1) * torch.cos(2 * k * theta)
    ends = torch.full((n,), 2.0, dtype=_F64)
    ends[0] = ends[-1] = 1.0
    return ends * total / intervals


def grid_area_weights(lat: int, long: int) -> torch.Tensor:
    """Quadrature weights ``(lat, long)`` (float64, summing to 1) for the mean over the sphere."""
    # latitude rows are equally spaced in colatitude from pole to pole, symmetric in order
    w_lat = clenshaw_curtis_weights(lat) / 2.0
    return (w_lat[:, None] / long).expand(lat, long).contiguous()


def sh_on_grid(lat: int, long: int, lmax: int) -> torch.Tensor:
    """Synthesis matrix ``Y`` ``(lat*long, L)`` float64: ``grid.flatten() = Y @ coefficients``."""
    return spherical_harmonics_frame(lmax, grid_frame_vectors(lat, long)).reshape(lat * long, -1)


def projection_matrix(lat: int, long: int, lmax: int) -> torch.Tensor:
    """Analysis matrix ``P`` ``(lat*long, L)`` float64: ``coefficients = grid.flatten() @ P``.

    Weighted least squares ``argmin_c sum_k w_k (f_k - (Y c)_k)^2`` with the grid's area
    weights, so ``Y @ (f @ P)`` reproduces ``f`` exactly when ``f`` is band-limited to lmax.
    """
    check_grid_resolves(lat, long, lmax)
    y = sh_on_grid(lat, long, lmax)
    w = grid_area_weights(lat, long).reshape(-1, 1)
    gram = y.T @ (w * y)
    eig = torch.linalg.eigvalsh(gram)
    if float(eig[0]) <= 1e-10 * float(eig[-1]):
        raise ValueError(
            f"spherical-harmonic fit on a {lat} x {long} grid with lmax={lmax} is singular "
            f"(Gram eigenvalues {float(eig[0]):.3g} .. {float(eig[-1]):.3g})"
        )
    return torch.linalg.solve(gram, (w * y).T).T.contiguous()
