"""Projection onto the sphere (paper Sec. 3.2): bilinear splatting on a lat x long grid.

Grid convention (docs/design.md): row r is latitude -pi/2 + pi r / (lat - 1), column k
longitude 2 pi k / long; a unit vector with frame coordinates (x, y, z) has latitude
asin(x) and longitude atan2(z, y). Values are splatted bilinearly: linearly between the
two nearest rows and circularly-linearly between the two nearest columns.

Interpolation. ``"bilinear"`` (the paper's) weights the two rows by (1 - t, t) and the
two columns by (1 - s, s), t and s the fractional grid coordinates: continuous, but with
kinks where a point crosses a grid line, so an energy built on it has forces that jump
there. ``"smooth"`` passes t and s through smoothstep(u) = 3u^2 - 2u^3 first: the same
four corners, weights still non-negative and summing to one, equal at grid points, but
continuously differentiable across grid lines; near a pole the weight off the pole row is
then O(rho^2) in the distance rho from the pole, so the splat is C1 there too. Energies
become C1 functions of the positions (continuous forces; NVE conserves energy to O(dt^2)).

Poles. The two pole rows are single points of the sphere, so each pole row is replaced
by its mean over longitude (what lands there is spread equally over the row). This keeps
the splat continuous when a point approaches a pole and makes the pole rows roll
invariant. Points flagged ``at_south_pole`` (the reverse edge, identified by index, never
by geometry) and points whose perpendicular part is below rounding go to their pole
without evaluating atan2/asin on them, so the backward pass stays finite.

Evaluation. The splat is a sparse matrix S (grid points x values) applied to the values:
``grid = S @ values``, as a CSR matrix product (one pass, no per-row scatter). The plan
(structure and weights of S) is built once per forward pass, and reused by every message
block: on CPUs by counting (a sort of P point keys, then closed-form slots), on
accelerators by one stable sort of the 4 P entries (fewer kernel launches); both give the
same matrix with its entries in the same order; the structure of S^T is added the
first time a backward pass needs it. Gradients flow to the values and to the weights (the
angular path of the energy-centric model), and the backward pass is itself differentiable
(training on forces). ``make_splat_plans`` splits the plan into chunks of spheres for
speed and memory (``speed.sphere_chunks``, ``speed.ChunkedSplatPlan``): each chunk's plan is
the same splat restricted to its spheres.

Flat grid layout: row ``(k * num_dst + d) * lat + r`` holds column k, sphere d, latitude
row r, so the longitude DFT of all spheres is one small matrix product.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from .frames import smoothstep
from .speed import ChunkedSplatPlan, sphere_chunks

__all__ = [
    "SplatPlan",
    "SPHERE_INTERPOLATIONS",
    "grid_from_flat",
    "make_splat_plan",
    "make_splat_plans",
    "sphere_angles",
    "splat",
    "splat_dtype",
]


SPHERE_INTERPOLATIONS = ("bilinear", "smooth")


@dataclass
class CSRStructure:
    """Structure of a CSR matrix and where its values come from."""

    crow: Tensor  # (rows + 1,)
    col: Tensor  # (nnz,)
    take: Tensor  # (nnz,) index into the flat (4 P) corner-weight vector
    shape: tuple[int, int]


@dataclass
class SplatPlan:
    """The splat matrix of one set of spheres: S (long * num_dst * lat, num_values).

    The transposed structure (needed only by the backward pass) is built on first use
    from ``corner_rows`` and ``src`` and then kept, so inference never builds it.
    """

    forward: CSRStructure
    weight: Tensor  # (4 P,) corner weights in corner-major order
    num_dst: int
    lat: int
    long: int
    corner_rows: Tensor  # (4 P,) grid row of every corner entry, corner-major
    src: Tensor  # (P,) value index of every point
    _transposed: CSRStructure | None = None

    @property
    def transposed(self) -> CSRStructure:
        """Structure of S^T: rows = values, a value's entries ordered by point, then corner."""
        if self._transposed is None:
            self._transposed = _transposed_structure(self.corner_rows, self.src, self.forward.shape)
        return self._transposed

    def values(self) -> Tensor:
        return self.weight.index_select(0, self.forward.take)

    def values_t(self) -> Tensor:
        return self.weight.index_select(0, self.transposed.take)


def index_counts(index: Tensor, size: int) -> Tensor:
    """``torch.bincount(index, minlength=size)`` for indices known to lie in [0, size).

    On CUDA ``bincount`` reads the indices' min and max back to the host (two
    synchronisations); the scatter-add used off the CPU does not. On the CPU bincount is
    the faster of the two.
    """
    if index.device.type == "cpu":
        return torch.bincount(index, minlength=size)
    return _scatter_counts(index, size)


def _scatter_counts(index: Tensor, size: int) -> Tensor:
    return torch.zeros(size, dtype=torch.long, device=index.device).scatter_add_(0, index.long(), torch.ones_like(index, dtype=torch.long))


def _transposed_structure(corner_rows: Tensor, src: Tensor, shape: tuple[int, int]) -> CSRStructure:
    num_rows, num_src = shape
    num = src.numel()
    by_src = torch.argsort(src, stable=True)
    src_count = index_counts(src, num_src)
    crow_t = torch.zeros(num_src + 1, dtype=torch.long, device=src.device)
    crow_t[1:] = torch.cumsum(4 * src_count, 0)
    corner = torch.arange(4, device=src.device)
    take_t = (corner.unsqueeze(0) * num + by_src.unsqueeze(1)).reshape(-1)  # (P_sorted, 4) -> flat
    return CSRStructure(crow=crow_t, col=corner_rows.index_select(0, take_t), take=take_t, shape=(num_src, num_rows))


def sphere_angles(coords: Tensor, at_south_pole: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Latitude in [-pi/2, pi/2] and longitude in (-pi, pi] of unit frame coordinates (P,3).

    Safe at the poles: there the longitude is 0 and no gradient flows through it.
    """
    x, y, z = coords.unbind(-1)
    rho2 = y * y + z * z
    ok = rho2 > torch.finfo(coords.dtype).eps ** 2
    if at_south_pole is not None:
        ok = ok & ~at_south_pole
    one = torch.ones_like(rho2)
    ys = torch.where(ok, y, one)
    zs = torch.where(ok, z, torch.zeros_like(z))
    xs = torch.where(ok, x, torch.zeros_like(x))
    rho = torch.sqrt(torch.where(ok, rho2, one))
    half_pi = torch.full_like(x, 0.5 * math.pi)
    pole_lat = torch.where(x > 0, half_pi, -half_pi)
    if at_south_pole is not None:
        pole_lat = torch.where(at_south_pole, -half_pi, pole_lat)
    lat = torch.where(ok, torch.atan2(xs, rho), pole_lat)
    lon = torch.where(ok, torch.atan2(zs, ys), torch.zeros_like(x))
    return lat, lon


def make_splat_plan(
    coords: Tensor,
    src: Tensor,
    dst: Tensor,
    num_dst: int,
    num_src: int,
    lat: int,
    long: int,
    scale: Tensor | None = None,
    at_south_pole: Tensor | None = None,
    interpolation: str = "bilinear",
) -> SplatPlan:
    """Splat plan (four grid corners per point) for P points with frame coordinates ``coords`` (P,3).

    Args:
        src: (P,) index of the value splatted by each point (< num_src).
        dst: (P,) index of the destination sphere of each point (< num_dst).
        scale: optional (P,) factor on every weight (e.g. a cutoff envelope).
        at_south_pole: optional (P,) bool, points that are exactly the south pole.
        interpolation: ``"bilinear"`` or ``"smooth"`` corner weights (module docstring).
    """
    if lat < 2 or long < 1:
        raise ValueError(f"sphere grid needs lat >= 2 and long >= 1, got lat={lat}, long={long}")
    if interpolation not in SPHERE_INTERPOLATIONS:
        raise ValueError(f"sphere interpolation must be one of {SPHERE_INTERPOLATIONS}, got {interpolation!r}")
    device = coords.device
    phi, lam = sphere_angles(coords, at_south_pole)
    row = (phi + 0.5 * math.pi) * ((lat - 1) / math.pi)
    r0f = torch.floor(row.detach()).clamp_(0, lat - 2)
    t = row - r0f
    col = lam * (long / (2.0 * math.pi))
    c_floor = torch.floor(col.detach())
    s = col - c_floor
    r0 = r0f.long()
    c0 = torch.remainder(c_floor.long(), long)
    if interpolation == "smooth":
        t, s = smoothstep(t), smoothstep(s)
    weight = torch.stack([(1 - t) * (1 - s), (1 - t) * s, t * (1 - s), t * s])  # corners A, B, C, D
    if scale is not None:
        weight = weight * scale.unsqueeze(0)

    c1 = torch.remainder(c0 + 1, long)
    base0 = (c0 * num_dst + dst) * lat
    base1 = (c1 * num_dst + dst) * lat
    r1 = r0 + 1
    rows = torch.stack([base0 + r0, base1 + r0, base0 + r1, base1 + r1])  # (4, P) grid row of each corner
    num_rows = long * num_dst * lat
    if device.type == "cpu":
        crow, take = _structure_by_counting(rows, c0, r0, dst, num_dst, lat, long)
    else:
        crow, take = _structure_by_sorting(rows, num_rows)
    forward = CSRStructure(crow=crow, col=src.repeat(4).index_select(0, take), take=take, shape=(num_rows, num_src))
    return SplatPlan(forward, weight.reshape(-1), num_dst, lat, long, corner_rows=rows.reshape(-1), src=src)


def _structure_by_sorting(rows: Tensor, num_rows: int) -> tuple[Tensor, Tensor]:
    """CSR row pointers and entry order of the (4, P) corner rows by one stable sort of the
    4 P entries: within a row, entries in corner-major order (A, B, C, D), then by point.
    About 10 ops: used on accelerators, where a small batch is bound by kernel launches."""
    flat = rows.reshape(-1)
    take = torch.argsort(flat, stable=True)
    crow = torch.zeros(num_rows + 1, dtype=torch.long, device=rows.device)
    crow[1:] = torch.cumsum(index_counts(flat, num_rows), 0)
    return crow, take


def _structure_by_counting(
    rows: Tensor, c0: Tensor, r0: Tensor, dst: Tensor, num_dst: int, lat: int, long: int
) -> tuple[Tensor, Tensor]:
    """The same CSR structure as ``_structure_by_sorting`` (identical order) by counting:
    a stable sort of P point keys instead of 4 P entries, then closed-form slots. Faster
    on CPUs (sorting is their expensive part), at ~70 more ops."""
    device = rows.device
    num = rows.shape[1]
    # Group the points by (c0, sphere, r0); a stable sort of P keys (not of 4 P entries).
    key = (c0 * num_dst + dst) * (lat - 1) + r0
    order = torch.argsort(key, stable=True)
    group_size = index_counts(key, long * num_dst * (lat - 1))
    group_start = torch.cumsum(group_size, 0) - group_size
    rank = torch.empty_like(order)
    # (index_select / scatter_ instead of advanced indexing: 3-4x faster on CPU here)
    rank.scatter_(0, order, torch.arange(num, device=device) - group_start.index_select(0, key.index_select(0, order)))

    # counts[c0, d, r0 + 1], in the flat grid's row order; r0 = -1 and lat - 1 are padding.
    counts = torch.zeros(long, num_dst, lat + 1, dtype=torch.long, device=device)
    counts[:, :, 1:lat] = group_size.view(long, num_dst, lat - 1)
    prev = torch.roll(counts, 1, dims=0)  # counts at column k - 1
    # Grid row (k, d, r) gets corner A from (c0, r0) = (k, r), B from (k - 1, r),
    # C from (k, r - 1) and D from (k - 1, r - 1); its entries are stored A, B, C, D.
    off_b = counts[:, :, 1:].reshape(-1)
    off_c = off_b + prev[:, :, 1:].reshape(-1)
    off_d = off_c + counts[:, :, :-1].reshape(-1)
    per_row = off_d + prev[:, :, :-1].reshape(-1)
    crow = torch.zeros(long * num_dst * lat + 1, dtype=torch.long, device=device)
    crow[1:] = torch.cumsum(per_row, 0)
    offsets = torch.stack([torch.zeros_like(rank), off_b.index_select(0, rows[1]), off_c.index_select(0, rows[2]),
                           off_d.index_select(0, rows[3])])
    position = crow.index_select(0, rows.view(-1)).view(4, num) + offsets + rank.unsqueeze(0)  # slot of each entry
    nnz = 4 * num
    take = torch.empty(nnz, dtype=torch.long, device=device)
    take.scatter_(0, position.view(-1), torch.arange(nnz, device=device))
    return crow, take


_REDUCED_PRECISION = (torch.float16, torch.bfloat16)


def make_splat_plans(
    coords: Tensor,
    src: Tensor,
    dst: Tensor,
    num_dst: int,
    num_src: int,
    lat: int,
    long: int,
    scale: Tensor | None = None,
    at_south_pole: Tensor | None = None,
    max_dst_per_chunk: int | None = None,
    dst_sorted: bool = False,
    interpolation: str = "bilinear",
) -> SplatPlan | ChunkedSplatPlan[SplatPlan]:
    """``make_splat_plan``, split into chunks of at most ``max_dst_per_chunk`` spheres
    (``speed.sphere_chunks``: which points land on which chunk's spheres, renumbered from
    0 in each chunk); ``None`` or a small system gives one plain plan. ``dst_sorted``: the
    caller guarantees ``dst`` is non-decreasing (no sort, no gathers).
    """
    if max_dst_per_chunk is None or num_dst <= max_dst_per_chunk:
        return make_splat_plan(coords, src, dst, num_dst, num_src, lat, long, scale, at_south_pole, interpolation)
    plans = [
        make_splat_plan(
            chunk.select(coords), chunk.select(src), chunk.select(dst) - chunk.first, chunk.size, num_src, lat, long,
            None if scale is None else chunk.select(scale),
            None if at_south_pole is None else chunk.select(at_south_pole), interpolation,
        )
        for chunk in sphere_chunks(dst, num_dst, max_dst_per_chunk, dst_sorted)
    ]
    return ChunkedSplatPlan(plans, num_dst)


def _csr(structure: CSRStructure, values: Tensor) -> Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(
            structure.crow, structure.col, values, size=structure.shape, check_invariants=False
        )


def _csr_matmul(matrix: Tensor, x: Tensor, out: Tensor | None = None) -> Tensor:
    """``matrix @ x`` for a CSR ``matrix`` and a dense ``x``, written into ``out`` (or a
    fresh tensor); the previous contents of ``out`` are ignored, NaN included.

    ``addmm(out=..., beta=0)`` writes the product straight into the output; on CPU
    ``matrix @ x`` zero-fills a result and copies a temporary into it, which costs more
    than the product itself for grids of this size.
    """
    if out is None:
        out = torch.empty(matrix.shape[0], x.shape[1], dtype=x.dtype, device=x.device)
    return torch.addmm(out, matrix, x, beta=0.0, out=out)


def _splat_product(structure: CSRStructure, values: Tensor, x: Tensor, out: Tensor | None = None) -> Tensor:
    """S(values) @ x in the inputs' dtype (autocast off: CSR kernels lack half types)."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        return _csr_matmul(_csr(structure, values), x, out)


class _SparseMatmul(torch.autograd.Function):
    """out = S(values) @ x for a CSR structure; differentiable in values and x, twice."""

    @staticmethod
    def forward(ctx, values: Tensor, values_t: Tensor, x: Tensor, fwd: CSRStructure, bwd: CSRStructure) -> Tensor:
        ctx.save_for_backward(values, values_t, x)
        ctx.structures = (fwd, bwd)
        return _splat_product(fwd, values, x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        values, values_t, x = ctx.saved_tensors
        fwd, bwd = ctx.structures
        grad = grad.to(x.dtype).contiguous()
        g_values = g_x = None
        if ctx.needs_input_grad[2]:
            g_x = _SparseMatmul.apply(values_t, values, grad, bwd, fwd)
        if ctx.needs_input_grad[0]:
            # d out / d S[i, j] = grad[i] . x[j] on the sparsity pattern (an SDDMM: no
            # (nnz, C) gathers, differentiable for the second-order pass).
            pattern = _csr(fwd, torch.ones_like(values))
            with torch.autocast(device_type=x.device.type, enabled=False):
                g_values = torch.sparse.sampled_addmm(pattern, grad.to(x.dtype), x.T, beta=0.0).values()
        return g_values, None, g_x, None, None


def splat_dtype(values_dtype: torch.dtype, weights_dtype: torch.dtype) -> torch.dtype:
    """The dtype ``splat`` computes and returns in: the wider of the two, at least float32
    (sparse CSR kernels lack half types)."""
    dtype = torch.promote_types(values_dtype, weights_dtype)
    return torch.float32 if dtype in _REDUCED_PRECISION else dtype


def splat(values: Tensor, plan: SplatPlan, out: Tensor | None = None) -> Tensor:
    """Splat ``values`` (M, C) with ``plan``: flat grid (long * num_dst * lat, C).

    The pole rows are not yet averaged over longitude (see ``grid_from_flat``; the FFT
    spin convolution does it implicitly by keeping only their mean). ``out``: a buffer of
    that shape and of ``splat_dtype`` to write into, used only when no gradient is needed.
    """
    weights = plan.values()
    dtype = splat_dtype(values.dtype, weights.dtype)
    weights, values = weights.to(dtype), values.to(dtype).contiguous()
    if not (torch.is_grad_enabled() and (weights.requires_grad or values.requires_grad)):
        return _splat_product(plan.forward, weights, values, out)  # no transposed structure needed
    return _SparseMatmul.apply(weights, plan.values_t().to(dtype), values, plan.forward, plan.transposed)


def grid_from_flat(flat: Tensor, plan: SplatPlan) -> Tensor:
    """Flat grid -> (num_dst, C, lat, long) with each pole row replaced by its mean."""
    channels = flat.shape[-1]
    grid = flat.view(plan.long, plan.num_dst, plan.lat, channels).permute(1, 3, 2, 0)  # (D, C, lat, long)
    south = grid[:, :, :1].mean(dim=-1, keepdim=True).expand(-1, -1, 1, plan.long)
    north = grid[:, :, -1:].mean(dim=-1, keepdim=True).expand(-1, -1, 1, plan.long)
    return torch.cat([south, grid[:, :, 1:-1], north], dim=2)
