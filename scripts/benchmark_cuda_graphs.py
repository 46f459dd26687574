#!/usr/bin/env python
"""Inference with and without CUDA graphs (``GraphedSpinConv``), side by side on one GPU.

    python scripts/benchmark_cuda_graphs.py --repeats 30

Times the call an ASE calculator makes (energy and forces under ``torch.no_grad``, the
neighbour search included) for each case: the MD17 configuration on one ethanol molecule
(energy-centric, what MD runs), the OC20 configuration on one ethanol molecule and on the
8-slab benchmark batch (force-centric, and energy-centric). Alternating rounds, median; prints one JSON line
per case with both times, the speed-up and the largest output difference.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = ("md17_ethanol", "oc20_ethanol", "oc20_slabs", "oc20_slabs_grad")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--predict-frames", type=int, default=512,
                   help="also time predict_atoms (what spinconv-evaluate runs) on this many rattled ethanol "
                        "frames in batches of 16, MD17 configuration (0: skip)")
    return p.parse_args(argv)


def _case(name: str):
    import yaml

    from spinconv_train.benchmarks.cases import OC20_CONFIG
    from spinconv_train.benchmarks.structures import benchmark_batch, molecule_batch

    if name == "md17_ethanol":
        with open(os.path.join(ROOT, "configs", "md17", "base.yml")) as handle:
            config = yaml.safe_load(handle)["model"]
        config.pop("name")
        return config, molecule_batch("CH3CH2OH")  # use_pbc: false, an isolated molecule as in MD17
    if name == "oc20_ethanol":
        return dict(OC20_CONFIG), molecule_batch("CH3CH2OH")
    if name == "oc20_slabs_grad":  # energy-centric (forces = -dE/dx), as in relaxations of such models
        return dict(OC20_CONFIG, force_estimator="grad"), benchmark_batch(8)
    return dict(OC20_CONFIG), benchmark_batch(8)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("error: CUDA graphs need a CUDA device; none is available", file=sys.stderr)
        return 2
    from spinconv_train.benchmarks.timing import time_interleaved
    from spinconv_train.models import SpinConv
    from spinconv_train.models.spinconv.speed.graphed import GraphedSpinConv

    device = torch.device("cuda")
    for name in args.cases:
        config, batch = _case(name)
        torch.manual_seed(0)
        model = SpinConv(**config).to(device).eval()
        graphed = GraphedSpinConv(model)
        batch = batch.to(device)

        def call(m) -> dict[str, Any]:
            with torch.no_grad():
                return m(batch.clone())

        timings = time_interleaved({"plain": lambda: call(model), "graphed": lambda: call(graphed)},
                                   args.repeats, args.warmup, device)
        a, b = call(model), call(graphed)
        diff = max(float((a[k] - b[k]).abs().max()) for k in a)
        plain, fast = timings["plain"].median, timings["graphed"].median
        print(json.dumps({"case": name, "device": torch.cuda.get_device_name(device), "torch": torch.__version__,
                          "atoms": int(batch.pos.shape[0]), "force_estimator": config["force_estimator"],
                          "plain_ms": round(1e3 * plain, 3), "graphed_ms": round(1e3 * fast, 3),
                          "speedup": round(plain / fast, 3), "captures": graphed.captures,
                          "max_abs_diff": diff, "repeats": args.repeats}), flush=True)
    if args.predict_frames:
        _time_predictions(args.predict_frames, device)
    return 0


def _time_predictions(num_frames: int, device) -> None:
    """predict_atoms over an MD17-like test set (one molecule, rattled), plain vs graphed:
    the second of two passes each (the first includes the captures)."""
    import time

    import torch
    from ase.build import molecule

    from spinconv_train.calculators.predict import predict_atoms
    from spinconv_train.models import SpinConv
    from spinconv_train.models.spinconv.speed.graphed import GraphedSpinConv

    class RawOutputs:
        def denormalize(self, out, batch):
            return out

    config, _ = _case("md17_ethanol")
    torch.manual_seed(0)
    model = SpinConv(**config).to(device).eval()
    frames = []
    for seed in range(num_frames):
        atoms = molecule("CH3CH2OH")
        atoms.rattle(0.05, seed=seed)
        frames.append(atoms)
    seconds = {}
    for name, wrapped in (("plain", model), ("graphed", GraphedSpinConv(model))):
        for _ in range(2):
            torch.cuda.synchronize(device)
            start = time.perf_counter()
            predict_atoms(wrapped, RawOutputs(), frames, batch_size=16, device=device)
            torch.cuda.synchronize(device)
            seconds[name] = time.perf_counter() - start
    print(json.dumps({"case": "md17_ethanol_predict_atoms", "frames": num_frames, "batch_size": 16,
                      "plain_s": round(seconds["plain"], 3), "graphed_s": round(seconds["graphed"], 3),
                      "frames_per_s_plain": round(num_frames / seconds["plain"], 1),
                      "frames_per_s_graphed": round(num_frames / seconds["graphed"], 1),
                      "speedup": round(seconds["plain"] / seconds["graphed"], 3)}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
