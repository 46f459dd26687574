"""Command-line tools installed with the package (``setup.py`` console scripts).

``spinconv-train`` (``spinconv_train.cli``) trains, validates, predicts and relaxes; the
commands here prepare data and use trained models:

- ``spinconv-preprocess-ef``: ASE files -> S2EF LMDB (``preprocess_ef``)
- ``spinconv-preprocess-relaxed``: initial/relaxed pairs -> IS2RE/IS2RS LMDB (``preprocess_relaxed``)
- ``spinconv-lmdb-metadata``: atom counts for LMDBs written elsewhere (``write_lmdb_metadata``)
- ``spinconv-evaluate``: predictions and errors on ASE files (``evaluate_structures``)
- ``spinconv-md``: molecular dynamics with ASE integrators (``run_md``)
- ``spinconv-export``: a checkpoint reduced to config, weights and normaliser (``export_model``)
- ``spinconv-inspect``: what a checkpoint or exported model holds (``inspect_checkpoint``)
- ``spinconv-plot``: learning curves and parity plots of run folders (``plot``)

Each module has ``parse_args(argv)`` and ``main(argv) -> exit code``; ``scripts/<module>.py``
runs the same from a checkout.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Mapping, Tuple, Type


def report(produce: Callable[[], Mapping[str, Any]], errors: Tuple[Type[BaseException], ...]) -> int:
    """Print ``produce()``'s summary as one JSON line and return 0, or print an input error
    (one of ``errors``) as one ``error: ...`` line on stderr and return 2."""
    try:
        summary = produce()
    except errors as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(dict(summary)), flush=True)
    return 0


def add_model_arguments(parser: argparse.ArgumentParser, graphs_gain: str) -> None:
    """``--device``, ``--cuda-graphs`` (``graphs_gain``: what it buys in this command) and
    ``--no-ema`` of the commands that load trained models; check them with
    :func:`check_model_arguments`."""
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help=f"replay the model from CUDA graphs (SpinConv on a CUDA device): {graphs_gain}")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights even when EMA weights were saved")


def check_model_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse ``--cuda-graphs`` without a CUDA ``--device`` before any model is loaded."""
    if args.cuda_graphs and not args.device.startswith("cuda"):
        parser.error(f"--cuda-graphs needs a CUDA --device, got {args.device!r}")
