"""Inference in chunks of spheres (bounded memory) computes the same function."""
from __future__ import annotations

import pytest
import torch
from models.spinconv_testkit import make_model, slab_with_adsorbate, to_batch

from spinconv_train.models.spinconv.projection import make_splat_plan, make_splat_plans, splat
from spinconv_train.models.spinconv.speed import ChunkedSplatPlan


def test_chunked_plans_cover_the_same_rows():
    gen = torch.Generator().manual_seed(0)
    num_points, num_dst, num_src, lat, long = 200, 23, 40, 5, 6
    coords = torch.nn.functional.normalize(torch.randn(num_points, 3, generator=gen, dtype=torch.float64), dim=-1)
    src = torch.randint(0, num_src, (num_points,), generator=gen)
    dst = torch.randint(0, num_dst, (num_points,), generator=gen)
    values = torch.randn(num_src, 3, generator=gen, dtype=torch.float64)
    whole = splat(values, make_splat_plan(coords, src, dst, num_dst, num_src, lat, long))
    chunked = make_splat_plans(coords, src, dst, num_dst, num_src, lat, long, max_dst_per_chunk=5)
    assert isinstance(chunked, ChunkedSplatPlan) and len(chunked.chunks) == 5
    assert [c.num_dst for c in chunked.chunks] == [5, 5, 5, 5, 3]
    # Flat rows are (column, sphere, latitude): compare sphere by sphere.
    whole = whole.view(long, num_dst, lat, 3)
    parts = [splat(values, c).view(long, c.num_dst, lat, 3) for c in chunked.chunks]
    assert torch.allclose(torch.cat(parts, dim=1), whole, atol=1e-12)
    # Points given in sphere order: the contiguous-slice path builds the same chunks.
    order = torch.argsort(dst, stable=True)
    sliced = make_splat_plans(coords[order], src[order], dst[order], num_dst, num_src, lat, long,
                              max_dst_per_chunk=5, dst_sorted=True)
    assert [c.num_dst for c in sliced.chunks] == [5, 5, 5, 5, 3]
    for a, b in zip(sliced.chunks, chunked.chunks):
        assert torch.allclose(splat(values, a), splat(values, b), atol=1e-12)


@pytest.mark.parametrize("estimator,interpolation", [("direct", "bilinear"), ("grad", "bilinear"),
                                                     ("direct", "smooth"), ("grad", "smooth")])
@pytest.mark.parametrize("kind", ["fullconv", "rotspharmwd"])
def test_chunked_model_equals_whole(kind, estimator, interpolation):
    lmax = 2 if kind != "fullconv" else False
    batch = to_batch([slab_with_adsorbate(1, size=(2, 2, 2), adsorbate="O")], torch.float64)
    models = [make_model(torch.float64, sphere_message=kind, output_message=kind, lmax=lmax, force_estimator=estimator,
                         spin_conv_chunk_elements=chunk, sphere_interpolation=interpolation)
              for chunk in (None, 288 * 17)]  # 8 hidden x 6 x 6 = 288 per sphere: chunks of 17 spheres
    assert models[1].chunk_spheres(torch.device("cpu")) == 17
    with torch.no_grad():
        a, b = (m.eval()(batch.clone()) for m in models)
    for key in ("energy", "forces"):
        assert torch.allclose(a[key], b[key], rtol=1e-10, atol=1e-10), key
    # Training: the same loss gradient on every parameter (second order for "grad").
    grads = []
    for m in models:
        out = m.train()(batch.clone())
        (out["energy"].sum() + out["forces"].square().sum()).backward()
        grads.append([p.grad for p in m.parameters()])
    for ga, gb in zip(*grads):
        assert torch.allclose(ga, gb, rtol=1e-9, atol=1e-10)


def test_chunk_sizes():
    model = make_model(torch.float64)  # "auto"
    assert model.chunk_spheres(torch.device("cpu")) == 2**22 // 288
    assert model.chunk_spheres(torch.device("cuda")) == 2**27 // 288
    assert make_model(torch.float64, spin_conv_chunk_elements=None).chunk_spheres(torch.device("cpu")) is None
    with pytest.raises(ValueError, match="spin_conv_chunk_elements"):
        make_model(torch.float64, spin_conv_chunk_elements=0)
