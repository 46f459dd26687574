"""Bit-for-bit repeatable training on CPU: no gradient is accumulated with index_put_.

Advanced-indexing gathers (``x[index]``) get ``index_put_(accumulate=True)`` in backward,
which on CPU adds from several threads in an order that depends on scheduling (two
2-thread training runs of the OC20-mini demo diverged at step 8); ``index_select``'s
backward, ``index_add_``, adds in index order. This test fails if a differentiable gather
by advanced indexing comes back anywhere in the model (first or second derivative).
"""
from __future__ import annotations

import pytest
import torch
from spinconv_testkit import make_model, slab_with_adsorbate, to_batch
from torch.utils._python_dispatch import TorchDispatchMode


class _AccumulatingIndexPut(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func)
        if "index_put" in name and (kwargs.get("accumulate") or (len(args) > 3 and args[3] is True)):
            self.calls += 1
        return func(*args, **kwargs)


@pytest.mark.parametrize("overrides", [
    {"force_estimator": "grad"}, {"force_estimator": "direct"},
    {"force_estimator": "direct", "direct_force_head": "edge"},
    {"force_estimator": "direct", "spin_conv_chunk_elements": 2000},  # chunked force-head plan (gathers)
])
def test_training_step_accumulates_no_gradient_with_index_put(overrides):
    model = make_model(torch.float64, envelope=True, **overrides).train()
    batch = to_batch([slab_with_adsorbate(seed=1), slab_with_adsorbate(seed=2)])
    probe = _AccumulatingIndexPut()
    with probe:
        out = model(batch)
        (out["energy"].sum() + out["forces"].square().sum()).backward()
    assert probe.calls == 0


def test_the_probe_sees_advanced_indexing_backward():
    x = torch.randn(5, 3, requires_grad=True)
    probe = _AccumulatingIndexPut()
    with probe:
        x[torch.tensor([0, 2, 2])].sum().backward()
    assert probe.calls == 1
