"""Scratch buffers of the inference chunk loop: reuse, growth, and never under autograd."""
from __future__ import annotations

import torch

from spinconv_train.models.spinconv.projection import make_splat_plans
from spinconv_train.models.spinconv.speed import Scratch


def test_take_reuses_one_buffer_per_name_and_grows_when_needed():
    scratch = Scratch()
    cpu = torch.device("cpu")
    a = scratch.take("grid", (4, 6), torch.float32, cpu)
    b = scratch.take("grid", (3, 5), torch.float32, cpu)  # smaller: the same storage
    assert b.is_contiguous() and b.shape == (3, 5)
    assert b.data_ptr() == a.data_ptr()
    c = scratch.take("spectrum", (2, 2), torch.float32, cpu)
    assert c.data_ptr() != a.data_ptr() and len(scratch) == 2
    d = scratch.take("grid", (10, 10), torch.float32, cpu)  # larger: a new buffer
    assert d.shape == (10, 10) and d.numel() == 100
    e = scratch.take("grid", (2, 2), torch.float64, cpu)  # other dtype: a new buffer
    assert e.dtype == torch.float64


def test_chunked_plan_hands_out_scratch_only_without_autograd():
    gen = torch.Generator().manual_seed(0)
    coords = torch.nn.functional.normalize(torch.randn(50, 3, generator=gen), dim=-1)
    src = torch.randint(0, 10, (50,), generator=gen)
    dst = torch.sort(torch.randint(0, 12, (50,), generator=gen)).values
    plan = make_splat_plans(coords, src, dst, 12, 10, 4, 6, max_dst_per_chunk=5, dst_sorted=True)
    assert plan.inference_scratch() is None  # grad mode: intermediates must stay alive
    with torch.no_grad():
        first = plan.inference_scratch()
        assert first is not None and plan.inference_scratch() is first  # shared by all blocks
