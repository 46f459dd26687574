"""Timing and memory helpers."""
import time

import pytest
import torch
from torch import nn

from spinconv_train.benchmarks.timing import (
    Timing,
    dense_matmul_gflops,
    module_time_hooks,
    peak_rss_during,
    time_call,
    time_interleaved,
)


def test_interleaved_order_and_counts():
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    out = time_interleaved(fns, repeats=3, warmup=2)
    assert calls == ["a", "b"] * 5
    assert [len(out[k].times) for k in "ab"] == [3, 3]


def test_timing_statistics_and_sleep():
    t = Timing([0.3, 0.1, 0.2, 10.0])
    assert t.median == pytest.approx(0.25) and t.minimum == 0.1
    assert t.as_dict()["repeats"] == 4
    slept = time_call(lambda: time.sleep(0.02), repeats=3, warmup=0)
    assert 0.015 < slept.median < 1.0
    with pytest.raises(ValueError):
        time_interleaved({"a": lambda: None}, repeats=0)


def test_peak_rss_sees_a_large_temporary():
    def allocate():
        x = torch.ones(50_000_000)  # 191 MiB, touched
        return float(x.sum())

    big = peak_rss_during(allocate)
    small = peak_rss_during(lambda: None)
    assert big["peak_increase_mib"] > 150
    assert small["peak_increase_mib"] < 50
    if big["hwm_reset"]:  # peak mark reset: the increase is the temporary, not more
        assert big["peak_increase_mib"] < 400


def test_dense_matmul_rate_positive():
    rate = dense_matmul_gflops(size=128, repeats=2)
    assert rate > 0.05


def test_module_time_hooks_outermost_only():
    inner = nn.Conv1d(4, 4, 3)
    model = nn.Sequential(nn.Sequential(inner), nn.Conv1d(4, 2, 1))
    records, remove = module_time_hooks(model, lambda m: isinstance(m, (nn.Conv1d, nn.Sequential)))
    model(torch.randn(5, 4, 8))
    remove()
    assert [type(r[0]).__name__ for r in records] == ["Sequential", "Conv1d"]
    assert [r[1] for r in records] == [5, 5] and all(r[2] >= 0 for r in records)
    model(torch.randn(5, 4, 8))
    assert len(records) == 2  # hooks removed


def test_module_time_hooks_wrap_extra_entry_points():
    class Flat(nn.Module):
        def forward(self, x):
            return x * 2

        def forward_flat(self, flat, num):
            return flat.view(num, -1).sum(1)

    model = nn.Sequential(Flat())
    records, remove = module_time_hooks(model, lambda m: isinstance(m, Flat))
    model[0].forward_flat(torch.ones(12), 3)
    model(torch.ones(4, 2))
    remove()
    assert [(r[1], r[3]) for r in records] == [(3, (3,)), (4, (4, 2))]
    assert "forward_flat" not in model[0].__dict__  # restored to the class method
    assert model[0].forward_flat(torch.ones(4), 2).tolist() == [2.0, 2.0]
