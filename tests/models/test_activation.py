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


def _plain_mixture(z, mix):
    return torch.bmm(mix.unsqueeze(1), torch.nn.functional.silu(z)).squeeze(1)


def test_silu_mixture_matches_the_plain_mixture_to_second_order():
    from spinconv_train.models.spinconv.activation import silu_mixture

    torch.manual_seed(1)
    z = (2 * torch.randn(6, 3, 5, dtype=torch.float64)).requires_grad_(True)
    mix = torch.softmax(torch.randn(6, 3, dtype=torch.float64), -1).requires_grad_(True)
    assert torch.allclose(silu_mixture(z, mix), _plain_mixture(z, mix), atol=1e-14)
    assert torch.autograd.gradcheck(silu_mixture, (z, mix))
    assert torch.autograd.gradgradcheck(silu_mixture, (z, mix))
    # second order through a scalar of the first derivatives, as energy-centric training does
    w = torch.randn(6, 5, dtype=torch.float64)
    results = []
    for fn in (silu_mixture, _plain_mixture):
        gz, gm = torch.autograd.grad((fn(z, mix) * w).sum(), (z, mix), create_graph=True)
        results.append(torch.autograd.grad((gz.sin().sum() + gm.square().sum()), (z, mix)))
    for ours, ref in zip(*results):
        assert torch.allclose(ours, ref, atol=1e-12)
    with torch.no_grad():  # inference: in place on z, same values
        zc = z.detach().clone()
        assert torch.allclose(silu_mixture(zc, mix.detach()), _plain_mixture(z.detach(), mix.detach()), atol=1e-14)


def test_silu_mixture_keeps_no_expert_sized_tensors():
    from spinconv_train.models.spinconv.activation import silu_mixture

    def saved(fn):
        z = torch.randn(64, 8, 32, dtype=torch.float64, requires_grad=True)
        mix = torch.softmax(torch.randn(64, 8, dtype=torch.float64), -1).requires_grad_(True)
        sizes = []

        def pack(t):
            sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = fn(z, mix)
            torch.autograd.grad(out.sum(), (z, mix), create_graph=True)
        return sum(sizes)

    assert saved(silu_mixture) <= 0.5 * saved(_plain_mixture)


def test_energy_centric_models_recompute_expert_activations_in_training():
    from models.spinconv_testkit import make_model, slab_with_adsorbate, to_batch

    from spinconv_train.models.spinconv.embedding import EmbeddingBlock

    grad_model = make_model(force_estimator="grad")
    direct_model = make_model(force_estimator="direct")
    assert all(m.recompute_for_second_order for m in grad_model.modules() if isinstance(m, EmbeddingBlock))
    assert not any(m.recompute_for_second_order for m in direct_model.modules() if isinstance(m, EmbeddingBlock))
    # Same loss gradient with and without the recomputation (second order through the forces).
    batch = to_batch([slab_with_adsorbate(1, size=(2, 2, 2), adsorbate="O")], torch.float64)
    grads = []
    for recompute in (True, False):
        for m in grad_model.modules():
            if isinstance(m, EmbeddingBlock):
                m.recompute_for_second_order = recompute
        grad_model.zero_grad()
        out = grad_model.train()(batch.clone())
        (out["energy"].sum() + out["forces"].square().sum()).backward()
        grads.append([p.grad.clone() for p in grad_model.parameters() if p.grad is not None])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)
