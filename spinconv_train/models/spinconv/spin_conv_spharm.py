"""Spin convolutions on spherical-harmonic coefficients: rotspharmwd, spharm, rotspharmroll.

Each module maps a sphere grid ``(E, C, lat, long)`` (docs/design.md, "Sphere grid
convention": pole = edge direction) to ``(E, out)`` edge features that are invariant to
rolling the grid along longitude. All three first project every channel onto real spherical
harmonics up to ``lmax`` (``spharm_grid``: e3nn harmonics, component normalisation, exact
for band-limited grids), giving coefficients ``c`` of shape ``(E, C, (lmax+1)^2)``. Then:

``rotspharmwd`` (the reference's ``SpinConvBlock`` with ``sphere_message="rotspharmwd"``)
    For the ``long`` rotations ``theta_r = 2*pi*r/long`` about the edge direction, rotate the
    coefficients with the Wigner-D matrix, ``c_r = D(theta_r) c``, apply one shared
    ``Linear(C*(lmax+1)^2 -> out)`` to ``c_r`` (channel-major flattening, as the reference),
    SiLU, and average over the ``long`` rotations. Same function and parameter count as the
    reference, with two differences: the average replaces the reference's sum (a factor
    ``long``; the reference's GroupNorm that follows removes it; the grid ``fullconv``
    also averages), and the coefficients are those of the project's grid (poles on rows 0
    and lat-1). The reference fed its pole-to-pole grid to e3nn's ``FromS2Grid``, which
    assumes rows at colatitudes ``(i + 1/2)*pi/lat``: its coefficients belong to a
    stretched sphere. Rolling the grid by one column rotates ``c`` by ``D(2*pi/long)``
    exactly, which shifts the rotation index: the output is roll invariant to rounding.
    Evaluation: ``D(theta)`` is a trigonometric polynomial of degree lmax in ``theta`` whose
    ``cos(m theta)``/``sin(m theta)`` parts act only on coefficients of order ``|m|``
    (``spharm_rotation``), so the ``long`` pre-activations cost ``lmax + 1`` small matmuls
    plus a ``(long x (2*lmax+1))`` synthesis, not ``long`` full Linear layers.

``spharm``
    Features exactly invariant to any rotation about the edge direction, then Linear + SiLU
    (no pooling needed). Per channel: the ``m = 0`` coefficients (``lmax + 1`` values,
    entering linearly), and for each order ``m >= 1`` the Gram matrix of the complex
    coefficients ``z_l = c_{l,+m} + i s c_{l,-m}`` (``l = m..lmax``; ``s = +-1`` fixes the sense
    so that a rotation by theta multiplies every ``z_l`` by ``exp(i m theta)``):
    ``Re(z_l conj(z_l'))`` for ``l <= l'`` and ``Im(z_l conj(z_l'))`` for ``l < l'``. That is
    ``(lmax+1) + sum_{n=1..lmax} n^2`` features per channel (18 for lmax 3), smooth
    everywhere (products, no moduli), followed by ``Linear(C*F -> out)`` and SiLU.

``rotspharmroll``
    A two-layer spin convolution. Layer 1 is ``rotspharmwd`` before pooling: shared weights
    over the ``long`` rotated coefficient sets, SiLU, giving ``a`` of shape
    ``(E, long, out)``, a signal over the roll angle. Layer 2 is a depthwise circular
    convolution of ``a`` over the roll index with a learned length-``long`` kernel per
    output channel (plus bias): in the roll-frequency domain, each output channel's
    spectrum over the rotations is multiplied by the kernel's spectrum (a learned gain per
    roll frequency and channel; evaluated as a circulant matmul, which is cheaper at these
    sizes and also works for an empty batch), then SiLU and the average over rolls.
    Rolling the grid shifts ``a`` circularly, the convolution commutes with the shift and
    the average removes it: exactly roll invariant. Unlike ``rotspharmwd`` it sees
    correlations between features at different spin angles before pooling. (A linear
    convolution over the rotated coefficients without the SiLU in between would collapse
    into a ``rotspharmwd`` Linear, since ``c_{r+s} = D(theta_s) c_r``.)

Only ``spharm`` is invariant to arbitrary rotations about the edge direction; the two
roll-pooled kinds are exactly invariant to whole-column rolls and, between them, deviate
only through SiLU harmonics aliased by the ``long``-point average (about 3e-6 relative for
a band-limited signal at lat 16, long 12, lmax 3). Grids must satisfy
``long >= 2*lmax + 1`` and ``lat >= lmax + 2`` (ValueError otherwise).

Constant matrices (projection, Fourier blocks of the Wigner matrices, roll synthesis) are
computed once in float64 and stored as non-persistent buffers; ``.to(dtype/device)``
recasts them from the float64 originals, so a module moved to float64 is as exact as one
built in float64.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .activation import silu
from .spharm_grid import check_grid_resolves, num_coefficients, projection_matrix
from .spharm_rotation import order_slots, rotation_fourier_blocks

__all__ = [
    "KINDS",
    "RotSpharmRollSpinConv",
    "RotSpharmWDSpinConv",
    "SpharmSpinConv",
    "build_spharm_spin_conv",
]

KINDS = ("rotspharmwd", "spharm", "rotspharmroll")

Activation = Callable[[torch.Tensor], torch.Tensor]


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class _SphericalSpinConv(nn.Module):
    """Shared part: input checks, grid -> coefficient projection, float64-exact buffers."""

    def __init__(
        self, in_channels: int, out_channels: int, lat: int, long: int, lmax: int,
        act: Activation | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = _positive_int("in_channels", in_channels)
        self.out_channels = _positive_int("out_channels", out_channels)
        check_grid_resolves(lat, long, lmax)
        self.lat, self.long, self.lmax = lat, long, lmax
        self.num_coeffs = num_coefficients(lmax)
        self.act: Activation = silu if act is None else act  # lean second derivative
        self._float64_constants: dict[str, torch.Tensor] = {}
        self._add_constant("projection", projection_matrix(lat, long, lmax))

    def _add_constant(self, name: str, value: torch.Tensor) -> None:
        """Register a buffer; floating ones are kept in float64 to be recast on ``.to()``."""
        if value.is_floating_point():
            self._float64_constants[name] = value.to(torch.float64)
            value = value.to(torch.get_default_dtype())
        self.register_buffer(name, value, persistent=False)

    def _apply(self, fn, recurse=True):  # type: ignore[override]
        """After ``.to()``/``.double()``/...: rebuild converted constants from float64."""
        before = {name: (self._buffers[name].dtype, self._buffers[name].device)
                  for name in self._float64_constants}
        super()._apply(fn, recurse)
        for name, exact in self._float64_constants.items():
            current = self._buffers[name]
            if (current.dtype, current.device) != before[name]:
                self._buffers[name] = exact.to(device=current.device, dtype=current.dtype)
        return self

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"lat={self.lat}, long={self.long}, lmax={self.lmax}")

    def coefficients(self, grid: torch.Tensor) -> torch.Tensor:
        """Spherical-harmonic coefficients ``(E, C, L)`` of a grid ``(E, C, lat, long)``."""
        return self.slot_major_coefficients(grid).permute(2, 1, 0)

    def slot_major_coefficients(self, grid: torch.Tensor) -> torch.Tensor:
        """The coefficients laid out ``(L, C, E)`` (slot, channel, edge) for the kernels below."""
        expected = (self.in_channels, self.lat, self.long)
        if grid.dim() != 4 or tuple(grid.shape[1:]) != expected:
            raise ValueError(
                f"{type(self).__name__}: grid must have shape (E, {expected[0]}, {expected[1]}, "
                f"{expected[2]}) = (edges, channels, lat, long), got {tuple(grid.shape)}"
            )
        if grid.dtype != self.projection.dtype:
            raise ValueError(
                f"{type(self).__name__}: grid dtype {grid.dtype} differs from the module's "
                f"{self.projection.dtype}; move the module with .to(dtype)"
            )
        num_edges = grid.shape[0]
        flat = grid.reshape(num_edges * self.in_channels, self.lat * self.long)
        coeff = (flat @ self.projection).view(num_edges, self.in_channels, self.num_coeffs)
        return coeff.permute(2, 1, 0).contiguous()


class RotSpharmWDSpinConv(_SphericalSpinConv):
    """``rotspharmwd``: mean over ``long`` Wigner-D rotations of SiLU(Linear(rotated coeffs))."""

    def __init__(
        self, in_channels: int, out_channels: int, lat: int, long: int, lmax: int,
        act: Activation | None = None,
    ) -> None:
        super().__init__(in_channels, out_channels, lat, long, lmax, act)
        self.linear = nn.Linear(in_channels * self.num_coeffs, out_channels)
        blocks = rotation_fourier_blocks(lmax)
        for m, block in enumerate(blocks):
            self._add_constant(f"slots_m{m}", order_slots(lmax, m))
            self._add_constant(f"fourier_m{m}", block)
        theta = 2 * math.pi * torch.arange(long, dtype=torch.float64) / long
        columns = [torch.ones_like(theta)]
        for m in range(1, lmax + 1):
            columns += [torch.cos(m * theta), torch.sin(m * theta)]
        # (long, 2*lmax+1): value of each Fourier component at each rotation angle
        self._add_constant("roll_synthesis", torch.stack(columns, dim=1))

    def rotated_preactivations(self, coeff: torch.Tensor) -> torch.Tensor:
        """``Linear(D(theta_r) c)`` for all ``long`` rotations: ``(L, C, E)`` -> ``(out, long, E)``.

        Takes slot-major coefficients; edges stay the last (fastest) axis so that the roll
        synthesis, the activation and the roll average run as large contiguous operations.
        """
        num_edges = coeff.shape[2]
        weight = self.linear.weight.view(self.out_channels, self.in_channels, self.num_coeffs)
        parts = []
        for m in range(self.lmax + 1):
            slots = getattr(self, f"slots_m{m}")
            blocks = getattr(self, f"fourier_m{m}")  # (k, n, n): cos (and sin) parts of D
            k, n = blocks.shape[0], blocks.shape[1]
            w_m = torch.einsum("ocj,kji->okic", weight.index_select(2, slots), blocks)
            w_m = w_m.reshape(self.out_channels * k, n * self.in_channels)
            x_m = coeff.index_select(0, slots).view(n * self.in_channels, num_edges)
            part = (w_m @ x_m).view(self.out_channels, k, num_edges)
            if m == 0:  # the constant roll component carries the bias to every rotation
                part = part + self.linear.bias[:, None, None]
            parts.append(part)
        spectrum = torch.cat(parts, dim=1)  # (out, 2*lmax+1, E)
        return torch.matmul(self.roll_synthesis, spectrum)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        """``(E, C, lat, long)`` -> ``(E, out)``, invariant to rolls along longitude."""
        pre = self.rotated_preactivations(self.slot_major_coefficients(grid))
        return self.act(pre).mean(dim=1).T.contiguous()


class RotSpharmRollSpinConv(RotSpharmWDSpinConv):
    """``rotspharmroll``: rotated-coefficient Linear + SiLU, then a depthwise circular
    convolution over the roll angle, SiLU, mean over rolls."""

    def __init__(
        self, in_channels: int, out_channels: int, lat: int, long: int, lmax: int,
        act: Activation | None = None,
    ) -> None:
        super().__init__(in_channels, out_channels, lat, long, lmax, act)
        bound = 1.0 / math.sqrt(long)
        self.spin_kernel = nn.Parameter(torch.empty(out_channels, long).uniform_(-bound, bound))
        self.spin_bias = nn.Parameter(torch.empty(out_channels).uniform_(-bound, bound))
        shifts = torch.arange(long)
        # circulant[r, t] = (r - t) mod long: conv[r] = sum_t kernel[(r - t) mod long] a[t]
        self._add_constant("circulant_index", (shifts[:, None] - shifts[None, :]) % long)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        """``(E, C, lat, long)`` -> ``(E, out)``, invariant to rolls along longitude."""
        coeff = self.slot_major_coefficients(grid)
        hidden = self.act(self.rotated_preactivations(coeff))  # (out, long, E)
        circulant = self.spin_kernel[:, self.circulant_index]  # (out, long, long)
        conv = torch.bmm(circulant, hidden) + self.spin_bias[:, None, None]
        return self.act(conv).mean(dim=1).T.contiguous()


def _gram_pairs(lmax: int) -> dict[str, list[float]]:
    """Slot indices and signs of the products ``z_l conj(z_l')`` used by ``spharm``.

    For each order ``m >= 1`` and ``m <= l <= l' <= lmax``: ``p_*``/``q_*`` are the slots
    ``(l, +m)``/``(l, -m)`` of the two factors and ``sign_*`` the factor ``s`` that makes
    ``z = p + i s q`` turn by ``exp(i m theta)`` under a rotation by ``theta`` about the pole;
    ``strict`` lists the products with ``l < l'`` (whose imaginary part is not identically 0).
    """
    blocks = rotation_fourier_blocks(lmax)
    out: dict[str, list[float]] = {k: [] for k in ("p_a", "q_a", "sign_a", "p_b", "q_b",
                                                   "sign_b", "strict")}
    for m in range(1, lmax + 1):
        slots = order_slots(lmax, m).tolist()  # (l, -m), (l, +m) for l = m..lmax
        sine = blocks[m][1]  # D(theta)[S, S] = A cos(m theta) + B sin(m theta)
        factors = []
        for j in range(0, len(slots), 2):
            # D gives p' = cos p + b sin q; with q~ = -b q, (p, q~) turns by +m theta
            b = float(sine[j + 1, j])
            factors.append((slots[j + 1], slots[j], -1.0 if b > 0 else 1.0))
        for first, (p_a, q_a, s_a) in enumerate(factors):
            for second in range(first, len(factors)):
                p_b, q_b, s_b = factors[second]
                if second > first:
                    out["strict"].append(len(out["p_a"]))
                for key, value in zip(("p_a", "q_a", "sign_a", "p_b", "q_b", "sign_b"),
                                      (p_a, q_a, s_a, p_b, q_b, s_b)):
                    out[key].append(value)
    return out


class SpharmSpinConv(_SphericalSpinConv):
    """``spharm``: SiLU(Linear(features invariant to every rotation about the edge direction))."""

    def __init__(
        self, in_channels: int, out_channels: int, lat: int, long: int, lmax: int,
        act: Activation | None = None,
    ) -> None:
        super().__init__(in_channels, out_channels, lat, long, lmax, act)
        pairs = _gram_pairs(lmax)
        for name in ("p_a", "q_a", "p_b", "q_b"):
            self._add_constant(f"pair_{name}", torch.tensor(pairs[name], dtype=torch.long))
        for name in ("sign_a", "sign_b"):
            self._add_constant(f"pair_{name}", torch.tensor(pairs[name], dtype=torch.float64))
        self._add_constant("pair_strict", torch.tensor(pairs["strict"], dtype=torch.long))
        self._add_constant("slots_m0", order_slots(lmax, 0))
        self.features_per_channel = (lmax + 1) + len(pairs["p_a"]) + len(pairs["strict"])
        self.linear = nn.Linear(in_channels * self.features_per_channel, out_channels)

    def invariant_features(self, coeff: torch.Tensor) -> torch.Tensor:
        """Rotation-invariant features ``(F, C, E)`` of slot-major coefficients ``(L, C, E)``."""
        p_a = coeff.index_select(0, self.pair_p_a)
        q_a = coeff.index_select(0, self.pair_q_a) * self.pair_sign_a[:, None, None]
        p_b = coeff.index_select(0, self.pair_p_b)
        q_b = coeff.index_select(0, self.pair_q_b) * self.pair_sign_b[:, None, None]
        real = p_a * p_b + q_a * q_b
        imag = (q_a * p_b - p_a * q_b).index_select(0, self.pair_strict)
        return torch.cat([coeff.index_select(0, self.slots_m0), real, imag], dim=0)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        """``(E, C, lat, long)`` -> ``(E, out)``, invariant to any rotation about the pole."""
        feats = self.invariant_features(self.slot_major_coefficients(grid))  # (F, C, E)
        num_feats, _, num_edges = feats.shape
        # the Linear's inputs are channel-major (c, f), as a flattened (E, C, F) tensor
        weight = self.linear.weight.view(self.out_channels, self.in_channels, num_feats)
        weight = weight.transpose(1, 2).reshape(self.out_channels, num_feats * self.in_channels)
        pre = weight @ feats.view(num_feats * self.in_channels, num_edges)
        return self.act(pre + self.linear.bias[:, None]).T.contiguous()


_BUILDERS = {
    "rotspharmwd": RotSpharmWDSpinConv,
    "spharm": SpharmSpinConv,
    "rotspharmroll": RotSpharmRollSpinConv,
}


def build_spharm_spin_conv(
    kind: str, in_channels: int, out_channels: int, lat: int, long: int, lmax: int,
    act: Activation | None = None,
) -> nn.Module:
    """Spherical-harmonic spin convolution ``(E, in_channels, lat, long) -> (E, out_channels)``.

    ``kind`` is one of ``rotspharmwd``, ``spharm``, ``rotspharmroll`` (see the module
    docstring); ``act`` defaults to SiLU. Raises ValueError for an unknown kind, a
    non-integer ``lmax`` or a grid too coarse for ``lmax``.
    """
    if kind not in _BUILDERS:
        raise ValueError(f"unknown spherical-harmonic spin convolution kind {kind!r}; "
                         f"known: {', '.join(KINDS)}")
    return _BUILDERS[kind](in_channels, out_channels, lat, long, lmax, act)
