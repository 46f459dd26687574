"""Sphere projection (grid convention, poles, sparse splat) and local frames."""
from __future__ import annotations

import math

import pytest
import torch
from spinconv_testkit import random_rotation

from spinconv_train.models.spinconv.frames import atom_frames, edge_frames
from spinconv_train.models.spinconv.projection import (
    grid_from_flat,
    make_splat_plan,
    splat,
)


def _unit(lat: torch.Tensor, lon: torch.Tensor) -> torch.Tensor:
    """Frame coordinates (x, y, z) of latitude/longitude (design.md convention)."""
    return torch.stack([torch.sin(lat), torch.cos(lat) * torch.cos(lon), torch.cos(lat) * torch.sin(lon)], -1)


def _project(coords, values, dst, num_dst, lat, long, **kw):
    src = torch.arange(coords.shape[0])
    plan = make_splat_plan(coords, src, dst, num_dst, values.shape[0], lat, long, **kw)
    return grid_from_flat(splat(values, plan), plan)


def _smoothstep(u: float) -> float:
    return u * u * (3 - 2 * u)


def _dense_reference(coords, values, dst, num_dst, lat, long, scale=None, at_south_pole=None, interpolation="bilinear"):
    """Straightforward loop implementation of the splat with averaged pole rows."""
    grid = torch.zeros(num_dst, values.shape[1], lat, long, dtype=values.dtype)
    for p in range(coords.shape[0]):
        x, y, z = coords[p].tolist()
        if at_south_pole is not None and bool(at_south_pole[p]):
            phi, lam = -math.pi / 2, 0.0
        else:
            phi, lam = math.atan2(x, math.hypot(y, z)), math.atan2(z, y)
        row = (phi + math.pi / 2) * (lat - 1) / math.pi
        r0 = min(max(math.floor(row), 0), lat - 2)
        t = row - r0
        col = lam * long / (2 * math.pi)
        c0 = math.floor(col)
        s = col - c0
        if interpolation == "smooth":
            t, s = _smoothstep(t), _smoothstep(s)
        w = 1.0 if scale is None else float(scale[p])
        for r, wr in ((r0, 1 - t), (r0 + 1, t)):
            for c, wc in ((c0 % long, 1 - s), ((c0 + 1) % long, s)):
                grid[int(dst[p]), :, r, c] += w * wr * wc * values[p]
    for r in (0, lat - 1):
        grid[:, :, r, :] = grid[:, :, r, :].mean(-1, keepdim=True)
    return grid


@pytest.mark.parametrize("interpolation", ["bilinear", "smooth"])
def test_grid_nodes_land_on_their_row_and_column(interpolation):
    lat, long = 7, 10
    rows, cols = torch.meshgrid(torch.arange(1, lat - 1), torch.arange(long), indexing="ij")
    rows, cols = rows.reshape(-1), cols.reshape(-1)
    phi = -math.pi / 2 + math.pi * rows.double() / (lat - 1)
    lam = 2 * math.pi * cols.double() / long
    coords = _unit(phi, lam)
    n = coords.shape[0]
    values = torch.ones(n, 1, dtype=torch.float64)
    grid = _project(coords, values, torch.arange(n), n, lat, long, interpolation=interpolation)[:, 0]
    for p in range(n):
        expected = torch.zeros(lat, long, dtype=torch.float64)
        expected[rows[p], cols[p]] = 1.0
        assert torch.allclose(grid[p], expected, atol=1e-12)


@pytest.mark.parametrize("interpolation", ["bilinear", "smooth"])
def test_sparse_splat_equals_dense_reference_and_conserves_mass(interpolation):
    torch.manual_seed(0)
    n, num_dst, lat, long = 60, 5, 6, 8
    coords = torch.nn.functional.normalize(torch.randn(n, 3, dtype=torch.float64), dim=-1)
    coords[3] = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)  # north pole exactly
    coords[4] = torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64)  # south pole exactly
    pole = torch.zeros(n, dtype=torch.bool)
    pole[7] = True  # flagged: the reverse edge
    values = torch.randn(n, 3, dtype=torch.float64)
    dst = torch.randint(0, num_dst, (n,))
    scale = torch.rand(n, dtype=torch.float64)
    got = _project(coords, values, dst, num_dst, lat, long, scale=scale, at_south_pole=pole,
                   interpolation=interpolation)
    ref = _dense_reference(coords, values, dst, num_dst, lat, long, scale=scale, at_south_pole=pole,
                           interpolation=interpolation)
    assert torch.allclose(got, ref, atol=1e-12)
    total = torch.zeros(num_dst, 3, dtype=torch.float64).index_add_(0, dst, scale[:, None] * values)
    assert torch.allclose(got.sum(dim=(2, 3)), total, atol=1e-12)
    # the flagged point and the exact poles fill their pole rows uniformly
    only = _project(coords[[3, 4, 7]], torch.ones(3, 1, dtype=torch.float64), torch.tensor([0, 1, 2]), 3, lat, long,
                    at_south_pole=torch.tensor([False, False, True]), interpolation=interpolation)[:, 0]
    assert torch.allclose(only[0, -1], torch.full((long,), 1.0 / long, dtype=torch.float64))
    assert torch.allclose(only[1, 0], torch.full((long,), 1.0 / long, dtype=torch.float64))
    assert torch.allclose(only[2, 0], torch.full((long,), 1.0 / long, dtype=torch.float64))


@pytest.mark.parametrize("interpolation", ["bilinear", "smooth"])
def test_rotation_about_pole_axis_is_a_roll(interpolation):
    torch.manual_seed(1)
    lat, long = 5, 6
    coords = torch.nn.functional.normalize(torch.randn(40, 3, dtype=torch.float64), dim=-1)
    values = torch.randn(40, 2, dtype=torch.float64)
    dst = torch.randint(0, 4, (40,))
    a = 2 * math.pi / long
    rot = torch.tensor([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]], dtype=torch.float64)
    g1 = _project(coords, values, dst, 4, lat, long, interpolation=interpolation)
    g2 = _project(coords @ rot.T, values, dst, 4, lat, long, interpolation=interpolation)
    assert torch.allclose(g2, torch.roll(g1, 1, dims=-1), atol=1e-12)


@pytest.mark.parametrize("interpolation", ["bilinear", "smooth"])
def test_splat_gradients_including_second_order(interpolation):
    torch.manual_seed(2)
    n, lat, long = 6, 3, 4
    base = torch.nn.functional.normalize(torch.randn(n, 3, dtype=torch.float64), dim=-1)
    dst = torch.randint(0, 2, (n,))
    src = torch.randint(0, 4, (n,))
    pole = torch.zeros(n, dtype=torch.bool)
    pole[0] = True

    def fn(coords, values):
        unit = torch.nn.functional.normalize(coords, dim=-1)
        plan = make_splat_plan(unit, src, dst, 2, 4, lat, long, at_south_pole=pole, interpolation=interpolation)
        return grid_from_flat(splat(values, plan), plan)

    coords = base.clone().requires_grad_(True)
    values = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (coords, values))
    assert torch.autograd.gradgradcheck(fn, (coords, values))


def _grid_velocity(path, u: float, lat: int, long: int, interpolation: str) -> torch.Tensor:
    """d grid / du for one point moving along ``path(u)`` (unit frame coordinates)."""
    u = torch.tensor(u, dtype=torch.float64, requires_grad=True)
    one = torch.zeros(1, dtype=torch.long)

    def grid_of(u):
        return _project(path(u).unsqueeze(0), torch.ones(1, 1, dtype=torch.float64), one, 1, lat, long,
                        interpolation=interpolation)

    return torch.autograd.functional.jacobian(grid_of, u)


@pytest.mark.parametrize("where", ["grid line", "pole"])
def test_smooth_interpolation_is_continuously_differentiable(where):
    """Crossing a column line, or passing through the north pole on a meridian, the smooth
    splat's derivative is continuous (the difference across shrinks with the step); the
    bilinear splat's jumps (a kink: what makes forces jump)."""
    lat, long = 6, 8
    if where == "grid line":  # longitude runs through column 3 at u = 0, latitude 0.3
        def path(u):
            lon = 2 * math.pi * 3 / long + u
            return _unit(torch.tensor(0.3, dtype=torch.float64), lon)
    else:  # a great circle through the north pole (x axis): x = cos u, y = sin u cos a, z = sin u sin a
        def path(u):
            a = 0.7
            return torch.stack([torch.cos(u), torch.sin(u) * math.cos(a), torch.sin(u) * math.sin(a)])
    for interpolation, continuous in (("smooth", True), ("bilinear", False)):
        jumps = []
        for eps in (1e-3, 1e-5):
            left = _grid_velocity(path, -eps, lat, long, interpolation)
            right = _grid_velocity(path, eps, lat, long, interpolation)
            jumps.append(float((right - left).abs().max()))
        if continuous:
            assert jumps[1] < 1e-3 and jumps[1] < 0.05 * jumps[0], (where, jumps)
        else:
            assert jumps[1] > 0.1, (where, jumps)


def test_sorting_and_counting_build_the_same_structure():
    """The accelerator path (one sort of the 4 P entries) and the CPU path (counting) give
    identical CSR structures, entry order included, so both devices sum alike."""
    from spinconv_train.models.spinconv import projection

    torch.manual_seed(5)
    n, num_dst, lat, long = 500, 7, 6, 8
    coords = torch.nn.functional.normalize(torch.randn(n, 3, dtype=torch.float64), dim=-1)
    coords[:4] = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0], [0, 0, -1.0]], dtype=torch.float64)
    dst = torch.randint(0, num_dst, (n,))
    phi, lam = projection.sphere_angles(coords)
    r0 = torch.floor((phi + 0.5 * math.pi) * ((lat - 1) / math.pi)).clamp(0, lat - 2).long()
    c0 = torch.remainder(torch.floor(lam * (long / (2 * math.pi))).long(), long)
    c1 = torch.remainder(c0 + 1, long)
    rows = torch.stack([(c0 * num_dst + dst) * lat + r0, (c1 * num_dst + dst) * lat + r0,
                        (c0 * num_dst + dst) * lat + r0 + 1, (c1 * num_dst + dst) * lat + r0 + 1])
    crow_s, take_s = projection._structure_by_sorting(rows, long * num_dst * lat)
    crow_c, take_c = projection._structure_by_counting(rows, c0, r0, dst, num_dst, lat, long)
    assert torch.equal(crow_s, crow_c) and torch.equal(take_s, take_c)


def test_unknown_interpolation_is_named():
    coords = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="cubic"):
        make_splat_plan(coords, torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long), 1, 1, 4, 4,
                        interpolation="cubic")


def test_edge_frames_are_orthonormal_and_equivariant():
    torch.manual_seed(3)
    num_edges, num_pairs = 20, 120
    unit = torch.nn.functional.normalize(torch.randn(num_edges, 3, dtype=torch.float64), dim=-1)
    pair_src = torch.randint(0, num_edges, (num_pairs,))
    pair_dst = torch.randint(0, num_edges, (num_pairs,))
    weight = torch.rand(num_pairs, dtype=torch.float64)
    cos = (unit[pair_src] * unit[pair_dst]).sum(-1)
    frames = edge_frames(unit, pair_src, pair_dst, weight, cos)
    eye = torch.eye(3, dtype=torch.float64).expand(num_edges, 3, 3)
    assert torch.allclose(frames @ frames.transpose(1, 2), eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(frames), torch.ones(num_edges, dtype=torch.float64))
    assert torch.allclose(frames[:, 0], unit)
    rot = random_rotation(4)
    rotated = edge_frames(unit @ rot.T, pair_src, pair_dst, weight, cos)
    assert torch.allclose(rotated, frames @ rot.T, atol=1e-12)


def test_atom_frames_are_orthonormal_and_equivariant():
    torch.manual_seed(5)
    unit = torch.nn.functional.normalize(torch.randn(50, 3, dtype=torch.float64), dim=-1)
    target = torch.randint(0, 6, (50,))
    weight = torch.rand(50, dtype=torch.float64)
    frames = atom_frames(unit, weight, target, 6)
    eye = torch.eye(3, dtype=torch.float64).expand(6, 3, 3)
    assert torch.allclose(frames @ frames.transpose(1, 2), eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(frames), torch.ones(6, dtype=torch.float64))
    rot = random_rotation(6)
    assert torch.allclose(atom_frames(unit @ rot.T, weight, target, 6), frames @ rot.T, atol=1e-12)


def test_degenerate_edge_frame_falls_back_without_nan():
    """All neighbours on the edge axis: no reference vector, a finite frame nonetheless."""
    unit = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    pair_src = torch.tensor([1, 0])
    pair_dst = torch.tensor([0, 1])
    cos = (unit[pair_src] * unit[pair_dst]).sum(-1)
    frames = edge_frames(unit, pair_src, pair_dst, torch.ones(2, dtype=torch.float64), cos)
    frames.sum().backward()
    assert torch.isfinite(frames).all() and torch.isfinite(unit.grad).all()
    eye = torch.eye(3, dtype=torch.float64).expand(2, 3, 3)
    assert torch.allclose(frames @ frames.transpose(1, 2), eye.detach(), atol=1e-12)


def test_csr_product_ignores_previous_contents_of_its_output():
    from spinconv_train.models.spinconv.projection import _csr_matmul

    torch.manual_seed(0)
    dense = torch.randn(9, 7, dtype=torch.float64)
    dense[dense.abs() < 0.8] = 0.0
    dense[[2, 5]] = 0.0  # empty rows must come out as zeros, not as what was there
    matrix = dense.to_sparse_csr()
    x = torch.randn(7, 4, dtype=torch.float64)
    out = torch.full((9, 4), float("nan"), dtype=torch.float64)
    got = _csr_matmul(matrix, x, out=out)
    assert got.data_ptr() == out.data_ptr()
    assert torch.allclose(got, dense @ x, atol=1e-12)
    assert torch.allclose(_csr_matmul(matrix, x), dense @ x, atol=1e-12)
