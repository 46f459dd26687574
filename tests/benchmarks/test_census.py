"""The op census counts what a step dispatches and flags the host-synchronising kinds."""
from __future__ import annotations

import torch

from spinconv_train.benchmarks.census import op_census


def test_counts_ops_views_and_sync_prone_kinds():
    x = torch.arange(12.0)

    def step():
        y = x.view(3, 4).t()  # two views
        z = (y * 2.0).sum()  # two kernels
        counts = torch.bincount(torch.tensor([0, 2, 2]))  # sync-prone on CUDA
        nz = (x > 5).nonzero()  # sync-prone
        rep = torch.repeat_interleave(torch.arange(3), torch.tensor([1, 2, 3]))  # sync-prone
        given = torch.repeat_interleave(torch.arange(3), torch.tensor([1, 2, 3]), output_size=6)  # not
        return z.item(), counts, nz, rep, given  # .item(): sync-prone

    census = op_census(step)
    assert census["sync_prone"] == 4  # bincount, nonzero, repeat_interleave without output_size, item
    assert census["sync_prone_on_device"] == 0  # everything here is on the CPU
    assert census["ops"] - census["non_view_ops"] >= 2
    assert census["top_ops"]


def test_model_forward_census_is_plausible():
    from spinconv_train.benchmarks.cases import TINY_CONFIG, build_model, make_step
    from spinconv_train.benchmarks.structures import benchmark_batch

    model = build_model("spinconv", TINY_CONFIG)
    step = make_step(model, benchmark_batch(1), "forward")
    step()
    first = op_census(step)
    assert first == op_census(step)  # the same work every call
    assert 100 < first["non_view_ops"] < first["ops"]
