#!/usr/bin/env python
"""Benchmark SpinConv: structures/s, ms per step and peak memory, one JSON line per case.

Modes (``--mode``, default all): ``forward`` (no grad), ``forces`` (energy + forces,
autograd on), ``train`` (energy + force L1 loss, backward, Adam step); see
``spinconv_train.benchmarks.cases``. The batch is the fixed benchmark batch (8 OC20-like
38-atom Pt(111)+CO/OH slabs; ``spinconv_train.benchmarks.structures``), the model the
OC20 S2EF configuration (``--config tiny`` for a seconds-long smoke run).

Comparisons, all timed side by side (interleaved rounds, same batch, same process):
  --compare reference --reference-root PATH   OCP v0.0.3 SpinConv from your checkout
  --compare schnet                            torch_geometric SchNet, 128 channels
  --compare impl                              our Fourier vs plain Conv1d spin convolution
  --scaling                                   forward time and memory, 100 -> 2000 atoms
Each timing line is followed by ratio lines (baseline time / our time; our memory /
baseline memory), a ``flops`` line (achieved FLOP/s of the spin convolutions vs the
measured dense fp32 matmul rate) and a final ``summary`` line; ``--census`` adds the ops
each model dispatches per step (``spinconv_train.benchmarks.census``).

Example: python scripts/benchmark_model.py --compare reference --reference-root ~/ocp
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

import torch

from spinconv_train.benchmarks.cases import AUTOCAST_DTYPES, MODES, OC20_CONFIG, TINY_CONFIG, AutocastModel, build_model, make_step, num_edges
from spinconv_train.benchmarks.census import op_census
from spinconv_train.benchmarks.flops import is_spin_conv, module_spin_flops
from spinconv_train.benchmarks.memory import make_batch, measure_peak_memory
from spinconv_train.benchmarks.structures import scaled_system, scaling_sizes
from spinconv_train.benchmarks.timing import (
    cuda_peak_during,
    dense_matmul_gflops,
    module_time_hooks,
    set_threads,
    time_interleaved,
)

REFERENCE_ENV = "SPINCONV_REFERENCE_ROOT"

# OpenMP threads that spin while waiting make a 2-thread run on a shared, oversubscribed
# machine 10x slower (measured here: a tiny forward 0.2 s with 1 thread, 3 s with 2
# spinning threads, 0.3 s with 2 passive ones). The variable must be set before the
# OpenMP runtime starts, so ``__main__`` re-executes the script once with it set.
OMP_POLICY_ENV = "OMP_WAIT_POLICY"
_REEXEC_MARK = "SPINCONV_BENCH_REEXEC"

# ``--malloc retain``: glibc keeps freed memory in the process instead of unmapping or
# trimming it, so large temporaries are not page-faulted in again on every use (what
# jemalloc/tcmalloc, as PyTorch's CPU tuning guide suggests, also give). Both models in the
# run get it; the reference, which allocates (edges x 8192) tensors, gains the most.
MALLOC_RETAIN_ENV = {"MALLOC_MMAP_THRESHOLD_": str(2**30), "MALLOC_TRIM_THRESHOLD_": str(2**32)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=MODES + ("all",), nargs="+", default=["all"])
    p.add_argument("--config", choices=("oc20", "tiny"), default="oc20")
    p.add_argument("--force-estimator", choices=("direct", "random", "grad"), default="direct",
                   help="direct (or the reference's name random): force-centric head; grad: energy-centric (-dE/dpos)")
    p.add_argument("--spin-conv-impl", choices=("fft", "conv"), default=None,
                   help="our spin convolution evaluation (default: the model's default)")
    p.add_argument("--compare", choices=("none", "reference", "schnet", "impl"), default="none")
    p.add_argument("--reference-root", default=os.environ.get(REFERENCE_ENV),
                   help=f"OCP v0.0.3 checkout (default: ${REFERENCE_ENV})")
    p.add_argument("--scaling", action="store_true", help="forward time/memory over 100..2000 atoms")
    p.add_argument("--scaling-sizes", type=int, nargs="+", default=None)
    p.add_argument("--batch-size", type=int, default=8, help="structures in the benchmark batch")
    p.add_argument("--molecule", default=None,
                   help="time copies of this ASE molecule (e.g. CH3CH2OH) instead of the slabs: small-system latency")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--autocast", choices=("none", *AUTOCAST_DTYPES), default="none",
                   help="also time our model under torch.autocast with this dtype (a variant spinconv_<dtype>)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    p.add_argument("--memory-warmup", type=int, default=1,
                   help="steps run in the memory subprocess before the measured one")
    p.add_argument("--no-flops", action="store_true", help="skip the spin-convolution FLOP/s line")
    p.add_argument("--census", action="store_true",
                   help="count the ops each model dispatches per step (launches; host-synchronising kinds)")
    p.add_argument("--profile", action="store_true",
                   help="per-module forward times and top torch ops of our model for each mode")
    p.add_argument("--omp-wait-policy", choices=("passive", "active", "inherit"), default="passive",
                   help="OpenMP wait policy of this run (default passive; see OMP_POLICY_ENV)")
    p.add_argument("--chunk-elements", default="auto",
                   help="our spin_conv_chunk_elements: 'auto' (default), 'none' or grid values per chunk")
    p.add_argument("--matmul-precision", choices=("highest", "high", "medium"), default="highest",
                   help="torch.set_float32_matmul_precision for the whole run ('high' lets float32 matrix "
                        "products use TF32 on NVIDIA GPUs, as cuDNN convolutions do by default)")
    p.add_argument("--malloc", choices=("default", "retain"), default="default",
                   help="glibc malloc of this run: its defaults, or retain freed memory (MALLOC_RETAIN_ENV)")
    p.add_argument("--output", default=None, help="also write all JSON lines to this file (atomic)")
    args = p.parse_args(argv)
    if args.compare == "reference" and not args.reference_root:
        p.error(f"--compare reference needs --reference-root PATH or ${REFERENCE_ENV}")
    if args.chunk_elements not in ("auto", "none") and not (args.chunk_elements.isdigit()
                                                           and int(args.chunk_elements) > 0):
        p.error(f"--chunk-elements must be 'auto', 'none' or a positive integer, got {args.chunk_elements!r}")
    if args.repeats < 1 or args.batch_size < 1:
        p.error("--repeats and --batch-size must be >= 1")
    return args


class Emitter:
    """Prints JSON lines and keeps them for ``--output``."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def __call__(self, record: dict[str, Any]) -> None:
        self.lines.append(record)
        print(json.dumps(record), flush=True)

    def write(self, path: str) -> None:
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as handle:
            for record in self.lines:
                handle.write(json.dumps(record) + "\n")
        os.replace(tmp, path)


def machine_info(device: torch.device, threads: int) -> dict[str, Any]:
    info = {
        "device": str(device),
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    info["omp_wait_policy"] = os.environ.get(OMP_POLICY_ENV, "unset")
    info["malloc"] = "retain" if all(os.environ.get(k) == v for k, v in MALLOC_RETAIN_ENV.items()) else "default"
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        with open("/proc/loadavg") as handle:
            info["loadavg_1min"] = float(handle.read().split()[0])
    except OSError:
        pass
    return info


def model_config(args: argparse.Namespace) -> dict[str, Any]:
    base = TINY_CONFIG if args.config == "tiny" else OC20_CONFIG
    estimator = "direct" if args.force_estimator == "random" else args.force_estimator
    return dict(base, force_estimator=estimator)


def our_config(args: argparse.Namespace) -> dict[str, Any]:
    """Our model's kwargs: the shared configuration plus our own options (chunk size)."""
    config = model_config(args)
    if args.chunk_elements != "auto":
        config["spin_conv_chunk_elements"] = None if args.chunk_elements == "none" else int(args.chunk_elements)
    return config


def model_variants(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """name -> build kwargs of the models timed side by side; the first one is ours."""
    config = model_config(args)
    ours = {"kind": "spinconv", "config": our_config(args), "impl": args.spin_conv_impl}
    if args.compare == "impl":
        return {
            "spinconv_fft": dict(ours, impl="fft"),
            "spinconv_conv": dict(ours, impl="conv"),
        }
    variants = {"spinconv": ours}
    if args.autocast != "none":
        variants[f"spinconv_{args.autocast}"] = dict(ours, autocast=args.autocast)
    if args.compare == "reference":
        ref_config = dict(config)
        if ref_config["force_estimator"] == "direct":
            ref_config["force_estimator"] = "random"
        variants["reference"] = {"kind": "reference", "config": ref_config, "root": args.reference_root}
    elif args.compare == "schnet":
        variants["schnet"] = {"kind": "schnet", "config": config}
    return variants


def build(variant: dict[str, Any], device: torch.device) -> torch.nn.Module:
    model = build_model(variant["kind"], variant["config"], variant.get("root"), variant.get("impl"))
    if variant.get("autocast"):
        model = AutocastModel(model, AUTOCAST_DTYPES[variant["autocast"]])
    return model.to(device)


def memory_for(variant: dict[str, Any], mode: str, batch_spec: dict[str, Any], args: argparse.Namespace,
               device: torch.device, model: torch.nn.Module, batch) -> dict[str, Any]:
    """Peak memory of one step: fresh subprocess on CPU, max_memory_allocated on CUDA."""
    if device.type == "cuda":
        step = make_step(model, batch, mode)
        step()
        return cuda_peak_during(step, device)
    if variant.get("autocast"):
        return {"skipped": "CPU memory of autocast variants is not measured"}
    spec = {
        "kind": variant["kind"], "config": variant["config"], "impl": variant.get("impl"),
        "reference_root": variant.get("root"), "mode": mode, "batch": batch_spec,
        "threads": args.threads, "warmup": args.memory_warmup,
    }
    return measure_peak_memory(spec)


def spin_conv_flops(model: torch.nn.Module, batch, device: torch.device, matmul_gflops: float) -> dict[str, Any]:
    """Time the spin convolutions of one no-grad forward with hooks; FLOPs analytically."""
    model.eval()
    records, remove = module_time_hooks(model, is_spin_conv)
    try:
        with torch.no_grad():
            model(batch.clone())
    finally:
        remove()
    seconds, actual, direct, items = 0.0, 0, 0, 0
    for module, count, dt, shape in records:
        a, d = module_spin_flops(module, shape)
        actual, direct, seconds, items = actual + a, direct + d, seconds + dt, items + count
    achieved = actual / seconds / 1e9 if seconds > 0 else None
    effective = direct / seconds / 1e9 if seconds > 0 else None
    return {
        "spin_conv_calls": len(records),
        "spin_conv_items": items,
        "spin_conv_gflop": actual / 1e9,
        "direct_conv_equivalent_gflop": direct / 1e9,
        "spin_conv_s": seconds,
        "achieved_gflops": achieved,
        "effective_gflops_direct_equivalent": effective,
        "matmul_gflops": matmul_gflops,
        "fraction_of_matmul": None if achieved is None else achieved / matmul_gflops,
    }


def output_agreement(models: dict[str, torch.nn.Module], batch) -> dict[str, Any]:
    """Largest absolute differences of energy and forces between the first two models."""
    (name_a, model_a), (name_b, model_b) = list(models.items())[:2]
    outs = []
    for model in (model_a, model_b):
        model.eval()
        with torch.no_grad():
            outs.append(model(batch.clone()))
    record: dict[str, Any] = {"models": [name_a, name_b]}
    for key in ("energy", "forces"):
        if key in outs[0] and key in outs[1]:
            diff = (outs[0][key].double() - outs[1][key].double()).abs().max().item()
            scale = outs[0][key].double().abs().max().item()
            record[f"max_abs_diff_{key}"] = diff
            record[f"max_abs_{key}"] = scale
    return record


def round_floats(record: dict[str, Any]) -> dict[str, Any]:
    return {k: (float(f"{v:.6g}") if isinstance(v, float) else v) for k, v in record.items()}


def batch_spec_of(args: argparse.Namespace) -> dict[str, Any]:
    """The timed batch: ``--batch-size`` benchmark slabs, or copies of ``--molecule``."""
    if args.molecule:
        return {"type": "molecule", "name": args.molecule, "num_structures": args.batch_size}
    return {"type": "benchmark", "num_structures": args.batch_size}


def run_comparison(args: argparse.Namespace, device: torch.device, emit: Emitter, info: dict[str, Any]) -> dict[str, Any]:
    """Time every variant on every mode side by side; memory and FLOP/s lines; ratios."""
    batch_spec = batch_spec_of(args)
    batch = make_batch({"batch": batch_spec}).to(device)
    variants = model_variants(args)
    models = {name: build(v, device) for name, v in variants.items()}
    edges = num_edges(batch.clone().cpu(), model_config(args))
    modes = MODES if "all" in args.mode else tuple(m for m in MODES if m in args.mode)
    names = list(variants)
    summary: dict[str, Any] = {"case": "summary", **info, "config": args.config, "batch": batch_spec,
                               "force_estimator": args.force_estimator, "num_structures": args.batch_size,
                               "num_atoms": int(batch.pos.shape[0]), "num_edges": edges, "ratios": {}}
    for mode in modes:
        steps = {name: make_step(models[name], batch, mode) for name in names}
        timings = time_interleaved(steps, args.repeats, args.warmup, device)
        memories: dict[str, dict[str, Any]] = {}
        for name in names:
            if not args.no_memory:
                memories[name] = memory_for(variants[name], mode, batch_spec, args, device, models[name], batch)
            t = timings[name]
            record = {
                "case": "timing", "model": name, "mode": mode, **info, "config": args.config,
                "batch": args.molecule or "slabs",
                "force_estimator": variants[name]["config"]["force_estimator"],
                "impl": variants[name].get("impl"),
                "params": sum(p.numel() for p in models[name].parameters()),
                "num_structures": args.batch_size, "num_atoms": int(batch.pos.shape[0]), "num_edges": edges,
                "structures_per_s": args.batch_size / t.median, "ms_per_step": 1000.0 * t.median,
                **t.as_dict(), "times_s": [round(x, 4) for x in t.times],
            }
            if name in memories:
                record["peak_memory_mib"] = memories[name].get("peak_increase_mib")
                record["memory"] = memories[name]
            emit(round_floats(record))
        pairs = [(names[0], other) for other in names[1:]]
        pairs += [(name, other) for name in names[1:] if variants[name].get("autocast")
                  for other in names if variants[other]["kind"] != "spinconv"]
        for ours, other in pairs:
            ratio = {
                "case": "ratio", "mode": mode, "ours": ours, "baseline": other, **info,
                "speedup": timings[other].median / timings[ours].median,
                "speedup_min_times": timings[other].minimum / timings[ours].minimum,
            }
            mo, mb = memories.get(ours, {}), memories.get(other, {})
            if mo.get("peak_increase_mib") and mb.get("peak_increase_mib"):
                ratio["memory_ratio"] = mo["peak_increase_mib"] / mb["peak_increase_mib"]
            emit(round_floats(ratio))
            summary["ratios"][f"{mode}:{ours}/{other}"] = round_floats(
                {k: ratio[k] for k in ("speedup", "memory_ratio") if k in ratio}
            )
        summary[f"{mode}_ms"] = {name: round(1000.0 * timings[name].median, 2) for name in names}
        if args.census:
            for name in names:
                emit({"case": "census", "model": name, "mode": mode, **info, **op_census(steps[name])})
    if args.compare == "impl":
        emit(round_floats({"case": "agreement", **info, **output_agreement(models, batch)}))
    if not args.no_flops:
        matmul = dense_matmul_gflops(1024 if device.type == "cpu" else 4096, repeats=5, device=device)
        summary["matmul_gflops"] = round(matmul, 2)
        for name in names:
            record = {"case": "flops", "model": name, **info, **spin_conv_flops(models[name], batch, device, matmul)}
            emit(round_floats(record))
    return summary


def run_scaling(args: argparse.Namespace, device: torch.device, emit: Emitter, info: dict[str, Any]) -> dict[str, Any]:
    """Forward (no grad) time and peak memory of our model over growing periodic slabs."""
    variant = {"kind": "spinconv", "config": our_config(args), "impl": args.spin_conv_impl}
    model = build(variant, device)
    sizes = args.scaling_sizes or scaling_sizes()
    atoms, times = [], []
    for n in sizes:
        batch = scaled_system(n).to(device)
        step = make_step(model, batch, "forward")
        t = time_interleaved({"f": step}, max(1, min(args.repeats, 3)), args.warmup, device)["f"]
        record = {"case": "scaling", "model": "spinconv", "mode": "forward", **info, "num_atoms": n,
                  "num_edges": num_edges(batch.clone().cpu(), variant["config"]), "ms_per_step": 1000.0 * t.median, **t.as_dict()}
        if not args.no_memory:
            mem = memory_for(variant, "forward", {"type": "scaled", "num_atoms": n}, args, device, model, batch)
            record["peak_memory_mib"] = mem.get("peak_increase_mib")
            record["memory"] = mem
        emit(round_floats(record))
        atoms.append(float(n))
        times.append(t.median)
    fit = linear_fit(atoms, times)
    emit(round_floats({"case": "scaling_fit", **info, **fit}))
    return {"scaling": fit}


def run_profile(args: argparse.Namespace, device: torch.device, emit: Emitter, info: dict[str, Any]) -> None:
    """One JSON line per mode: module breakdown (forward hooks) and top ops (torch.profiler)."""
    from spinconv_train.benchmarks.profiling import module_breakdown, op_table

    variant = {"kind": "spinconv", "config": our_config(args), "impl": args.spin_conv_impl}
    model = build(variant, device)
    batch = make_batch({"batch": batch_spec_of(args)}).to(device)
    modes = MODES if "all" in args.mode else tuple(m for m in MODES if m in args.mode)
    for mode in modes:
        step = make_step(model, batch, mode)
        for _ in range(max(args.warmup, 1)):
            step()
        modules = module_breakdown(model, step, depth=3)
        ops = op_table(step)
        emit({"case": "profile", "mode": mode, **info, "impl": args.spin_conv_impl,
              "force_estimator": args.force_estimator,
              "modules_s": {k: round(v, 4) for k, v in modules.items()},
              "top_ops": [round_floats(o) for o in ops]})


def linear_fit(x: list[float], y: list[float]) -> dict[str, Any]:
    """Least-squares y = a + b x and the log-log slope (1.0 means linear scaling)."""
    import math

    n = len(x)
    if n < 2:
        return {"points": n}
    mx, my = sum(x) / n, sum(y) / n
    sxx = sum((xi - mx) ** 2 for xi in x)
    b = sum((xi - mx) * (yi - my) for xi, yi in zip(x, y)) / sxx
    a = my - b * mx
    ss_res = sum((yi - a - b * xi) ** 2 for xi, yi in zip(x, y))
    ss_tot = sum((yi - my) ** 2 for yi in y) or 1e-30
    lx, ly = [math.log(v) for v in x], [math.log(v) for v in y]
    mlx, mly = sum(lx) / n, sum(ly) / n
    slope = sum((u - mlx) * (v - mly) for u, v in zip(lx, ly)) / sum((u - mlx) ** 2 for u in lx)
    return {"points": n, "intercept_s": a, "s_per_atom": b, "r2_linear": 1.0 - ss_res / ss_tot,
            "loglog_slope": slope}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)
    torch.set_float32_matmul_precision(args.matmul_precision)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            print("error: --device cuda requested but CUDA is not available", file=sys.stderr)
            return 2
    emit = Emitter()
    info = machine_info(device, args.threads)
    info["matmul_precision"] = args.matmul_precision
    info["chunk_elements"] = args.chunk_elements
    start = time.perf_counter()
    if args.profile:
        run_profile(args, device, emit, info)
        return 0
    summary = run_comparison(args, device, emit, info) if not args.scaling else {"case": "summary", **info}
    if args.scaling:
        summary.update(run_scaling(args, device, emit, info))
    summary["wall_s"] = round(time.perf_counter() - start, 1)
    emit(summary)
    if args.output:
        emit.write(args.output)
    return 0


def _reexec_with_environment(argv: list[str]) -> None:
    """Restart this script once with the OpenMP wait policy (``--omp-wait-policy``) and
    malloc settings (``--malloc``) in its environment: both are read at process start."""
    if os.environ.get(_REEXEC_MARK):
        return
    args = parse_args(argv)
    wanted: dict[str, str] = {}
    if args.omp_wait_policy != "inherit":
        wanted[OMP_POLICY_ENV] = args.omp_wait_policy.upper()
    if args.malloc == "retain":
        wanted.update(MALLOC_RETAIN_ENV)
    dropped = MALLOC_RETAIN_ENV if args.malloc == "default" else {}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(wanted)
    if env == dict(os.environ):
        return
    env[_REEXEC_MARK] = "1"
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *argv], env)


if __name__ == "__main__":
    _reexec_with_environment(sys.argv[1:])
    sys.exit(main())
