"""The command line's flags: the parser, the checks of flag combinations, and the config
they resolve to (the file, or the checkpoint's, plus ``--section.key=value`` overrides)."""
from __future__ import annotations

import argparse
import difflib
import os
from collections.abc import Sequence

from spinconv_train.checkpoints.store import read
from spinconv_train.config import SCHEMA, Config, load_config

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
    parser.add_argument("--run-name", help="exact name of the run directory under --run-dir (default: a "
                        "timestamp, plus -IDENTIFIER); training in an existing one continues that run")
    parser.add_argument("--resume", action="store_true",
                        help="with --mode train: continue the run in --run-name (or the newest run folder of "
                             "--identifier) from its newest checkpoint, even if the config changed")
    parser.add_argument("--allow-world-size-change", action="store_true",
                        help="resume a checkpoint under another global batch (processes x batch_size); without "
                             "it such a resume is refused")
    parser.add_argument("--seed", type=int, help="random seed (overrides the config's `seed`)")
    parser.add_argument("--amp", action="store_true", help="automatic mixed precision (CUDA only)")
    parser.add_argument("--debug", action="store_true", help="debug logging and autograd anomaly detection")
    parser.add_argument("--cpu", action="store_true", help="run on CPU even when CUDA is available")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--split", help="with --mode validate: evaluate this dataset split (e.g. test, for "
                        "labelled test sets) instead of val and the val_<name> splits; with --mode predict: "
                        "predict this split instead of test")
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
    if args.split is not None and args.mode not in ("validate", "predict"):
        raise UsageError(f"--split {args.split}: only --mode validate and --mode predict take a chosen split")
    if args.config_yml is None and args.checkpoint is None:
        raise UsageError("give --config-yml (and/or --checkpoint to resume or evaluate)")


def check_misspelled_flags(parser: argparse.ArgumentParser, overrides: Sequence[str]) -> None:
    """An unknown ``--name`` that is no config section and looks like one of the command's
    flags (``--chekpoint``, ``--dryrun``) is a typo: name the flag it resembles."""
    flags = [option for action in parser._actions for option in action.option_strings if option.startswith("--")]
    for item in overrides:
        if not item.startswith("--"):
            continue
        name = item.split("=", 1)[0]
        if "." in name or name[2:] in SCHEMA:
            continue
        close = difflib.get_close_matches(name, flags, n=1, cutoff=0.75)
        if close:
            raise UsageError(f"unknown option {name}; did you mean {close[0]}?")


def resolve_config(args: argparse.Namespace, overrides: Sequence[str]) -> Config:
    """The config file (or, without one, the checkpoint's config), then overrides and --seed."""
    base = None
    if args.config_yml is None:
        base = read(args.checkpoint)["config"]
    extra = list(overrides) + ([f"--seed={args.seed}"] if args.seed is not None else [])
    return load_config(args.config_yml, extra, base=base)
