"""The parts of ``models/spinconv/speed`` the blocks call: device constants, scratch ops,
sphere chunks and the kernel cache each give what the plain computation gives."""
from __future__ import annotations

import copy
import pickle

import pytest
import torch
from spinconv_testkit import make_model, rattled_molecule, to_batch

from spinconv_train.models.spinconv.speed import (
    KernelCache,
    Scratch,
    device_constant,
    frozen_weights,
    permuted_copy,
    scratch_empty,
    scratch_matmul,
    sphere_chunks,
)
from spinconv_train.models.spinconv.speed.kernel_cache import kept_kernels

CPU = torch.device("cpu")


def _pair(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.arange(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64)


def test_device_constant_is_made_once_per_device_and_dtype():
    calls = []

    def build(n: int) -> torch.Tensor:
        calls.append(n)
        return torch.arange(n)

    first = device_constant(build, 4, device=CPU)
    assert torch.equal(first, torch.arange(4)) and first.dtype == torch.long
    assert device_constant(build, 4, device=CPU) is first and calls == [4]
    as_float = device_constant(build, 4, device=CPU, dtype=torch.float32)
    assert as_float.dtype == torch.float32 and torch.equal(as_float, torch.arange(4.0)) and calls == [4, 4]
    a, b = device_constant(_pair, 3, device=CPU, dtype=torch.float32)  # tuples: every tensor cast
    assert a.dtype == b.dtype == torch.float32 and torch.equal(a, torch.arange(3.0)) and torch.equal(b, torch.ones(3))


def test_scratch_ops_equal_the_plain_ops_and_write_into_the_buffers():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 3, 4, generator=gen), torch.randn(4, 5, generator=gen)
    x = torch.randn(2, 3, 4, generator=gen)
    scratch = Scratch()
    product = scratch_matmul(a, b, scratch, "product")
    assert torch.equal(product, torch.matmul(a, b))
    assert product.data_ptr() == scratch.take("product", (2, 3, 5), a.dtype, CPU).data_ptr()
    assert torch.equal(scratch_matmul(a, b, None, "product"), torch.matmul(a, b))
    copied = permuted_copy(x, (2, 0, 1), scratch, "copy")
    assert copied.is_contiguous() and torch.equal(copied, x.permute(2, 0, 1))
    assert copied.data_ptr() == scratch.take("copy", (4, 2, 3), x.dtype, CPU).data_ptr()
    assert torch.equal(permuted_copy(x, (1, 2, 0)), x.permute(1, 2, 0))
    fresh = scratch_empty(None, "fresh", (2, 2), b)
    assert fresh.shape == (2, 2) and fresh.dtype == b.dtype and len(scratch) == 2


def test_sphere_chunks_group_the_points_of_each_sphere_range():
    gen = torch.Generator().manual_seed(1)
    dst = torch.randint(0, 11, (60,), generator=gen)
    chunks = sphere_chunks(dst, 11, 4)
    assert [(c.first, c.size) for c in chunks] == [(0, 4), (4, 4), (8, 3)]
    for c in chunks:
        picked = c.select(dst)
        assert ((picked >= c.first) & (picked < c.first + c.size)).all()
        assert int(picked.numel()) == int(((dst >= c.first) & (dst < c.first + c.size)).sum())
        positions = c.select(torch.arange(60))
        assert bool((positions[1:] > positions[:-1]).all())  # the points keep their order
    ordered = torch.sort(dst, stable=True).values
    sliced = sphere_chunks(ordered, 11, 4, dst_sorted=True)
    assert all(isinstance(c.points, slice) for c in sliced)
    for c, s in zip(chunks, sliced):
        assert torch.equal(torch.sort(c.select(dst)).values, s.select(ordered))  # the same points
    with pytest.raises(ValueError, match="max_dst_per_chunk"):
        sphere_chunks(dst, 11, 0)


def test_kernel_cache_keeps_only_when_no_gradient_reaches_the_weight():
    weight = torch.nn.Parameter(torch.randn(3, 3))
    builds = []

    def build(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        builds.append(dtype)
        return (2 * weight).to(dtype)

    cache = KernelCache()
    recorded = cache.get(weight, torch.float32, CPU, build)
    assert recorded.requires_grad and cache.kernel is None  # autograd to the weight: never kept
    with torch.no_grad():
        kept = cache.get(weight, torch.float32, CPU, build)
        assert cache.get(weight, torch.float32, CPU, build) is kept and len(builds) == 2
    with frozen_weights():  # autograd on, but not wanted for the weight
        assert cache.get(weight, torch.float32, CPU, build) is kept
    assert cache.kernel is kept
    assert pickle.loads(pickle.dumps(cache)).kernel is None and copy.deepcopy(cache).kernel is None
    cache.clear()
    assert cache.kernel is None


def test_kept_kernels_lists_every_spin_convolution_kernel():
    model = make_model(dtype=torch.float64).eval()
    assert kept_kernels(model) == []
    with torch.no_grad():
        model(to_batch([rattled_molecule()]))
    caches = [m.kernel_cache for m in model.modules() if isinstance(getattr(m, "kernel_cache", None), KernelCache)]
    kept = kept_kernels(model)
    assert len(kept) == len(caches) > 0
    assert all(k is c.kernel for k, c in zip(kept, caches))
