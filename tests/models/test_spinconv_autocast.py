"""Mixed precision: under torch.autocast the model runs, keeps its geometry in float32 and
returns float32 outputs close to the float32 model's (bfloat16 autocast on CPU here; the
CUDA float16 path is exercised in tests/gpu)."""
from __future__ import annotations

import pytest
import torch
from models.spinconv_testkit import make_model, slab_with_adsorbate, to_batch

from spinconv_train.models.spinconv import projection


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("estimator", ["direct", "grad"])
@pytest.mark.parametrize("kind", ["fullconv", "rotspharmwd"])
def test_bf16_autocast_matches_float32(estimator, kind):
    model = make_model(torch.float32, force_estimator=estimator, sphere_message=kind,
                       lmax=2 if kind != "fullconv" else False)
    batch = to_batch([slab_with_adsorbate(0), slab_with_adsorbate(1, adsorbate="O")], torch.float32)
    reference = model(batch.clone())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model(batch.clone())
        loss = mixed["energy"].sum() + mixed["forces"].abs().sum()
    loss.backward()
    for key in ("energy", "forces"):
        assert mixed[key].dtype == torch.float32
        # bfloat16 keeps 8 bits of mantissa (0.4 % per rounding); the float32 outputs of
        # these large random weights agree to a few percent.
        assert _relative_error(mixed[key].detach(), reference[key].detach()) < 5e-2, key
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_bf16_autocast_stress_matches_float32():
    """Training on stresses under autocast: the strain path stays in float32 and the stress
    comes back in float32, close to the float32 model's, with finite weight gradients."""
    model = make_model(torch.float32, force_estimator="grad", sphere_interpolation="smooth", envelope=True)
    batch = to_batch([slab_with_adsorbate(0), slab_with_adsorbate(1, adsorbate="O")], torch.float32)
    reference = model(batch.clone(), stress=True)["stress"].detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model(batch.clone(), stress=True)
        loss = mixed["stress"].square().sum()
    loss.backward()
    assert mixed["stress"].dtype == torch.float32
    assert _relative_error(mixed["stress"].detach(), reference) < 5e-2
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_autocast_keeps_sphere_coordinates_in_float32(monkeypatch):
    seen = []

    def recording(make_plan):
        def wrapped(coords, *args, **kwargs):
            seen.append(coords.dtype)
            return make_plan(coords, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(projection, "make_splat_plan", recording(projection.make_splat_plan))
    model = make_model(torch.float32)
    batch = to_batch([slab_with_adsorbate(0)], torch.float32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(batch)
    assert seen == [torch.float32, torch.float32]  # the edge spheres and the force head's spheres
