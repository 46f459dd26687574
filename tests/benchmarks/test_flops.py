"""Analytic spin-convolution FLOP counts against torch's own FLOP counter."""
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from spinconv_train.benchmarks.flops import conv_spin_flops, fft_spin_flops, is_spin_conv, module_spin_flops


def test_oc20_counts_match_notes():
    # OC20 configuration: in = 32 * 16 channels, out 256, long 12, 4 groups.
    assert conv_spin_flops(512, 256, 12, 4, 6) == 2 * 13 * 256 * 128 * 12
    # Fourier form over 6 complex slots (zero and Nyquist frequencies packed): 2 * 6 * 4 *
    # 256 * 128 for the products + 2 * 512 * 12 * 12 + 2 * 256 * 12 * 12 for the DFTs.
    assert fft_spin_flops(512, 256, 12, 4) == 2 * 6 * 4 * 256 * 128 + 2 * 512 * 12 * 12 + 2 * 256 * 12 * 12
    ratio = conv_spin_flops(512, 256, 12, 4, 6) / fft_spin_flops(512, 256, 12, 4)
    assert 5.5 < ratio < 6.5


def test_conv1d_count_matches_flop_counter():
    conv = nn.Conv1d(8 * 4, 16, 6, groups=2, padding=3, padding_mode="circular")
    x = torch.randn(5, 32, 6)
    with FlopCounterMode(display=False) as counter:
        conv(x)
    actual, direct = module_spin_flops(conv, tuple(x.shape))
    assert actual == direct == counter.get_total_flops()
    assert is_spin_conv(conv)


def test_grid_spin_conv_fft_count_matches_flop_counter():
    from spinconv_train.models.spinconv.spin_conv import GridSpinConv

    module = GridSpinConv(16, 32, 4, 6, nn.SiLU(), impl="fft")
    grid = torch.randn(7, 16, 4, 6)
    with FlopCounterMode(display=False) as counter:
        module(grid)
    actual, direct = module_spin_flops(module, tuple(grid.shape))
    # The counter also sees the per-call DFT of the weights: out * (in/groups) * long * 2S * 2,
    # S = 3 complex slots for long = 6 (zero and Nyquist frequencies share slot 0).
    in_g = 16 * 4 // 2
    weight_dft = 2 * 32 * in_g * 6 * 2 * 3
    assert counter.get_total_flops() == actual + weight_dft
    assert direct == 7 * conv_spin_flops(64, 32, 6, 2, 3)
    assert is_spin_conv(module)
