"""Where a benchmark step spends its time: per-module wall time and the top torch ops.

``module_breakdown`` times the forward of every submodule down to ``depth`` levels of
the module tree with hooks (inclusive wall time, forward only; backward time shows up in
``op_table`` under the autograd ops). ``op_table`` runs ``torch.profiler`` on CPU.
"""
from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

from torch import nn


def module_breakdown(model: nn.Module, step: Callable[[], object], depth: int = 2) -> dict[str, float]:
    """Inclusive forward seconds of each named submodule (``depth`` levels) during one ``step``.

    Also returns ``"<step total>"``. Modules called several times are summed.
    """
    totals: dict[str, float] = defaultdict(float)
    starts: dict[int, list[float]] = defaultdict(list)
    handles = []
    for name, module in model.named_modules():
        if not name or name.count(".") >= depth:
            continue

        def pre(mod, args, _id=id(module)):
            starts[_id].append(time.perf_counter())

        def post(mod, args, out, _id=id(module), _name=name):
            totals[_name] += time.perf_counter() - starts[_id].pop()

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    try:
        start = time.perf_counter()
        step()
        totals["<step total>"] = time.perf_counter() - start
    finally:
        for handle in handles:
            handle.remove()
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def op_table(step: Callable[[], object], row_limit: int = 20) -> list[dict[str, object]]:
    """Top ``row_limit`` torch ops of one ``step`` by self CPU time (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [
        {
            "op": e.key,
            "self_s": e.self_cpu_time_total / 1e6,
            "self_fraction": e.self_cpu_time_total / total,
            "calls": e.count,
        }
        for e in events[:row_limit]
    ]
