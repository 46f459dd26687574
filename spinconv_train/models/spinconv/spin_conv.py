"""Spin convolutions (paper Sec. 3.3): grid (E, C, lat, long) -> roll-invariant (E, out).

``fullconv`` keeps the reference's parameterisation: a grouped Conv1d over longitude with
in = C * lat channels, kernel = long, circular padding, then activation and a mean over
the ``long`` rolls. Because the kernel spans the whole circle, the outputs are the circular
cross-correlations at all ``long`` shifts, so the mean is invariant to rolls of the grid.

``impl="fft"`` computes the same function in the Fourier domain over longitude: with
X = DFT(x) and W = DFT(w), the cross-correlation is irDFT(conj(W) X), i.e. for each of
the long//2 + 1 frequencies and each group one complex (in/groups -> out/groups) matrix
product instead of ``long`` real ones (about 5x fewer FLOPs for long = 12). The DFTs are
small real matrices (built in float64, kept per dtype and device), so everything stays real-valued and works in
any dtype. Without autograd on the weights the Fourier-domain weights are kept between calls
(``speed.KernelCache``; ``GridSpinConv.flat_kernel``).
``impl="conv"`` runs ``nn.Conv1d`` itself.

The spherical-harmonic kinds (``rotspharmwd``, ``spharm``, ``rotspharmroll``) live in
``spin_conv_spharm.py`` (same input/output contract), imported lazily.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .activation import activate
from .speed import KernelCache, Scratch, device_constant, permuted_copy, scratch_matmul

__all__ = ["SPHARM_KINDS", "SPIN_CONV_KINDS", "GridSpinConv", "build_spin_conv"]

SPHARM_KINDS = ("rotspharmwd", "spharm", "rotspharmroll")
SPIN_CONV_KINDS = ("fullconv",) + SPHARM_KINDS
SPIN_CONV_IMPLS = ("fft", "conv")

def _dft_matrices_on(long: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """The DFT matrices computed in float64, then cast once per (dtype, device)."""
    return device_constant(_dft_matrices, long, device=device, dtype=dtype)


def _dft_matrices(long: int) -> tuple[Tensor, Tensor]:
    """Real DFT (long, 2S) and inverse (2S, long) matrices over S complex slots.

    Columns are [real parts | imaginary parts] of the slots. Slot f holds frequency f
    (cos and -sin columns) for f = 0 .. S - 1. The imaginary parts of the zero frequency
    and, for even ``long``, of the Nyquist frequency are identically zero, so for even
    ``long`` slot 0 packs the two purely real coefficients: its "imaginary" column is the
    Nyquist frequency's cosine (S = long / 2: 12 rows instead of 14 for long = 12). For
    odd ``long``, S = long // 2 + 1 and slot 0's imaginary column is zero.
    """
    forward, inverse = _unpacked_dft_matrices(long)
    if long % 2 == 1:
        return forward, inverse
    num_freq = long // 2 + 1
    nyquist = num_freq - 1
    keep = list(range(nyquist)) + [nyquist] + list(range(num_freq + 1, num_freq + nyquist))
    return forward[:, keep], inverse[keep]


def _unpacked_dft_matrices(long: int) -> tuple[Tensor, Tensor]:
    """Real DFT (long, 2F) = [cos | -sin] and inverse (2F, long) matrices, F = long//2 + 1."""
    num_freq = long // 2 + 1
    k = torch.arange(long, dtype=torch.float64)
    f = torch.arange(num_freq, dtype=torch.float64)
    ang = 2.0 * math.pi * torch.outer(k, f) / long  # (long, F)
    cos, sin = torch.cos(ang), torch.sin(ang)
    cos[cos.abs() < 1e-12] = 0.0  # exact zeros where the imaginary parts vanish
    sin[sin.abs() < 1e-12] = 0.0
    forward = torch.cat([cos, -sin], dim=1)
    alpha = torch.full((num_freq,), 2.0, dtype=torch.float64)
    alpha[0] = 1.0
    if long % 2 == 0:
        alpha[-1] = 1.0
    inverse = torch.cat([alpha[:, None] * cos.T, -alpha[:, None] * sin.T], dim=0) / long
    return forward, inverse


class GridSpinConv(nn.Module):
    """The ``fullconv`` spin convolution (reference parameters), FFT or Conv1d evaluation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        lat: int,
        long: int,
        act: Callable[[Tensor], Tensor],
        impl: str = "fft",
    ) -> None:
        super().__init__()
        if impl not in SPIN_CONV_IMPLS:
            raise ValueError(f"spin_conv_impl must be one of {SPIN_CONV_IMPLS}, got {impl!r}")
        if in_channels % 8 != 0:
            raise ValueError(f"hidden_channels must be a multiple of 8 (grouped spin convolution), got {in_channels}")
        groups = in_channels // 8
        if out_channels % groups != 0:
            raise ValueError(
                f"mid_hidden_channels ({out_channels}) must be divisible by hidden_channels/8 ({groups})"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.lat, self.long, self.groups = lat, long, groups
        self.impl = impl
        self.act = act
        self.conv1 = nn.Conv1d(
            in_channels * lat, out_channels, long, groups=groups, padding=long // 2, padding_mode="circular"
        )
        self.kernel_cache = KernelCache()  # the Fourier-domain weights between inference calls

    def forward(self, grid: Tensor) -> Tensor:
        """(E, C, lat, long) -> (E, out), invariant to ``torch.roll(grid, k, -1)``."""
        num = grid.shape[0]
        if self.impl == "conv":
            return self._conv(grid)
        flat = grid.permute(3, 0, 2, 1).reshape(self.long * num * self.lat, self.in_channels)
        return self._fft(flat, num, uniform_poles=False)

    def forward_flat(
        self, flat: Tensor, num: int, kernel: Tensor | None = None, scratch: Scratch | None = None
    ) -> Tensor:
        """Same as ``forward`` on a splatted flat grid (projection layout), poles averaged.

        ``kernel``: ``flat_kernel(flat.dtype, flat.device)``, computed once and passed to
        every chunk of one forward pass (the Fourier path's weights; ignored by ``conv``).
        ``scratch``: buffers for the intermediates (inference only, see ``scratch.py``).
        """
        if self.impl == "conv":
            grid = flat.view(self.long, num, self.lat, self.in_channels).permute(1, 3, 2, 0)
            south = grid[:, :, :1].mean(dim=-1, keepdim=True).expand(-1, -1, 1, self.long)
            north = grid[:, :, -1:].mean(dim=-1, keepdim=True).expand(-1, -1, 1, self.long)
            return self._conv(torch.cat([south, grid[:, :, 1:-1], north], dim=2))
        return self._fft(flat, num, uniform_poles=True, kernel=kernel, scratch=scratch)

    def flat_kernel(self, dtype: torch.dtype, device: torch.device) -> Tensor | None:
        """The Fourier-domain weights ``forward_flat`` uses (None for ``impl="conv"``),
        kept by ``kernel_cache`` while no gradient can flow to the weight (see
        ``speed.KernelCache``; after edits through ``conv1.weight.data`` call
        ``kernel_cache.clear()``)."""
        if self.impl == "conv":
            return None
        return self.kernel_cache.get(self.conv1.weight, dtype, device, self._build_flat_kernel)

    def train(self, mode: bool = True) -> GridSpinConv:
        # A switch of mode brackets every optimisation phase; a repeated eval() (the ASE
        # calculator calls it before every structure) keeps the kernel.
        if bool(mode) != self.training:
            self.kernel_cache.clear()
        return super().train(mode)

    def _build_flat_kernel(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        dft, _ = _dft_matrices_on(self.long, dtype, device)
        return self._kernel_matrix(dtype, dft, uniform_poles=True)

    def _conv(self, grid: Tensor) -> Tensor:
        x = grid.reshape(grid.shape[0], self.in_channels * self.lat, self.long)
        y = self.conv1(x)[..., : self.long]
        return self.act(y).mean(dim=-1)

    def _kernel_matrix(self, dtype: torch.dtype, dft: Tensor, uniform_poles: bool) -> Tensor:
        """Per output half (re, im), frequency and group the real (2 lat cg, out_g) matrix
        of X -> conj(W) X: shape (2, F, G, 2 lat cg, out_g)."""
        groups, lat = self.groups, self.lat
        cg = self.in_channels // groups
        out_g = self.out_channels // groups
        num_freq = dft.shape[1] // 2
        w = torch.matmul(self.conv1.weight.to(dtype), dft)  # (out, cg * lat, 2S)
        w = w.view(groups, out_g, cg, lat, 2, num_freq)
        wr = w[:, :, :, :, 0].permute(4, 0, 3, 2, 1)  # (S, G, lat, cg, out_g)
        wi = w[:, :, :, :, 1].permute(4, 0, 3, 2, 1)
        packed = self.long % 2 == 0
        if packed:
            # Slot 0 holds (zero frequency, Nyquist), both real: a diagonal block, not a
            # complex product ("wi" of slot 0 is the Nyquist weight's real part).
            zero = torch.zeros_like(wr[:1])
            first = torch.stack([torch.cat([wr[:1], zero], dim=-1), torch.cat([zero, wi[:1]], dim=-1)], dim=2)
            rest = torch.stack(
                [torch.cat([wr[1:], -wi[1:]], dim=-1), torch.cat([wi[1:], wr[1:]], dim=-1)], dim=2
            )
            mat = torch.cat([first, rest], dim=0)
        else:
            mat = torch.stack([torch.cat([wr, -wi], dim=-1), torch.cat([wi, wr], dim=-1)], dim=2)
        if uniform_poles:
            # A pole row is its mean over longitude: only its zero frequency survives.
            keep = torch.ones(num_freq, 1, 2, lat, 1, 1, dtype=dtype, device=mat.device)
            keep[1:, :, :, 0] = 0.0
            keep[1:, :, :, lat - 1] = 0.0
            if packed:  # the Nyquist half of slot 0
                keep[0, :, 1, 0] = 0.0
                keep[0, :, 1, lat - 1] = 0.0
            mat = mat * keep
        # (re/im of the output, F, G, 2 lat cg, out_g): one matrix product per output half,
        # so the products land with the spectrum slot outermost (see ``_fft``).
        mat = mat.reshape(num_freq, groups, 2 * lat * cg, 2, out_g)
        return mat.permute(3, 0, 1, 2, 4).contiguous()

    def _fft(
        self, flat: Tensor, num: int, uniform_poles: bool, kernel: Tensor | None = None,
        scratch: Scratch | None = None,
    ) -> Tensor:
        """Spin convolution of a flat grid (long * num * lat, C) via the longitude DFT."""
        groups, lat, long = self.groups, self.lat, self.long
        cg = self.in_channels // groups
        out_g = self.out_channels // groups
        dft, idft = _dft_matrices_on(long, flat.dtype, flat.device)
        num_freq = dft.shape[1] // 2
        # Spectrum (2F, num, lat, C), rows [re f | im f]; then (F, G, num, [re/im, lat, cg]).
        spec = scratch_matmul(dft.T, flat.reshape(long, -1), scratch, "spectrum").view(2, num_freq, num, lat, groups, cg)
        spec = permuted_copy(spec, (1, 4, 2, 0, 3, 5), scratch, "spectrum_by_group")
        spec = spec.view(num_freq, groups, num, 2 * lat * cg)
        if kernel is None:
            kernel = self._kernel_matrix(flat.dtype, dft, uniform_poles)
        # Output spectrum (2F, G, num, out_g): slot [re f | im f] outermost, as the rows of
        # the inverse DFT, so no permuted copy is needed before it.
        if scratch is None:
            out = torch.stack([torch.matmul(spec, kernel[0]), torch.matmul(spec, kernel[1])])
        else:
            out = scratch.take("out_spectrum", (2, num_freq, groups, num, out_g), flat.dtype, flat.device)
            torch.matmul(spec, kernel[0], out=out[0])
            torch.matmul(spec, kernel[1], out=out[1])
        # The bias adds the same value to every roll: it is long * bias on the real part of
        # the zero frequency (the inverse DFT averages that coefficient over the rolls).
        out[0, 0] += (self.long * self.conv1.bias).to(out.dtype).view(groups, 1, out_g)
        # All rolls: (G num out_g, 2F) @ (2F, long), the transposed view costs no copy.
        y = scratch_matmul(out.view(2 * num_freq, -1).T, idft, scratch, "rolls")
        y = activate(self.act, y).view(groups, num, out_g, long).mean(dim=-1)  # (G, num, out_g); y is a temporary
        return y.permute(1, 0, 2).reshape(num, self.out_channels)


def build_spin_conv(
    kind: str,
    in_channels: int,
    out_channels: int,
    lat: int,
    long: int,
    lmax: int | None = None,
    act: Callable[[Tensor], Tensor] | None = None,
    impl: str = "fft",
) -> nn.Module:
    """Spin convolution module of the given kind mapping (E, C, lat, long) -> (E, out)."""
    if kind == "fullconv":
        return GridSpinConv(in_channels, out_channels, lat, long, act if act is not None else nn.SiLU(), impl)
    if kind in SPHARM_KINDS:
        if lmax is None or lmax is False or int(lmax) < 0:
            raise ValueError(f"spin convolution {kind!r} needs an integer lmax >= 0, got {lmax!r}")
        from .spin_conv_spharm import build_spharm_spin_conv

        return build_spharm_spin_conv(
            kind=kind, in_channels=in_channels, out_channels=out_channels, lat=lat, long=long, lmax=int(lmax)
        )
    raise ValueError(f"unknown spin convolution {kind!r}; known: {', '.join(SPIN_CONV_KINDS)}")
