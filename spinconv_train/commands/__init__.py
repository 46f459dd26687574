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

Each module has ``parse_args(argv)`` and ``main(argv) -> exit code``; ``scripts/<module>.py``
runs the same from a checkout.
"""

from __future__ import annotations

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
