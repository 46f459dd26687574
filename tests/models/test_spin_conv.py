"""Spin convolutions: the FFT path equals the Conv1d path, and outputs are roll-invariant."""
from __future__ import annotations

import pytest
import torch
from spinconv_testkit import skip_if_spharm_missing
from torch import nn

from spinconv_train.models.spinconv.spin_conv import GridSpinConv, build_spin_conv


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("lat,long,channels,out", [(16, 12, 32, 256), (5, 9, 16, 6), (3, 1, 8, 4), (4, 2, 8, 8)])
def test_fft_equals_conv(dtype, tol, lat, long, channels, out):
    torch.manual_seed(0)
    conv = GridSpinConv(channels, out, lat, long, nn.SiLU(), impl="conv").to(dtype)
    fft = GridSpinConv(channels, out, lat, long, nn.SiLU(), impl="fft").to(dtype)
    fft.load_state_dict(conv.state_dict())
    grid = torch.randn(7, channels, lat, long, dtype=dtype, requires_grad=True)
    a, b = conv(grid), fft(grid)
    scale = a.detach().abs().max()
    assert float((a - b).detach().abs().max() / scale) < tol
    # Gradients agree as well (w.r.t. the grid and the shared weights).
    ga = torch.autograd.grad(a.square().sum(), [grid, conv.conv1.weight])
    gb = torch.autograd.grad(b.square().sum(), [grid, fft.conv1.weight])
    for x, y in zip(ga, gb):
        assert float((x - y).abs().max() / x.abs().max()) < 10 * tol


@pytest.mark.parametrize("kind", ["fullconv", "rotspharmwd", "spharm", "rotspharmroll"])
def test_roll_invariance(kind):
    skip_if_spharm_missing(kind)
    torch.manual_seed(1)
    lat, long = 8, 8
    module = build_spin_conv(kind, 16, 12, lat, long, lmax=3, act=nn.SiLU()).double()
    grid = torch.randn(5, 16, lat, long, dtype=torch.float64)
    torch.set_grad_enabled(False)
    ref = module(grid)
    assert ref.shape == (5, 12)
    for shift in range(1, long):
        rolled = module(torch.roll(grid, shift, dims=-1))
        assert float((rolled - ref).abs().max()) < 1e-9 * float(ref.abs().max())
    # and it is not invariant to a change that is not a roll
    flipped = module(torch.flip(grid, dims=[-2]))
    torch.set_grad_enabled(True)
    assert float((flipped - ref).abs().max()) > 1e-6


def test_oc20_spin_conv_parameter_shape():
    module = build_spin_conv("fullconv", 32, 256, 16, 12, act=nn.SiLU())
    assert tuple(module.conv1.weight.shape) == (256, 32 * 16 // 4, 12)  # 4 groups, kernel = long


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="'nope'"):
        build_spin_conv("nope", 8, 8, 4, 4)
    with pytest.raises(ValueError, match="lmax"):
        build_spin_conv("rotspharmwd", 8, 8, 4, 4, lmax=None)
    with pytest.raises(ValueError, match="multiple of 8"):
        build_spin_conv("fullconv", 12, 8, 4, 4)
    with pytest.raises(ValueError, match="spin_conv_impl"):
        GridSpinConv(8, 8, 4, 4, nn.SiLU(), impl="fast")
