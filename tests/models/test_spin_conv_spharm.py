"""Spherical-harmonic spin convolutions: projection, rotations, invariance, gradients."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from e3nn import o3
from torch.func import functional_call

from spinconv_train.models.spinconv.spharm_grid import (
    clenshaw_curtis_weights,
    grid_area_weights,
    projection_matrix,
    sh_on_grid,
)
from spinconv_train.models.spinconv.spharm_rotation import (
    default_dtype,
    order_slots,
    pole_rotation_wigner,
    rotation_fourier_blocks,
)
from spinconv_train.models.spinconv.spin_conv_spharm import KINDS, build_spharm_spin_conv

F64 = torch.float64
SMALL = dict(in_channels=3, out_channels=5, lat=7, long=8, lmax=3)


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are tiny: threads only add contention on a busy 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make(kind, dtype=F64, seed=0, **sizes):
    torch.manual_seed(seed)
    args = dict(SMALL, **sizes)
    return build_spharm_spin_conv(kind=kind, **args).to(dtype)


def random_grid(module, edges=4, seed=1, dtype=F64):
    gen = torch.Generator().manual_seed(seed)
    shape = (edges, module.in_channels, module.lat, module.long)
    return torch.randn(shape, generator=gen, dtype=F64).to(dtype)


# ---- band-limited test functions, written independently of the module ---------------

def grid_points(lat, long):
    """Frame coordinates (lat, long, 3) of the grid, from docs/design.md."""
    phi = -np.pi / 2 + np.pi * np.arange(lat) / (lat - 1)
    lam = 2 * np.pi * np.arange(long) / long
    phi, lam = np.meshgrid(phi, lam, indexing="ij")
    return np.stack([np.sin(phi), np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam)], -1)


def monomials(degree):
    return [(a, b, d - a - b)
            for d in range(degree + 1) for a in range(d + 1) for b in range(d - a + 1)]


def polynomial(points, coeffs, degree):
    """Sum of coeffs[k] * x^a y^b z^c over monomials of total degree <= degree."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    terms = [x**a * y**b * z**c for a, b, c in monomials(degree)]
    return np.tensordot(coeffs, np.stack(terms), axes=([-1], [0]))


def rot_x(theta):
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def band_limited_grid(lat, long, degree, channels, edges, theta=0.0, seed=0):
    """(edges, channels, lat, long) samples of random degree-<=`degree` polynomials rotated by
    `theta` about the pole: f_rot(u) = f(R^-1 u)."""
    rng = np.random.default_rng(seed)
    coeffs = rng.normal(size=(edges, channels, len(monomials(degree))))
    pts = grid_points(lat, long) @ rot_x(theta)  # rows: R^T u = R^-1 u
    return torch.from_numpy(polynomial(pts, coeffs, degree))


def sphere_mean_dense(func, n=64):
    """Mean of func(points) over the sphere by Gauss-Legendre x trapezoid (exact for low degree)."""
    nodes, weights = np.polynomial.legendre.leggauss(n)  # in x = sin(latitude)
    lam = 2 * np.pi * np.arange(2 * n) / (2 * n)
    x = nodes[:, None]
    r = np.sqrt(1 - x**2)
    pts = np.stack(np.broadcast_arrays(x, r * np.cos(lam), r * np.sin(lam)), -1)
    return float((func(pts).mean(-1) * weights).sum() / 2)


# ---- projection ------------------------------------------------------------------------

def test_clenshaw_curtis_integrates_polynomials_exactly():
    for n in (2, 5, 8, 16):
        w = clenshaw_curtis_weights(n).numpy()
        x = np.cos(np.pi * np.arange(n) / (n - 1))
        for k in range(n):
            exact = 2.0 / (k + 1) if k % 2 == 0 else 0.0
            assert abs((w * x**k).sum() - exact) < 1e-13, (n, k)
    assert abs(grid_area_weights(16, 12).sum().item() - 1.0) < 1e-14


@pytest.mark.parametrize("lat,long,lmax", [(16, 12, 3), (5, 7, 3), (3, 3, 1), (9, 9, 4), (2, 1, 0)])
def test_projection_round_trip(lat, long, lmax):
    """coefficients -> grid -> coefficients: exact (1e-12) if lat >= lmax+2, long >= 2lmax+1."""
    coeff = torch.randn(6, (lmax + 1) ** 2, dtype=F64)
    grid = coeff @ sh_on_grid(lat, long, lmax).T
    back = grid @ projection_matrix(lat, long, lmax)
    assert (back - coeff).abs().max() < 1e-12


def test_projection_of_polynomials_independent_of_e3nn():
    lat, long, lmax = 16, 12, 3
    proj, synth = projection_matrix(lat, long, lmax), sh_on_grid(lat, long, lmax)
    pts = grid_points(lat, long).reshape(-1, 3)
    # constant and the pole coordinate: c_00 = 1, and x = Y_(1,0) / sqrt(3) in component norm
    const = torch.ones(1, lat * long, dtype=F64) @ proj
    assert abs(const[0, 0] - 1) < 1e-13 and const[0, 1:].abs().max() < 1e-13
    xcoef = (torch.from_numpy(pts[:, 0])[None] @ proj)[0]
    (m0_l1,) = [i for i in order_slots(lmax, 0).tolist() if i in (1, 2, 3)]
    assert abs(xcoef[m0_l1] - 1 / math.sqrt(3)) < 1e-13
    assert torch.cat([xcoef[:m0_l1], xcoef[m0_l1 + 1:]]).abs().max() < 1e-13
    # random band-limited polynomial: reproduced on the grid, Parseval against dense quadrature
    rng = np.random.default_rng(3)
    a = rng.normal(size=len(monomials(lmax)))
    f = torch.from_numpy(polynomial(pts, a, lmax))
    c = f @ proj
    assert (c @ synth.T - f).abs().max() < 1e-12
    mean_sq = sphere_mean_dense(lambda p: polynomial(p, a, lmax) ** 2)
    assert abs(float((c**2).sum()) - mean_sq) < 1e-10 * mean_sq
    # one degree more is not band-limited: it must not be reproduced
    b = rng.normal(size=len(monomials(lmax + 1)))
    g = torch.from_numpy(polynomial(pts, b, lmax + 1))
    assert (((g @ proj) @ synth.T) - g).abs().max() > 1e-3


def test_projection_is_quadrature_when_grid_resolves_products():
    lat, long, lmax = 16, 12, 3
    w = grid_area_weights(lat, long).reshape(-1, 1)
    quadrature = w * sh_on_grid(lat, long, lmax)
    assert (projection_matrix(lat, long, lmax) - quadrature).abs().max() < 1e-13


# ---- rotations about the pole -----------------------------------------------------------

def test_wigner_rotates_coefficients_of_rotated_function():
    lat, long, lmax = 12, 10, 3
    proj = projection_matrix(lat, long, lmax)
    theta = 0.8137
    f = band_limited_grid(lat, long, lmax, 1, 2, seed=4).reshape(2, -1)
    f_rot = band_limited_grid(lat, long, lmax, 1, 2, theta=theta, seed=4).reshape(2, -1)
    wig = pole_rotation_wigner(lmax, torch.tensor([theta], dtype=F64))[0]
    assert ((f_rot @ proj) - (f @ proj) @ wig.T).abs().max() < 1e-12
    # the grid roll is the rotation by 2*pi/long, exactly, for any grid (not band-limited)
    g = torch.randn(3, lat, long, dtype=F64)
    rolled = torch.roll(g, 1, -1).reshape(3, -1) @ proj
    step = pole_rotation_wigner(lmax, torch.tensor([2 * math.pi / long], dtype=F64))[0]
    assert (rolled - (g.reshape(3, -1) @ proj) @ step.T).abs().max() < 1e-13


def test_fourier_blocks_reproduce_wigner_matrices():
    lmax = 4
    theta = torch.tensor([0.0, 0.3, 2.1, -4.0], dtype=F64)
    wig = pole_rotation_wigner(lmax, theta)
    rebuilt = torch.zeros_like(wig)
    for m, block in enumerate(rotation_fourier_blocks(lmax)):
        slots = order_slots(lmax, m)
        part = block[0] * torch.cos(m * theta)[:, None, None]
        if m:
            part = part + block[1] * torch.sin(m * theta)[:, None, None]
        rebuilt[:, slots[:, None], slots[None, :]] = part
    assert (rebuilt - wig).abs().max() < 1e-13
    # and e3nn's Euler-angle form (as the reference built them) gives the same matrices
    with default_dtype(F64):
        ref = torch.block_diag(*[o3.wigner_D(l, theta[2], torch.tensor(0.0), torch.tensor(0.0))
                                 for l in range(lmax + 1)])
    assert (ref - wig[2]).abs().max() < 1e-13


# ---- the modules -------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_output_shape_and_dtype(kind, dtype):
    module = make(kind, dtype)
    grid = random_grid(module, edges=6, dtype=dtype)
    out = module(grid)
    assert out.shape == (6, module.out_channels) and out.dtype == dtype
    assert torch.isfinite(out).all()
    assert module(grid[:0]).shape == (0, module.out_channels)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lmax", [0, 1, 3])
@pytest.mark.parametrize("dtype,rel", [(F64, 1e-10), (torch.float32, 2e-6)])
def test_invariant_to_rolls_by_whole_columns(kind, lmax, dtype, rel):
    module = make(kind, dtype, lmax=lmax)
    grid = random_grid(module, dtype=dtype)
    out = module(grid)
    scale = out.abs().max()
    for shift in range(1, module.long):
        rolled = module(torch.roll(grid, shift, dims=-1))
        assert (rolled - out).abs().max() <= rel * scale, shift
    # not trivially constant: flipping the latitude changes the output (from l = 1 on)
    if lmax:
        assert (module(torch.flip(grid, dims=[-2])) - out).abs().max() > 1e-4 * scale


@pytest.mark.parametrize("lmax", [1, 3])
def test_spharm_invariant_to_continuous_rotation_about_pole(lmax):
    module = make("spharm", lmax=lmax)
    lat, long, lmax, chans = module.lat, module.long, module.lmax, module.in_channels
    theta = 2 * math.pi * 0.3721  # not a multiple of the grid step
    grid = band_limited_grid(lat, long, lmax, chans, 3, seed=7)
    grid_rot = band_limited_grid(lat, long, lmax, chans, 3, theta=theta, seed=7)
    out, out_rot = module(grid), module(grid_rot)
    assert (grid - grid_rot).abs().max() > 0.1  # the rotation really moves the signal
    assert (out - out_rot).abs().max() <= 1e-10 * out.abs().max()
    # the roll-pooled kinds are exactly invariant only to whole-column rolls (between rolls
    # only SiLU's harmonics of order >= long alias; that is visible at lmax 3, long 8)
    if lmax == 3:
        wd = make("rotspharmwd", lmax=lmax)
        assert (wd(grid) - wd(grid_rot)).abs().max() > 1e-6 * wd(grid).abs().max()


def test_rotspharmwd_matches_the_reference_formula():
    """mean_r SiLU(Linear(vec(D(2 pi r / long) c))), one rotation at a time, as the reference."""
    module = make("rotspharmwd")
    grid = random_grid(module)
    coeff = module.coefficients(grid)  # (E, C, L)
    with default_dtype(F64):
        angles = [2 * math.pi * r / module.long for r in range(module.long)]
        zero = torch.tensor(0.0)
        wig = [torch.block_diag(*[o3.wigner_D(l, torch.tensor(a), zero, zero)
                                  for l in range(module.lmax + 1)]) for a in angles]
    total = 0.0
    for d in wig:
        rotated = torch.einsum("ij,ecj->eci", d, coeff).reshape(coeff.shape[0], -1)
        total = total + torch.nn.functional.silu(module.linear(rotated))
    expected = total / module.long
    assert (module(grid) - expected).abs().max() <= 1e-12 * expected.abs().max()


def test_rotspharmroll_matches_fft_circular_convolution():
    module = make("rotspharmroll")
    grid = random_grid(module)
    coeff = module.coefficients(grid)
    hidden = []
    for r in range(module.long):
        angle = torch.tensor([2 * math.pi * r / module.long], dtype=F64)
        d = pole_rotation_wigner(module.lmax, angle)[0]
        rotated = torch.einsum("ij,ecj->eci", d, coeff).reshape(coeff.shape[0], -1)
        hidden.append(torch.nn.functional.silu(module.linear(rotated)))
    hidden = torch.stack(hidden, dim=1)  # (E, long, out)
    spec = torch.fft.rfft(hidden, dim=1) * torch.fft.rfft(module.spin_kernel, dim=1).T
    conv = torch.fft.irfft(spec, n=module.long, dim=1) + module.spin_bias
    expected = torch.nn.functional.silu(conv).mean(dim=1)
    assert (module(grid) - expected).abs().max() <= 1e-12 * expected.abs().max()


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_float64(kind):
    module = make(kind, in_channels=2, out_channels=2, lat=4, long=5, lmax=2)
    names = [n for n, _ in module.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in module.parameters())
    grid = random_grid(module, edges=2).requires_grad_(True)

    def func(g, *ps):
        return functional_call(module, dict(zip(names, ps)), (g,))

    assert torch.autograd.gradcheck(func, (grid, *params), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_gradients_finite_and_nonzero_for_every_parameter(kind, dtype):
    module = make(kind, dtype)
    for grid in (random_grid(module, dtype=dtype), torch.zeros(2, 3, 7, 8, dtype=dtype)):
        module.zero_grad()
        grid = grid.clone().requires_grad_(True)
        weights = torch.randn(grid.shape[0], module.out_channels, dtype=dtype)
        (module(grid) * weights).sum().backward()
        assert torch.isfinite(grid.grad).all()
        for name, p in module.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            if grid.abs().sum() > 0:
                assert p.grad.abs().max() > 0, name


@pytest.mark.parametrize("kind", KINDS)
def test_float32_matches_float64(kind):
    m64 = make(kind)
    m32 = copy.deepcopy(m64).to(torch.float32)
    grid = random_grid(m64)
    out64, out32 = m64(grid), m32(grid.float())
    assert (out32.double() - out64).abs().max() <= 1e-5 * out64.abs().max()


@pytest.mark.parametrize("kind", KINDS)
def test_batched_rows_are_independent(kind):
    module = make(kind)
    grid = random_grid(module, edges=5)
    out = module(grid)
    for e in range(grid.shape[0]):
        assert (module(grid[e:e + 1])[0] - out[e]).abs().max() <= 1e-13 * out.abs().max()
    changed = grid.clone()
    changed[2] += torch.randn_like(changed[2])
    out2 = module(changed)
    assert torch.equal(out2[[0, 1, 3, 4]], out[[0, 1, 3, 4]])
    assert not torch.equal(out2[2], out[2])


@pytest.mark.parametrize("kind", KINDS)
def test_to_float64_recasts_buffers_exactly(kind):
    with default_dtype(torch.float32):
        module = make(kind, dtype=torch.float32)
    floating = {n: b for n, b in module.named_buffers() if b.is_floating_point()}
    assert floating and all(b.dtype == torch.float32 for b in floating.values())
    module = module.to(F64)
    for name, buf in module.named_buffers():
        if name in floating:
            assert buf.dtype == F64, name
    exact = projection_matrix(module.lat, module.long, module.lmax)
    assert torch.equal(module.projection, exact)  # not a float32 round trip
    grid = random_grid(module)
    out = module(grid)
    assert (module(torch.roll(grid, 3, -1)) - out).abs().max() <= 1e-10 * out.abs().max()
    assert module.to(torch.float32).projection.dtype == torch.float32


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic(kind):
    module = make(kind)
    grid = random_grid(module).requires_grad_(True)
    first = module(grid)
    (g1,) = torch.autograd.grad(first.sum(), grid)
    second = module(grid)
    (g2,) = torch.autograd.grad(second.sum(), grid)
    assert torch.equal(first, second) and torch.equal(g1, g2)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown .* kind 'spharmx'"):
        build_spharm_spin_conv(kind="spharmx", in_channels=2, out_channels=2, lat=7, long=8, lmax=2)
    with pytest.raises(ValueError, match="lmax must be a non-negative int"):
        build_spharm_spin_conv(kind="spharm", in_channels=2, out_channels=2, lat=7, long=8,
                               lmax=False)
    with pytest.raises(ValueError, match="need long >= 2\\*lmax\\+1 = 7"):
        build_spharm_spin_conv(kind="rotspharmwd", in_channels=2, out_channels=2, lat=16, long=6,
                               lmax=3)
    with pytest.raises(ValueError, match="in_channels must be a positive int"):
        build_spharm_spin_conv(kind="spharm", in_channels=0, out_channels=2, lat=7, long=8, lmax=2)
    module = make("spharm")
    with pytest.raises(ValueError, match="grid must have shape \\(E, 3, 7, 8\\)"):
        module(torch.zeros(2, 3, 8, 7, dtype=F64))
    with pytest.raises(ValueError, match="dtype torch.float32 differs"):
        module(torch.zeros(2, 3, 7, 8))


def test_parameter_counts_at_oc20_sizes():
    sizes = dict(in_channels=32, out_channels=256, lat=16, long=12, lmax=3)
    counts = {k: sum(p.numel() for p in build_spharm_spin_conv(kind=k, **sizes).parameters())
              for k in KINDS}
    reference_mlp = torch.nn.Linear(32 * (3 + 1) ** 2, 256)  # the reference's rotspharmwd layer
    assert counts["rotspharmwd"] == sum(p.numel() for p in reference_mlp.parameters())
    per_channel = (3 + 1) + sum(n * n for n in range(1, 4))  # m = 0 part + Gram per m
    assert counts["spharm"] == 32 * per_channel * 256 + 256
    assert counts["rotspharmroll"] == counts["rotspharmwd"] + 256 * 12 + 256
