"""``python main.py --mode {train,validate,predict,run-relaxations} --config-yml F [...]``.

Unrecognised ``--section.key=value`` arguments override config keys. Distributed runs are
launched with ``torchrun`` (the loop reads RANK / WORLD_SIZE / LOCAL_RANK) or submitted to
SLURM with ``--submit`` (submitit; ``launch/slurm.py``), which sets the same variables.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Dict, List, Optional, Sequence

from spinconv_train.config import Config, ConfigError, extra_val_splits, load_config, write_text_atomic
from spinconv_train.registry import RegistryError

MODES = ("train", "validate", "predict", "run-relaxations")
_SUBMIT_ONLY = ("num_gpus", "num_nodes", "slurm_partition", "slurm_mem", "slurm_timeout")


class UsageError(ValueError):
    """A command-line flag combination that cannot run."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="main.py", allow_abbrev=False,
                                     description="Train and evaluate atomistic GNNs "
                                     "(SpinConv, SchNet, DimeNet++) on OC20, MD17 and QM9.",
                                     epilog="Extra --section.key=value arguments override config keys.")
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--config-yml", help="YAML config (may use `includes:`); optional when --checkpoint "
                        "is given (the checkpoint's config is used)")
    parser.add_argument("--checkpoint", help="checkpoint.pt to resume (train) or to evaluate (validate, predict)")
    parser.add_argument("--identifier", default="", help="suffix of the run directory name")
    parser.add_argument("--run-dir", default="runs", help="parent folder of run directories (default runs/)")
    parser.add_argument("--run-name", help="exact name of the new run directory under --run-dir "
                        "(default: a timestamp, plus -IDENTIFIER)")
    parser.add_argument("--seed", type=int, help="random seed (overrides the config's `seed`)")
    parser.add_argument("--amp", action="store_true", help="automatic mixed precision (CUDA only)")
    parser.add_argument("--debug", action="store_true", help="debug logging and autograd anomaly detection")
    parser.add_argument("--cpu", action="store_true", help="run on CPU even when CUDA is available")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--split", help="with --mode validate: evaluate this dataset split (e.g. test, for "
                        "labelled test sets) instead of val and the val_<name> splits")
    parser.add_argument("--dry-run", action="store_true",
                        help="with --mode train: build datasets, model and normaliser, run one training step's "
                             "forward and backward and one batch of each validation split, print a summary; "
                             "writes nothing")
    parser.add_argument("--sweep-yml", help="with --mode train: a YAML file of config keys and lists of values; "
                        "one run per combination (locally one after another, with --submit one job each)")
    dist = parser.add_argument_group("distributed / SLURM")
    dist.add_argument("--distributed", action="store_true", help="assert a torchrun launch (RANK/WORLD_SIZE set)")
    dist.add_argument("--submit", action="store_true",
                      help="submit this command as a SLURM job (submitit); requeued from the newest "
                           "checkpoint when preempted or out of time")
    dist.add_argument("--num-gpus", type=int, help="with --submit: GPUs per node, one process each")
    dist.add_argument("--num-nodes", type=int, help="with --submit: nodes (default 1)")
    dist.add_argument("--slurm-partition", help="with --submit: SLURM partition")
    dist.add_argument("--slurm-mem", type=int, help="with --submit: memory per node in GB")
    dist.add_argument("--slurm-timeout", type=float, help="with --submit: time limit in hours")
    return parser


def check_flags(args: argparse.Namespace) -> None:
    """Reject flag combinations that cannot run, saying what to do instead."""
    used = [name for name in _SUBMIT_ONLY if getattr(args, name) is not None]
    if used and not args.submit:
        flags = ", ".join("--" + n.replace("_", "-") for n in used)
        raise UsageError(f"{flags}: these describe a SLURM job and need --submit; on this machine launch "
                         "distributed runs with `torchrun --nproc-per-node N main.py ...`")
    if args.submit and args.distributed:
        raise UsageError("--submit and --distributed: a submitted job sets up its own processes (one per "
                         "GPU from --num-gpus); leave out --distributed")
    if args.distributed and "WORLD_SIZE" not in os.environ:
        raise UsageError("--distributed: launch with `torchrun --nproc-per-node N main.py ...` "
                         "(RANK/WORLD_SIZE are not set)")
    if args.mode == "run-relaxations":
        if args.checkpoint is None:
            raise UsageError("--mode run-relaxations needs --checkpoint (a checkpoint.pt of a `trainer: forces` run)")
    if args.run_name is not None and (not args.run_name or args.run_name in (".", "..")
                                      or os.sep in args.run_name or "/" in args.run_name):
        raise UsageError(f"--run-name {args.run_name!r}: give a plain folder name (no path separators)")
    if args.dry_run and (args.mode != "train" or args.submit or args.sweep_yml or args.checkpoint):
        raise UsageError("--dry-run checks a new training run: use it with --mode train, without --submit, "
                         "--sweep-yml or --checkpoint")
    if args.split is not None and args.mode != "validate":
        raise UsageError(f"--split {args.split}: only --mode validate evaluates a chosen split")
    if args.config_yml is None and args.checkpoint is None:
        raise UsageError("give --config-yml (and/or --checkpoint to resume or evaluate)")


def resolve_config(args: argparse.Namespace, overrides: Sequence[str]) -> Config:
    """The config file (or, without one, the checkpoint's config), then overrides and --seed."""
    base = None
    if args.config_yml is None:
        from spinconv_train.checkpoints.store import load

        base = load(args.checkpoint)["config"]
    extra = list(overrides) + ([f"--seed={args.seed}"] if args.seed is not None else [])
    return load_config(args.config_yml, extra, base=base)


def run(args: argparse.Namespace, config: Config) -> Dict[str, Dict[str, float]]:
    """Execute one mode; returns the metrics it computed."""
    import torch

    from spinconv_train.tasks import data as build
    from spinconv_train.training import loop
    from spinconv_train.training.session import RunOptions, open_session
    from spinconv_train import distributed as dist

    if args.debug:
        torch.autograd.set_detect_anomaly(True)
    options = RunOptions(run_dir=args.run_dir, identifier=args.identifier, run_name=args.run_name,
                         checkpoint=args.checkpoint,
                         amp=args.amp, cpu=args.cpu,
                         progress=not args.no_progress and sys.stderr.isatty())
    optim = config["optim"]
    eval_batch = optim["eval_batch_size"] or optim["batch_size"]
    workers = optim["num_workers"]
    try:
        if args.mode == "train":
            train_set = build.build_dataset(config, "train")
            session = open_session(config, options, "train", train_dataset=train_set)
            val = build.eval_loader(build.build_dataset(config, "val"), eval_batch, workers) \
                if "val" in config["dataset"] else None
            extra = {split: build.eval_loader(build.build_dataset(config, split), eval_batch, workers)
                     for split in extra_val_splits(config)}
            try:
                train = build.train_loader(train_set, optim["batch_size"], config["seed"], workers)
                return loop.train(session, train, val, extra)
            finally:
                session.close()
        if args.mode == "validate":
            splits = [args.split] if args.split else ["val", *extra_val_splits(config)]
            build.require_split(config, splits[0])
            session = open_session(config, options, "validate")
            results = {}
            try:
                for split in splits:
                    loader = build.eval_loader(build.build_dataset(config, split), eval_batch, workers)
                    results[split] = loop.evaluate(session, loader, f"validating ({split})", split)
                    session.loggers.log(results[split], session.step, "validate" if split == "val" else
                                        f"validate_{split}")
            finally:
                session.close()
            if dist.is_main():
                print("validation metrics:\n" + loop.format_table(results), flush=True)
                for split, metrics in results.items():
                    name = "validate_metrics.json" if split == "val" else f"validate_metrics_{split}.json"
                    write_text_atomic(os.path.join(session.run_dir, name), json.dumps(metrics, indent=2))
            return results
        if args.mode == "run-relaxations":
            from spinconv_train.relaxation import run_relaxations

            return {"relax": run_relaxations(config, options)}
        build.require_split(config, "test")
        session = open_session(config, options, "predict")
        session.close()
        path = loop.predict(session, build.eval_loader(build.build_dataset(config, "test"), eval_batch, workers),
                            os.path.join(session.run_dir, "predictions.npz"))
        if dist.is_main():
            print(f"predictions written to {path}", flush=True)
        return {}
    finally:
        dist.cleanup()


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``main.py`` and the ``spinconv-train`` command; returns the exit code."""
    parser = build_parser()
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from spinconv_train.datasets import DatasetError
    from spinconv_train.checkpoints.store import CheckpointError
    from spinconv_train.training.loop import NonFiniteLossError
    from spinconv_train.training.session import RunDirectoryExistsError

    try:
        check_flags(args)
        if args.sweep_yml:
            from spinconv_train.launch.sweep import run_sweep

            run_sweep(args, overrides, sys.argv[1:] if argv is None else argv)
            return 0
        config = resolve_config(args, overrides)
        if args.dry_run:
            from spinconv_train.training.dry_run import dry_run

            print(json.dumps(dry_run(config, cpu=args.cpu), indent=2), flush=True)
            return 0
        if args.submit:
            from spinconv_train.launch import slurm

            try:
                slurm.submit(args, sys.argv[1:] if argv is None else argv, config)
            except ValueError as err:
                raise UsageError(str(err)) from None
            return 0
        run(args, config)
    except (UsageError, ConfigError, RegistryError, CheckpointError, DatasetError, RunDirectoryExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:
        print(f"error: training stopped: {err}", file=sys.stderr)
        return 1
    return 0
