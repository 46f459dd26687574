"""Peak memory of one benchmark step, measured in a fresh subprocess per case (CPU).

``measure_peak_memory(spec)`` starts ``python -m spinconv_train.benchmarks.memory SPEC``,
which builds the model and batch, runs ``warmup`` steps, resets the RSS high-water mark
and reports the peak RSS increase of one more step (see ``timing.peak_rss_during``).
A spec is a JSON-able dict: kind, mode, config (dict), impl, reference_root, batch
("benchmark" with num_structures, or "scaled" with num_atoms), threads, warmup.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from torch_geometric.data import Batch


def make_batch(spec: dict[str, Any]) -> Batch:
    """The batch a spec names: the benchmark batch, a scaled single slab or molecules."""
    from spinconv_train.benchmarks.structures import benchmark_batch, molecule_batch, scaled_system

    batch = spec.get("batch", {"type": "benchmark", "num_structures": 8})
    if batch["type"] == "benchmark":
        return benchmark_batch(int(batch.get("num_structures", 8)))
    if batch["type"] == "scaled":
        return scaled_system(int(batch["num_atoms"]))
    if batch["type"] == "molecule":
        return molecule_batch(batch["name"], int(batch.get("num_structures", 1)))
    raise ValueError(f"unknown batch type {batch['type']!r} in spec (use 'benchmark', 'scaled' or 'molecule')")


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Inside the subprocess: build, warm up, then measure one step's peak RSS."""
    from spinconv_train.benchmarks.cases import build_model, make_step
    from spinconv_train.benchmarks.timing import peak_rss_during, set_threads

    set_threads(int(spec.get("threads", 2)))
    batch = make_batch(spec)
    model = build_model(spec["kind"], spec["config"], spec.get("reference_root"), spec.get("impl"))
    step = make_step(model, batch, spec["mode"])
    for _ in range(int(spec.get("warmup", 1))):
        step()
    result = peak_rss_during(step)
    result.update({"kind": spec["kind"], "mode": spec["mode"]})
    return result


def measure_peak_memory(spec: dict[str, Any], timeout: float = 3600.0) -> dict[str, Any]:
    """Run ``run_worker(spec)`` in a fresh Python process; returns its JSON result.

    On failure returns ``{"error": ...}`` with the tail of the worker's stderr.
    """
    from spinconv_train.benchmarks.timing import MEMORY_SUBPROCESS_ENV

    env = dict(os.environ)
    env.update(MEMORY_SUBPROCESS_ENV)
    threads = str(int(spec.get("threads", 2)))
    env.setdefault("OMP_NUM_THREADS", threads)
    cmd = [sys.executable, "-m", "spinconv_train.benchmarks.memory", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"memory worker timed out after {timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"memory worker failed (rc {proc.returncode}): {proc.stderr[-800:]}"}
    return json.loads(lines[-1])


def _main(argv: list) -> int:
    if len(argv) != 1:
        print("usage: python -m spinconv_train.benchmarks.memory SPEC_JSON", file=sys.stderr)
        return 2
    print(json.dumps(run_worker(json.loads(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
