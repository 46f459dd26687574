#!/usr/bin/env python
"""Time ML relaxations with batched model calls against one structure at a time.

    python scripts/benchmark_relax.py --checkpoint runs/<run>/best_checkpoint.pt \\
        --data data/oc20_mini/is2re/val_id --batch-sizes 1 4 8 --repeats 3

Every round relaxes all structures of ``--data`` once per batch size (the batch sizes
alternate within a round, so a noisy machine affects them alike); the medians over
``--repeats`` rounds, structures per second, model calls and the speed-up against the
first batch size are printed as one JSON line per batch size, then a ``summary`` line with
the largest difference of relaxed positions between batch sizes (each structure keeps its
own optimiser, so batching changes only the rounding of the model's outputs).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint.pt of a `trainer: forces` run")
    p.add_argument("--data", required=True, help="LMDB file or folder of structures to relax")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="first one is the baseline")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--optimizer", default="lbfgs", choices=("lbfgs", "bfgs", "fire"))
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--fmax", type=float, default=0.05)
    p.add_argument("--limit", type=int, default=None, help="relax only the first N structures")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    if any(b < 1 for b in args.batch_sizes) or args.repeats < 1:
        p.error("--batch-sizes and --repeats must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch

    from spinconv_train.benchmarks.timing import time_interleaved
    from spinconv_train.calculators.calculator import load_force_model
    from spinconv_train.datasets import LmdbDataset
    from spinconv_train.relaxation.mode import relax_calculator
    from spinconv_train.relaxation.runner import relax_indices
    from spinconv_train.relaxation.settings import RelaxOptions

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model, task = load_force_model(args.checkpoint, device)
    dataset = LmdbDataset({"src": args.data})
    indices = list(range(len(dataset) if args.limit is None else min(args.limit, len(dataset))))
    calls: dict[int, int] = {}
    positions: dict[int, list[np.ndarray]] = {}
    steps: dict[int, int] = {}

    def relaxation(size: int) -> Callable[[], None]:
        options = RelaxOptions.from_mapping({"name": args.optimizer, "steps": args.steps, "fmax": args.fmax,
                                             "batch_size": size})

        def run() -> None:
            calculator = relax_calculator(model, task, device, size)
            results = relax_indices(dataset, indices, calculator, options)
            calls[size] = len(calculator.batch_sizes) if hasattr(calculator, "batch_sizes") \
                else calculator.evaluations
            positions[size] = [r.positions for r in results]
            steps[size] = sum(r.steps for r in results)
        return run

    # rounds alternate the batch sizes, so a noisy machine slows them alike
    timings = time_interleaved({size: relaxation(size) for size in args.batch_sizes}, args.repeats, warmup=0,
                               device=device)
    base = timings[args.batch_sizes[0]].median
    for size in args.batch_sizes:
        median = timings[size].median
        print(json.dumps({"batch_size": size, "structures": len(indices), "median_s": round(median, 4),
                          "structures_per_s": round(len(indices) / median, 4), "model_calls": calls[size],
                          "optimizer_steps": steps[size], "speedup": round(base / median, 3),
                          "runs_s": [round(t, 4) for t in timings[size].times]}))
    ref = positions[args.batch_sizes[0]]
    diff = max(float(np.abs(a - b).max()) for size in args.batch_sizes for a, b in zip(ref, positions[size]))
    print(json.dumps({"summary": True, "device": str(device), "threads": torch.get_num_threads(),
                      "torch": torch.__version__, "max_position_difference_A": diff,
                      "optimizer": args.optimizer}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
