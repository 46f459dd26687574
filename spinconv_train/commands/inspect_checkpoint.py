"""Describe a checkpoint or exported model: what was trained on what, how far, how well.

    spinconv-inspect runs/<run>/best_checkpoint.pt [more files]

Prints one JSON object per file: whether it is a training checkpoint (resumable) or an
exported model, trainer, model name and settings, parameters, which weights it holds (and
whether EMA weights are there), step, epoch, the monitored metric's best value and the
metrics of its last validation, the normaliser and element references, and the dataset
sources of the run. Reads the file on the CPU; builds no model. Values that are NaN or
infinite (a diverged validation, say) are written as ``null`` (JSON has no NaN), and
``non_finite`` says for each such key what it was and why.

``spinconv-inspect`` is installed with the package; from a checkout ``python scripts/inspect_checkpoint.py`` is the same.
"""
from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping
from typing import Any

from spinconv_train.commands import NON_FINITE_KEY, report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="checkpoint.pt, best_checkpoint.pt or an exported model")
    return p.parse_args(argv)


def describe(payload: Mapping[str, Any], path: str) -> dict[str, Any]:
    """The summary of a loaded checkpoint ``payload`` (see the module docstring)."""
    from spinconv_train.checkpoints.store import EXPORT_KEY

    config = payload["config"]
    model = dict(config.get("model", {}))
    exported = payload.get(EXPORT_KEY)
    weights = payload["model"]
    targets = payload.get("targets") or {}
    refs = targets.get("element_references")
    metrics = payload.get("metrics") or {}
    reasons = {f"last_validation.{name}": f"{value!r}: the last validation gave no finite value (a diverged "
               "model, or no structure with that label)" for name, value in metrics.items()
               if isinstance(value, float) and not math.isfinite(value)}
    best = payload.get("best_metric")
    if isinstance(best, float) and not math.isfinite(best):
        reasons["best_metric"] = f"{best!r}: no validation has given a finite value of the monitored metric"
    return {
        "path": path,
        "kind": "exported model" if exported else "training checkpoint",
        "resumable": not exported,
        "exported_from": exported,
        "trainer": config.get("trainer"),
        "model": model.pop("name", None),
        "model_settings": model,
        "parameters": int(sum(t.numel() for t in weights.values() if t.is_floating_point())),
        "ema_weights": payload.get("ema") is not None if not exported else exported.get("weights") == "ema",
        "step": payload.get("step"),
        "epoch": payload.get("epoch"),
        "monitored_metric": config.get("task", {}).get("metric"),
        "best_metric": payload.get("best_metric"),
        "last_validation": metrics,
        "normalizer": targets.get("normalizer"),
        "element_references": None if refs is None else _nonzero_references(refs),
        "datasets": {split: section.get("src") for split, section in config.get("dataset", {}).items()
                     if isinstance(section, dict)},
        NON_FINITE_KEY: reasons,
    }


def _nonzero_references(state: Mapping[str, Any]) -> dict[str, float]:
    """{element symbol: reference energy} of the elements with a fitted (non-zero) reference."""
    from ase.data import chemical_symbols

    return {chemical_symbols[z]: float(v) for z, v in enumerate(state.get("references", []))
            if v and z < len(chemical_symbols)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from spinconv_train.checkpoints.store import CheckpointError, read

    codes = [report(lambda: describe(read(path), path), (CheckpointError,)) for path in args.checkpoints]
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())
