"""The SpinConv paper's OC20 results and the metrics of our runs, side by side.

``PAPER_ROWS`` holds the published numbers (Shuaibi et al. 2021 and the released
checkpoints' validation metrics, as collected in the project notes). ``run_metrics`` reads
what a run directory of ours measured: ``validate_metrics.json`` (``--mode validate``),
``relaxation_metrics.json`` (``--mode run-relaxations``) or the last ``val`` row of a
training run's ``metrics.jsonl``. ``paper_table`` puts both in one Markdown table.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class PaperRow:
    key: str  # command-line name of the row
    label: str
    metrics: tuple[tuple[str, str, float], ...]  # (our metric key, shown name, paper value)
    how: str  # the commands that produce our run directory for this row


PAPER_ROWS: tuple[PaperRow, ...] = (
    PaperRow("s2ef-2m-val-id", "S2EF 2M, val ID", (
        ("forces_mae", "force MAE (eV/Å)", 0.0329), ("energy_force_within_threshold", "EFwT", 0.0018)),
        "train configs/s2ef/2M/spinconv.yml, then --mode validate on val_id"),
    PaperRow("s2ef-all-val-id", "S2EF All, val ID", (
        ("forces_mae", "force MAE (eV/Å)", 0.0267), ("energy_force_within_threshold", "EFwT", 0.0102)),
        "train configs/s2ef/all/spinconv.yml, then --mode validate on val_id"),
    PaperRow("is2rs-all", "IS2RS All (ML relaxation)", (
        ("average_distance_within_threshold", "ADwT", 0.536),),
        "--mode run-relaxations with configs/is2rs/... on the IS2RE/IS2RS split"),
    PaperRow("is2re-all-relaxation", "IS2RE All (via relaxation)", (
        ("energy_mae", "energy MAE (eV)", 0.437),),
        "the same run-relaxations run (energy of the relaxed structure)"),
)

_SOURCES = ("validate_metrics.json", "relaxation_metrics.json")


class RunMetricsError(ValueError):
    """A run directory holds no metrics this module can read."""


def run_metrics(run_dir: str) -> dict[str, float]:
    """The final metrics of one of our run directories (see the module docstring)."""
    for name in _SOURCES:
        path = os.path.join(run_dir, name)
        if os.path.exists(path):
            with open(path) as handle:
                return {k: float(v) for k, v in json.load(handle).items() if isinstance(v, (int, float))}
    path = os.path.join(run_dir, "metrics.jsonl")
    if os.path.exists(path):
        rows = []
        with open(path) as handle:
            for number, line in enumerate(handle, 1):
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise RunMetricsError(f"{path}, line {number}: not JSON ({err})") from None
                if row.get("split") == "val":
                    rows.append(row)
        if rows:
            return {k: float(v) for k, v in rows[-1].items() if isinstance(v, (int, float))}
    raise RunMetricsError(f"{run_dir!r} holds none of {', '.join(_SOURCES)} and no validation rows in "
                          "metrics.jsonl (is it a run directory of --mode validate, run-relaxations or train?)")


def _format(value: float | None, name: str) -> str:
    if value is None:
        return "—"
    if name in ("EFwT", "ADwT"):
        return f"{100.0 * value:.2f}%"
    return f"{value:.4f}"


def paper_table(runs: Mapping[str, str]) -> str:
    """Markdown table of every paper row: the paper's value and ours (from ``runs``, row
    key -> run directory; rows without a run show a dash)."""
    known = {row.key for row in PAPER_ROWS}
    unknown = sorted(set(runs) - known)
    if unknown:
        raise KeyError(f"unknown rows {unknown}; known: {', '.join(sorted(known))}")
    lines: list[str] = ["| result | metric | paper | ours | our run |", "|---|---|---|---|---|"]
    for row in PAPER_ROWS:
        ours = run_metrics(runs[row.key]) if row.key in runs else {}
        for key, name, value in row.metrics:
            source = runs.get(row.key, f"not run ({row.how})")
            lines.append(f"| {row.label} | {name} | {_format(value, name)} | {_format(ours.get(key), name)} | {source} |")
    return "\n".join(lines)
