"""The spin convolution keeps its Fourier-domain weights between inference calls, and
never serves stale ones: any change of the weight gives the freshly built kernel."""
from __future__ import annotations

import copy
import pickle

import pytest
import torch
from spinconv_testkit import make_model, rattled_molecule, to_batch
from torch import nn

from spinconv_train.models.spinconv.spin_conv import GridSpinConv
from spinconv_train.tasks.targets import TargetState


def _module() -> GridSpinConv:
    torch.manual_seed(0)
    return GridSpinConv(16, 8, 5, 6, nn.SiLU())


def _fresh(module: GridSpinConv, dtype=torch.float32) -> torch.Tensor:
    with torch.no_grad():
        return module._build_flat_kernel(dtype, torch.device("cpu"))


def test_kept_between_inference_calls_and_equal_to_a_fresh_build():
    module = _module()
    with torch.no_grad():
        first = module.flat_kernel(torch.float32, torch.device("cpu"))
        again = module.flat_kernel(torch.float32, torch.device("cpu"))
    assert again is first
    assert torch.equal(first, _fresh(module))
    with torch.no_grad():  # another dtype is another entry
        double = module.flat_kernel(torch.float64, torch.device("cpu"))
    assert double.dtype == torch.float64 and double is not first


def test_rebuilt_when_the_weight_changes_in_place():
    module = _module()
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    with torch.no_grad():
        before = module.flat_kernel(torch.float32, torch.device("cpu")).clone()
    module.conv1.weight.grad = torch.ones_like(module.conv1.weight)
    opt.step()  # in place, no train()/eval() switch in between
    with torch.no_grad():
        after = module.flat_kernel(torch.float32, torch.device("cpu"))
    assert not torch.equal(after, before)
    assert torch.equal(after, _fresh(module))


def test_rebuilt_after_load_state_dict_and_after_to():
    module, other = _module(), GridSpinConv(16, 8, 5, 6, nn.SiLU())
    with torch.no_grad():
        module.flat_kernel(torch.float32, torch.device("cpu"))
    module.load_state_dict(other.state_dict())
    with torch.no_grad():
        assert torch.equal(module.flat_kernel(torch.float32, torch.device("cpu")), _fresh(other))
    module.double()  # new storage for the weight
    with torch.no_grad():
        kernel = module.flat_kernel(torch.float64, torch.device("cpu"))
    assert torch.equal(kernel, _fresh(module, torch.float64))


def test_gradients_reach_the_weight_when_it_trains():
    module = _module()
    with torch.no_grad():
        module.flat_kernel(torch.float32, torch.device("cpu"))  # an entry exists
    kernel = module.flat_kernel(torch.float32, torch.device("cpu"))
    assert kernel.requires_grad
    (grad,) = torch.autograd.grad(kernel.square().sum(), module.conv1.weight)
    assert float(grad.abs().max()) > 0


def test_frozen_weights_with_autograd_on_after_inference_mode():
    """Inference-mode tensors cannot be saved for backward: an entry built under
    inference_mode must not be served to a pass that records autograd (here the gradient
    of a frozen model's energy with respect to the positions)."""
    model = make_model(dtype=torch.float64)
    model.eval().requires_grad_(False)
    batch = to_batch([rattled_molecule()])
    with torch.inference_mode():
        model(batch.clone())
    data = batch.clone()
    data.pos.requires_grad_(True)
    (grad,) = torch.autograd.grad(model(data)["energy"].sum(), data.pos)
    assert torch.isfinite(grad).all() and float(grad.abs().max()) > 0


def test_energy_centric_forces_under_inference_mode_name_the_problem():
    model = make_model(dtype=torch.float64, force_estimator="grad").eval()
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode.*no_grad"):
        model(to_batch([rattled_molecule()]))


def test_model_outputs_track_weight_updates():
    """Eval-mode outputs after a training step equal those of a copy that never cached."""
    model = make_model(dtype=torch.float64)
    batch = to_batch([rattled_molecule()])
    model.eval()
    with torch.no_grad():
        model(batch.clone())  # fills the caches
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    loss = model(batch.clone())["energy"].sum()  # still eval mode: no train() switch
    loss.backward()
    opt.step()
    with torch.no_grad():
        cached = model(batch.clone())
        fresh = copy.deepcopy(model)
        for module in fresh.modules():
            if isinstance(module, GridSpinConv):
                module.kernel_cache.clear()
        rebuilt = fresh(batch.clone())
    for key in ("energy", "forces"):
        assert torch.equal(cached[key], rebuilt[key])


def test_not_pickled_with_the_module():
    module = _module()
    with torch.no_grad():
        module.flat_kernel(torch.float32, torch.device("cpu"))
    assert module.kernel_cache.kernel is not None
    assert pickle.loads(pickle.dumps(module)).kernel_cache.kernel is None


def test_energy_centric_inference_reuses_the_kernel_with_the_same_forces():
    """Under no_grad the energy-centric model differentiates only with respect to the
    positions: it serves the kept kernels, and its forces equal those of a pass that
    builds them with autograd (training-style, weights requiring gradients)."""
    model = make_model(dtype=torch.float64, force_estimator="grad").eval()
    batch = to_batch([rattled_molecule()])
    convs = [m for m in model.modules() if isinstance(m, GridSpinConv)]
    with torch.no_grad():
        first = model(batch.clone())
        kept = [m.kernel_cache.kernel for m in convs]
        second = model(batch.clone())
    assert all(m.kernel_cache.kernel is k for m, k in zip(convs, kept))  # reused, not rebuilt
    recorded = model(batch.clone())  # autograd on: kernels built with their graph
    assert recorded["forces"].requires_grad or recorded["energy"].requires_grad
    for key in ("energy", "forces"):
        assert torch.equal(first[key], second[key])
        assert torch.allclose(first[key], recorded[key].detach(), rtol=1e-12, atol=1e-12)


def test_calculator_calls_reuse_the_kernel_and_a_mode_switch_drops_it():
    """The ASE calculator calls model.eval() before every structure: that must not drop the
    kept kernels (it did, rebuilding them on every MD step); train() then eval() does."""
    from spinconv_train.calculators import ModelCalculator

    class RawOutputs:
        targets = TargetState()  # no normaliser; elements unknown
        def denormalize(self, out, batch):
            return out

    model = make_model(dtype=torch.float64, force_estimator="grad").eval()
    convs = [m for m in model.modules() if isinstance(m, GridSpinConv)]
    atoms = rattled_molecule()
    atoms.calc = ModelCalculator(model, RawOutputs())
    atoms.get_forces()
    kept = [m.kernel_cache.kernel for m in convs]
    atoms.positions[0, 0] += 0.01
    atoms.get_forces()  # a second structure: eval() again, same weights
    assert all(m.kernel_cache.kernel is k for m, k in zip(convs, kept))
    model.train()
    assert all(m.kernel_cache.kernel is None for m in convs)
