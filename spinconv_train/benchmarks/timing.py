"""Timing and memory measurement helpers for the benchmarks.

* ``time_interleaved``: median-of-N wall times after warm-up, several callables run in
  alternation (A, B, A, B, ...) so that a noisy, shared machine slows them alike.
* ``peak_rss_during``: peak resident memory of this process during a call, above the
  memory held just before it (Linux ``/proc/self/clear_refs`` resets the high-water mark);
  run it in a fresh subprocess per case (see ``scripts/benchmark_model.py``), with
  ``MALLOC_MMAP_THRESHOLD_`` set so that freed large tensors go back to the system.
* ``cuda_peak_during``: ``torch.cuda.max_memory_allocated`` above the memory allocated before.
* ``dense_matmul_gflops``: the achieved fp32 dense matmul rate, the practical FLOP limit.
"""
from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")

# Environment for memory-measuring subprocesses: allocations above 128 KiB are served
# by mmap and returned to the OS when freed, so RSS follows live tensors.
MEMORY_SUBPROCESS_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


@dataclass
class Timing:
    """Wall times (s) of repeated calls after warm-up."""

    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def minimum(self) -> float:
        return min(self.times)

    @property
    def spread(self) -> float:
        """(max - min) / median: a noise indicator."""
        return (max(self.times) - min(self.times)) / self.median if self.median > 0 else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "median_s": self.median,
            "min_s": self.minimum,
            "spread": self.spread,
            "repeats": len(self.times),
        }


def set_threads(num_threads: int) -> None:
    """Fix the number of intra-op CPU threads (and inter-op to 1 where still allowed)."""
    if num_threads < 1:
        raise ValueError(f"threads must be >= 1, got {num_threads}")
    torch.set_num_threads(num_threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set or parallel work has started: keep the default
        pass


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    device: torch.device = torch.device("cpu"),
) -> dict[str, Timing]:
    """Median-of-``repeats`` timing of each callable, run in alternation after ``warmup``.

    Each round runs every callable once (order fixed), so slow phases of a shared machine
    fall on all of them; results are per name.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
            synchronize(device)
    out = {name: Timing() for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            out[name].times.append(time.perf_counter() - start)
    return out


def time_call(fn: Callable[[], object], repeats: int, warmup: int = 1,
              device: torch.device = torch.device("cpu")) -> Timing:
    """Median-of-``repeats`` timing of one callable after ``warmup`` calls."""
    return time_interleaved({"fn": fn}, repeats, warmup, device)["fn"]


def _status_kib(key: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(f"{key} not found in {_STATUS}")


def reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (VmHWM); False where not permitted."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_rss_during(fn: Callable[[], object]) -> dict[str, float]:
    """Run ``fn`` once; return the RSS before it and the peak RSS during it (MiB).

    ``peak_increase_mib`` = peak - before is the honest memory cost of the call when the
    process is fresh or the peak mark could be reset (``hwm_reset``); without a reset
    the peak may include earlier allocations, so it is reported as an upper bound.
    """
    gc.collect()
    before = _status_kib("VmRSS")
    hwm_reset = reset_peak_rss()
    hwm_before = _status_kib("VmHWM")
    fn()
    peak = _status_kib("VmHWM")
    return {
        "rss_before_mib": before / 1024.0,
        "peak_rss_mib": peak / 1024.0,
        "peak_increase_mib": max(peak - before, 0) / 1024.0,
        "hwm_reset": hwm_reset and hwm_before <= before + 1024,
    }


def cuda_peak_during(fn: Callable[[], object], device: torch.device) -> dict[str, float]:
    """Run ``fn`` once on CUDA; peak allocated memory above the memory allocated before (MiB)."""
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    return {
        "allocated_before_mib": before / 2**20,
        "peak_allocated_mib": peak / 2**20,
        "peak_increase_mib": max(peak - before, 0) / 2**20,
    }


def dense_matmul_gflops(
    size: int = 1024, repeats: int = 5, device: torch.device = torch.device("cpu"),
    dtype: torch.dtype = torch.float32,
) -> float:
    """Achieved GFLOP/s of a square dense matmul (median of ``repeats``), 2 n^3 FLOPs each."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    inner = max(1, int(2e9 // (2 * size**3)))  # ~2 GFLOP per timed call
    if device.type == "cuda":
        inner *= 50

    def run() -> None:
        for _ in range(inner):
            torch.mm(a, b)

    timing = time_call(run, repeats=repeats, warmup=1, device=device)
    return 2.0 * size**3 * inner / timing.median / 1e9


def module_time_hooks(
    model: torch.nn.Module,
    predicate: Callable[[torch.nn.Module], bool],
    extra_methods: tuple = ("forward_flat",),
):
    """Time every call of the submodules for which ``predicate`` holds.

    Calls through ``module(...)`` are timed with forward hooks; methods named in
    ``extra_methods`` (entry points that bypass ``__call__``, e.g. our spin convolution's
    ``forward_flat(flat, num)``) are wrapped for the duration. Returns (records, remove):
    ``records`` gets one (module, items, seconds, shape) per call, where items is the
    first dimension of the first argument (or ``num`` for ``forward_flat``); call
    ``remove()`` to detach. Nested matches are timed only at the outermost level.
    """
    records: list[tuple] = []
    starts: dict[int, list[float]] = {}
    handles = []
    wrapped: list[tuple] = []
    matched = [m for m in model.modules() if m is not model and predicate(m)]
    inner = {id(c) for m in matched for c in m.modules() if c is not m}
    for module in matched:
        if id(module) in inner:
            continue

        def pre(mod, args):
            starts.setdefault(id(mod), []).append(time.perf_counter())

        def post(mod, args, output):
            first = args[0] if args else None
            shape = tuple(first.shape) if hasattr(first, "shape") else (0,)
            records.append((mod, int(shape[0]), time.perf_counter() - starts[id(mod)].pop(), shape))

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
        for method in extra_methods:
            if callable(getattr(module, method, None)):
                original = getattr(module, method)

                def timed(*args, _mod=module, _orig=original, **kwargs):
                    start = time.perf_counter()
                    out = _orig(*args, **kwargs)
                    num = int(args[1]) if len(args) > 1 else int(kwargs.get("num", 0))
                    records.append((_mod, num, time.perf_counter() - start, (num,)))
                    return out

                object.__setattr__(module, method, timed)
                wrapped.append((module, method))

    def remove() -> None:
        for handle in handles:
            handle.remove()
        for module, method in wrapped:
            if method in module.__dict__:
                del module.__dict__[method]

    return records, remove

