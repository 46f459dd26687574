"""``python main.py --mode {train,validate,predict,run-relaxations} --config-yml F [...]``.

Unrecognised ``--section.key=value`` arguments override config keys. Distributed runs are
launched with ``torchrun`` (the loop reads RANK / WORLD_SIZE / LOCAL_RANK) or submitted to
SLURM with ``--submit`` (submitit; ``launch/slurm.py``), which sets the same variables.
Each mode is one function of :data:`MODE_RUNNERS`.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from spinconv_train import distributed as dist
from spinconv_train.atomic_files import write_text_atomic
from spinconv_train.checkpoints.store import CheckpointError
from spinconv_train.config import CLI_ORIGIN, Config, ConfigError, extra_val_splits
from spinconv_train.datasets import DatasetError
from spinconv_train.launch import slurm
from spinconv_train.launch.args import UsageError, build_parser, check_flags, check_misspelled_flags, resolve_config
from spinconv_train.launch.sweep import run_sweep
from spinconv_train.registry import RegistryError
from spinconv_train.relaxation import run_relaxations
from spinconv_train.rundir import RunDirectoryExistsError, RunOptions
from spinconv_train.tables import format_table
from spinconv_train.tasks import data
from spinconv_train.training import loop
from spinconv_train.training.dry_run import dry_run
from spinconv_train.training.loop import NonFiniteLossError
from spinconv_train.training.session import open_session
from spinconv_train.training.signals import TrainingInterrupted

__all__ = ["MODE_RUNNERS", "UsageError", "build_parser", "main", "resolve_config", "run"]

Metrics = dict[str, dict[str, float]]


def run_options(args: argparse.Namespace) -> RunOptions:
    """The command-line choices of a run that are not part of its config."""
    return RunOptions(run_dir=args.run_dir, identifier=args.identifier, run_name=args.run_name,
                      checkpoint=args.checkpoint, amp=args.amp, cpu=args.cpu,
                      progress=not args.no_progress and sys.stderr.isatty(), resume=args.resume,
                      allow_world_size_change=args.allow_world_size_change)


def _eval_dataset(config: Config, split: str, model: torch.nn.Module) -> Dataset:
    """``dataset.<split>``, checked against ``model``'s element embedding."""
    dataset = data.build_dataset(config, split)
    data.check_embedding_covers(model, dataset, split)
    return dataset


def _eval_loader(config: Config, dataset: Dataset) -> DataLoader:
    optim = config["optim"]
    return data.eval_loader(dataset, optim["eval_batch_size"] or optim["batch_size"], optim["num_workers"])


def _split_loader(config: Config, split: str, model: torch.nn.Module) -> DataLoader:
    """The evaluation loader of ``dataset.<split>`` (checked against ``model``)."""
    return _eval_loader(config, _eval_dataset(config, split, model))


def train_mode(args: argparse.Namespace, config: Config) -> Metrics:
    """``--mode train``: a new run, a fine-tuning run or a resumed one."""
    optim = config["optim"]
    train_set = data.build_dataset(config, "train")
    session = open_session(config, run_options(args), "train", train_dataset=train_set)
    try:
        data.check_embedding_covers(session.model, train_set, "train")
        val = _split_loader(config, "val", session.model) if "val" in config["dataset"] else None
        extra = {split: _split_loader(config, split, session.model) for split in extra_val_splits(config)}
        train = data.train_loader(train_set, optim["batch_size"], config["seed"], optim["num_workers"])
        return loop.train(session, train, val, extra)
    finally:
        session.close()


def validate_mode(args: argparse.Namespace, config: Config) -> Metrics:
    """``--mode validate``: metrics of a checkpoint on ``val`` and the ``val_<name>`` splits
    (or on ``--split``), written as ``validate_metrics[_<split>].json``."""
    splits = [args.split] if args.split else ["val", *extra_val_splits(config)]
    data.require_split(config, splits[0])
    session = open_session(config, run_options(args), "validate")
    results = {}
    try:
        for split in splits:
            results[split] = loop.evaluate(session, _split_loader(config, split, session.model),
                                           f"validating ({split})", split, check_elements=True)
            session.loggers.log(results[split], session.step, "validate" if split == "val" else f"validate_{split}")
    finally:
        session.close()
    if dist.is_main():
        print("validation metrics:\n" + format_table(results), flush=True)
        for split, metrics in results.items():
            name = "validate_metrics.json" if split == "val" else f"validate_metrics_{split}.json"
            write_text_atomic(os.path.join(session.run_dir, name), json.dumps(metrics, indent=2))
    return results


def split_source(config: Config, split: str) -> str:
    """``dataset.<split>.src`` as written, for messages."""
    src = config["dataset"][split].get("src")
    return ", ".join(map(str, src)) if isinstance(src, (list, tuple)) else str(src)


def warn_if_split_from_another_source(config: Config, split: str) -> None:
    """Warn when the predicted split's source comes from a config file while other splits were
    redirected on the command line: the user probably meant to predict their own data."""
    redirected = [name for name in config["dataset"] if name != split
                  and config.origin(f"dataset.{name}.src") == CLI_ORIGIN]
    origin = config.origin(f"dataset.{split}.src")
    if redirected and origin != CLI_ORIGIN:
        others = ", ".join(f"dataset.{name}" for name in redirected)
        warnings.warn(f"predicting dataset.{split} ({split_source(config, split)}) from {origin}, while {others} "
                      f"came from the command line; to predict other structures pass "
                      f"--dataset.{split}.src=PATH (or --split NAME)", UserWarning, stacklevel=2)


def predict_mode(args: argparse.Namespace, config: Config) -> Metrics:
    """``--mode predict``: ``predictions.npz`` of a checkpoint on the ``test`` split (or ``--split``)."""
    split = args.split or "test"
    data.require_split(config, split)
    warn_if_split_from_another_source(config, split)
    session = open_session(config, run_options(args), "predict")
    session.close()
    dataset = _eval_dataset(config, split, session.model)
    count = len(dataset)
    if dist.is_main():
        print(f"predicting dataset.{split}: {count} structures from {split_source(config, split)}", flush=True)
    path = loop.predict(session, _eval_loader(config, dataset),
                        os.path.join(session.run_dir, "predictions.npz"))
    if dist.is_main():
        print(f"predictions for {count} structures of dataset.{split} written to {path}", flush=True)
    return {}


def relaxations_mode(args: argparse.Namespace, config: Config) -> Metrics:
    """``--mode run-relaxations``: relax ``task.relax_dataset`` with a checkpoint's force model."""
    return {"relax": run_relaxations(config, run_options(args))}


MODE_RUNNERS: dict[str, Callable[[argparse.Namespace, Config], Metrics]] = {
    "train": train_mode,
    "validate": validate_mode,
    "predict": predict_mode,
    "run-relaxations": relaxations_mode,
}


def run(args: argparse.Namespace, config: Config) -> Metrics:
    """Execute ``args.mode``; returns the metrics it computed."""
    if args.debug:
        torch.autograd.set_detect_anomaly(True)
    try:
        return MODE_RUNNERS[args.mode](args, config)
    finally:
        dist.cleanup()


def _sweep(args: argparse.Namespace, overrides: Sequence[str], argv: Sequence[str]) -> None:
    run_sweep(args, overrides, argv, run=run, entry=main)


def _dry_run(config: Config, args: argparse.Namespace) -> None:
    print(json.dumps(dry_run(config, cpu=args.cpu), indent=2), flush=True)


def _submit(args: argparse.Namespace, argv: Sequence[str], config: Config) -> None:
    try:
        slurm.submit(args, argv, config, entry=main)
    except ValueError as err:
        raise UsageError(str(err)) from None


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``main.py`` and ``spinconv-train`` (through ``launch/entry.py``); returns the exit code."""
    parser = build_parser()
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    whole = sys.argv[1:] if argv is None else argv
    try:
        check_flags(args)
        check_misspelled_flags(parser, overrides)
        if args.sweep_yml:
            _sweep(args, overrides, whole)
            return 0
        config = resolve_config(args, overrides)
        if args.dry_run:
            _dry_run(config, args)
        elif args.submit:
            _submit(args, whole, config)
        else:
            run(args, config)
    except (UsageError, ConfigError, RegistryError, CheckpointError, DatasetError, RunDirectoryExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:
        print(f"error: training stopped: {err}", file=sys.stderr)
        return 1
    except TrainingInterrupted as stopped:  # the loop logged the checkpoint line
        return stopped.exit_code
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C) outside the training steps, or twice: nothing new was saved (one Ctrl-C "
              "during training finishes the step and writes a checkpoint)", file=sys.stderr)
        return 130
    return 0
