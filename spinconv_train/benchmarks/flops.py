"""Analytic FLOP counts of the spin convolutions (per convolved item: an edge or a sphere).

Two evaluations of the same ``fullconv`` spin convolution are counted:

* direct (``nn.Conv1d`` over longitude, the reference): in = C*lat channels, out channels,
  kernel = long, ``groups`` groups, circular padding long//2, L_out = long + 2*(long//2)
  - long + 1 outputs: 2 * L_out * out * (in/groups) * long FLOPs;
* Fourier (``impl="fft"`` of our GridSpinConv): a real DFT of the input (in x long x 2S),
  per complex slot (S = (long + 1) // 2; for even long the zero and Nyquist frequencies
  share slot 0) and group one (2 in/g x 2 out/g) real matmul, and the inverse DFT
  (out x 2S x long).

A multiply-add counts as 2 FLOPs.
"""
from __future__ import annotations

from torch import nn


def conv_spin_flops(in_channels: int, out_channels: int, long: int, groups: int, padding: int) -> int:
    """FLOPs of one direct grouped circular Conv1d over ``long`` positions (per item)."""
    l_out = long + 2 * padding - long + 1
    return 2 * l_out * out_channels * (in_channels // groups) * long


def fft_spin_flops(in_channels: int, out_channels: int, long: int, groups: int) -> int:
    """FLOPs of the Fourier-domain evaluation with real DFT matrices (per item)."""
    num_freq = (long + 1) // 2  # complex slots: even long packs f = 0 and Nyquist into one
    in_g, out_g = in_channels // groups, out_channels // groups
    dft = 2 * in_channels * long * 2 * num_freq
    products = 2 * num_freq * groups * (2 * in_g) * (2 * out_g)
    idft = 2 * out_channels * 2 * num_freq * long
    return dft + products + idft


def module_spin_flops(module: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(FLOPs actually performed, direct-conv-equivalent FLOPs) of one call of ``module``.

    ``module`` is an ``nn.Conv1d`` (the reference's spin convolution; input (E, in, long))
    or a module with the attributes of our ``GridSpinConv`` (``in_channels``, ``lat``,
    ``long``, ``groups``, ``out_channels``, ``impl``; input (E, C, lat, long)).
    """
    items = int(input_shape[0])
    if isinstance(module, nn.Conv1d):
        long = int(input_shape[-1])
        per = conv_spin_flops(
            module.in_channels, module.out_channels, long, module.groups, int(module.padding[0])
        )
        return items * per, items * per
    needed = ("in_channels", "lat", "long", "groups", "out_channels", "impl")
    if not all(hasattr(module, name) for name in needed):
        raise TypeError(f"cannot count spin-convolution FLOPs of {type(module).__name__}")
    in_ch = module.in_channels * module.lat
    direct = conv_spin_flops(in_ch, module.out_channels, module.long, module.groups, module.long // 2)
    if module.impl == "fft":
        actual = fft_spin_flops(in_ch, module.out_channels, module.long, module.groups)
    else:
        actual = direct
    return items * actual, items * direct


def is_spin_conv(module: nn.Module) -> bool:
    """The modules timed as 'spin convolution': our GridSpinConv, or an nn.Conv1d."""
    return type(module).__name__ == "GridSpinConv" or isinstance(module, nn.Conv1d)
