"""Command-line tools installed with the package (``setup.py`` console scripts).

``spinconv-train`` (``spinconv_train.launch``) trains, validates, predicts and relaxes; the
commands here prepare data and use trained models:

- ``spinconv-preprocess-ef``: ASE files -> S2EF LMDB (``preprocess_ef``)
- ``spinconv-preprocess-relaxed``: initial/relaxed pairs -> IS2RE/IS2RS LMDB (``preprocess_relaxed``)
- ``spinconv-lmdb-metadata``: atom counts for LMDBs written elsewhere (``write_lmdb_metadata``)
- ``spinconv-evaluate``: predictions and errors on ASE files (``evaluate_structures``)
- ``spinconv-md``: molecular dynamics with ASE integrators (``run_md``)
- ``spinconv-export``: a checkpoint reduced to config, weights and normaliser (``export_model``)
- ``spinconv-inspect``: what a checkpoint or exported model holds (``inspect_checkpoint``)
- ``spinconv-import-ocp``: an OCP trainer checkpoint (file, released name or URL) as an exported model (``import_ocp``)
- ``spinconv-plot``: learning curves and parity plots of run folders (``plot``)

Each module has ``parse_args(argv)`` and ``main(argv) -> exit code``; ``scripts/<module>.py``
runs the same from a checkout.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any

NON_FINITE_KEY = "non_finite"


def _finite(value: Any, where: str, replaced: dict[str, str]) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        replaced[where] = repr(value)
        return None
    if isinstance(value, Mapping):
        return {key: _finite(item, f"{where}.{key}" if where else str(key), replaced) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item, f"{where}[{k}]", replaced) for k, item in enumerate(value)]
    return value


def json_line(summary: Mapping[str, Any]) -> str:
    """``summary`` as one line of valid JSON. NaN and infinite numbers, which JSON cannot
    hold, become ``null``, and ``non_finite`` maps each such key (as a dotted path) to why:
    the reason ``summary[non_finite]`` gives for that path, else the value it had."""
    reasons = dict(summary.get(NON_FINITE_KEY) or {})
    replaced: dict[str, str] = {}
    clean = _finite({k: v for k, v in summary.items() if k != NON_FINITE_KEY}, "", replaced)
    if replaced:
        clean[NON_FINITE_KEY] = {key: reasons.get(key, f"{value} (not a JSON number)")
                                 for key, value in replaced.items()}
    return json.dumps(clean, allow_nan=False)


def report(produce: Callable[[], Mapping[str, Any]], errors: tuple[type[BaseException], ...]) -> int:
    """Print ``produce()``'s summary as one JSON line and return 0, or print an input error
    (one of ``errors``, or a full disk) as one ``error: ...`` line on stderr and return 2.
    Warnings raised meanwhile are printed as ``warning: ...`` lines on stderr."""
    from spinconv_train.atomic_files import DiskFullError

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            try:
                summary = produce()
            finally:
                for item in caught:
                    print(f"warning: {item.message}", file=sys.stderr)
    except (*errors, DiskFullError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json_line(summary), flush=True)
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
