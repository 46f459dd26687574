"""Export a trained model: a checkpoint reduced to its config, one set of weights and its
normaliser, for sharing and deployment.

    spinconv-export --checkpoint runs/<run>/best_checkpoint.pt --out ethanol_spinconv.pt

Takes the EMA weights when the run kept an EMA (``--weights model``: the raw weights), drops
the optimiser, EMA copy, scheduler, sampler and RNG states, and writes the result
atomically. The exported file works wherever a checkpoint is read for inference
(``main.py --mode validate|predict|run-relaxations --checkpoint``, ``ModelCalculator``,
``run_md.py``, ``evaluate_structures.py``) and as ``finetune.checkpoint``; it cannot resume
training. Prints one JSON line: sizes before and after, weights taken, parameters.

``spinconv-export`` is installed with the package; from a checkout ``python scripts/export_model.py`` is the same.
"""
from __future__ import annotations

import argparse
import sys

from spinconv_train.commands import report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint.pt or best_checkpoint.pt of a run")
    p.add_argument("--out", required=True, help="exported file to write (refused if it exists, unless --overwrite)")
    p.add_argument("--weights", choices=("auto", "ema", "model"), default="auto",
                   help="auto: the EMA weights when the run kept them; ema: require them; model: the raw weights")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from spinconv_train.checkpoints.export import export_checkpoint
    from spinconv_train.checkpoints.store import CheckpointError

    return report(lambda: export_checkpoint(args.checkpoint, args.out, weights=args.weights,
                                            overwrite=args.overwrite), (CheckpointError,))


if __name__ == "__main__":
    sys.exit(main())
