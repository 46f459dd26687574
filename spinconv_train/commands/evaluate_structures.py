"""Predict energies and forces (and stresses) of ASE structures with a trained model.

    spinconv-evaluate --checkpoint runs/<run>/best_checkpoint.pt \\
        --structures test.extxyz [more files] --out predictions.extxyz

Reads every frame of the inputs (extxyz, ASE trajectories, ASE databases, any format
ase.io reads), predicts in batches and writes one extxyz with the frames and their
predictions as ``<prefix>energy`` (info), ``<prefix>forces`` (arrays), for SpinConv the
per-atom ``<prefix>energies`` (arrays) and, with ``--stress``, ``<prefix>stress`` (info,
Voigt); labels stored with the frames are kept.
Where frames store labels, the last stdout line (JSON) holds the MAE and RMSE of energy
(also per atom), forces and stress, defined as ``--mode validate`` defines them:
``forces_mae`` / ``forces_rmse`` over every component of the free atoms (those not fixed
by ``FixAtoms``), as OC20 scores forces, also per element (``forces_by_element``), and
``forces_mae_all_atoms`` / ``forces_rmse_all_atoms`` over every atom. Several
``--checkpoint`` files form a committee: the mean is written as the prediction, with
``<prefix>energy_std`` and per-atom ``<prefix>forces_std`` (their spread);
``--select-uncertain N FILE`` writes the N frames with the largest force spread to FILE.

``spinconv-evaluate`` is installed with the package; from a checkout ``python scripts/evaluate_structures.py`` is the same.
"""
from __future__ import annotations

import argparse
import sys

from spinconv_train.commands import add_model_arguments, check_model_arguments, json_line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, nargs="+",
                   help="checkpoint.pt of a `trainer: forces` run; several: a committee (mean and spread)")
    p.add_argument("--structures", nargs="+", required=True, help="ASE-readable files (all frames are used)")
    p.add_argument("--out", required=True, help="output extxyz (written atomically)")
    p.add_argument("--batch-size", type=int, default=16, help="structures per model call")
    p.add_argument("--stress", action="store_true", help="also predict stresses (energy-centric SpinConv, "
                   "periodic frames)")
    p.add_argument("--prefix", default="spinconv_", help="prefix of the predicted keys in the output")
    add_model_arguments(p, "faster for many frames of one size, e.g. an MD17 test set, where every batch has "
                           "the same shape")
    p.add_argument("--select-uncertain", nargs=2, metavar=("N", "FILE"),
                   help="with a committee: also write the N frames whose largest per-atom force spread is "
                        "highest to FILE (extxyz, most uncertain first): the structures to label next")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        p.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.select_uncertain:
        count, _ = args.select_uncertain
        if len(args.checkpoint) < 2:
            p.error("--select-uncertain ranks frames by the committee's spread: give two or more --checkpoint files")
        if not count.isdigit() or int(count) < 1:
            p.error(f"--select-uncertain N FILE: N must be a positive integer, got {count!r}")
    check_model_arguments(p, args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch
    from ase.io import write

    from spinconv_train.atomic_files import atomic_path
    from spinconv_train.calculators.calculator import load_force_model
    from spinconv_train.calculators.committee import committee_statistics
    from spinconv_train.calculators.predict import error_summary, predict_atoms
    from spinconv_train.checkpoints.store import CheckpointError
    from spinconv_train.datasets import DatasetError
    from spinconv_train.datasets.ase_convert import read_frames

    try:
        frames = [atoms for path in args.structures for atoms in read_frames(path)]
        members = []
        for path in args.checkpoint:
            model, task = load_force_model(path, torch.device(args.device), use_ema=not args.no_ema,
                                           cuda_graphs=args.cuda_graphs)
            members.append(predict_atoms(model, task, frames, args.batch_size, stress=args.stress))
    except (DatasetError, CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    predictions = members[0] if len(members) == 1 else [committee_statistics(p) for p in zip(*members)]
    for atoms, pred in zip(frames, predictions):
        atoms.info[f"{args.prefix}energy"] = float(pred["energy"])
        atoms.arrays[f"{args.prefix}forces"] = pred["forces"]
        if "stress" in pred:
            atoms.info[f"{args.prefix}stress"] = pred["stress"]
        if "energies" in pred:
            atoms.arrays[f"{args.prefix}energies"] = pred["energies"]
        if "energy_std" in pred:
            atoms.info[f"{args.prefix}energy_std"] = pred["energy_std"]
            atoms.arrays[f"{args.prefix}forces_std"] = pred["forces_std"]
    with atomic_path(args.out, suffix=".extxyz") as tmp:
        write(tmp, frames, format="extxyz")
    if args.select_uncertain:
        count, path = int(args.select_uncertain[0]), args.select_uncertain[1]
        order = sorted(range(len(frames)), key=lambda k: -predictions[k]["max_forces_std"])[:count]
        with atomic_path(path, suffix=".extxyz") as tmp:
            write(tmp, [frames[k] for k in order], format="extxyz")
    summary = {"out": args.out, **error_summary(frames, predictions)}
    if len(members) > 1:
        summary["committee_members"] = len(members)
        summary["mean_energy_std"] = float(np.mean([p["energy_std"] for p in predictions]))
        summary["max_forces_std"] = float(max(p["max_forces_std"] for p in predictions))
    if args.select_uncertain:
        summary["selected"] = {"file": args.select_uncertain[1], "frames": order,
                               "max_forces_std": [float(predictions[k]["max_forces_std"]) for k in order]}
    print(json_line(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
