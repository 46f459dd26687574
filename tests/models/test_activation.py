"""The lean SiLU: same values and first, second and third derivatives as torch's SiLU,
and fewer tensors kept for the second backward."""
from __future__ import annotations

import torch

from spinconv_train.models.spinconv.activation import SiLU, activate, silu


def test_values_and_derivatives_match_torch_silu_to_third_order():
    torch.manual_seed(0)
    x = (3 * torch.randn(40, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(silu, (x,))
    assert torch.autograd.gradgradcheck(silu, (x,))
    # third order: d3/dx3 of sum(silu) against torch's own formula
    derivs = []
    for fn in (silu, torch.nn.functional.silu):
        (g1,) = torch.autograd.grad(fn(x).sum(), x, create_graph=True)
        (g2,) = torch.autograd.grad(g1.sum(), x, create_graph=True)
        (g3,) = torch.autograd.grad(g2.sum(), x)
        derivs.append((g1, g2, g3))
    for ours, ref in zip(*derivs):
        assert torch.allclose(ours, ref, atol=1e-12)
    assert torch.equal(silu(x), torch.nn.functional.silu(x))


def test_second_backward_keeps_fewer_tensors():
    def saved_bytes(fn):
        x = torch.randn(256, 64, dtype=torch.float64, requires_grad=True)
        total = []

        def pack(t):
            total.append(t.numel() * t.element_size())
            return t

        y = fn(x)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):  # the create_graph pass only
            torch.autograd.grad(y, x, grad_outputs=torch.ones_like(y), create_graph=True)
        return sum(total)

    ours, torch_silu = saved_bytes(silu), saved_bytes(torch.nn.functional.silu)
    assert ours <= 0.5 * torch_silu, (ours, torch_silu)


def test_module_and_inference_activation():
    act = SiLU()
    assert isinstance(act, torch.nn.SiLU)
    x = torch.randn(5, 3)
    assert torch.equal(act(x), torch.nn.functional.silu(x))
    with torch.no_grad():
        y = x.clone()
        out = activate(act, y)
        assert out.data_ptr() == y.data_ptr() and torch.equal(out, torch.nn.functional.silu(x))
    z = x.clone().requires_grad_(True)
    assert activate(act, z).data_ptr() != z.data_ptr()  # autograd on: never in place
