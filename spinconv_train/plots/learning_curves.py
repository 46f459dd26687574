"""Learning curves: training loss and validation force / energy MAE against step, epoch and
wall time, several runs on one set of axes (one line per run and validation split)."""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from spinconv_train.plots.figure import new_figure, save_png
from spinconv_train.plots.metrics_io import Row, read_metrics, series

# (split prefix, metric, y label): the panels, top to bottom
PANELS: tuple[tuple[str, str, str], ...] = (
    ("train", "loss", "train loss"),
    ("val", "forces_mae", "val force MAE (eV/Å)"),
    ("val", "energy_mae", "val energy MAE (eV)"),
)
X_AXES: tuple[tuple[str, str], ...] = (("step", "step"), ("epoch", "epoch"), ("time", "wall time since start (s)"))
FILE_NAME = "learning_curves.png"


def _splits(rows: Sequence[Row], prefix: str) -> list[str]:
    """``train``, or the validation splits (``val``, then ``val_<name>`` in order of appearance)."""
    if prefix == "train":
        return ["train"]
    found: list[str] = []
    for row in rows:
        split = row.get("split")
        if isinstance(split, str) and (split == "val" or split.startswith("val_")) and split not in found:
            found.append(split)
    return found


def curve_series(runs: Mapping[str, Sequence[Row]], prefix: str, metric: str, x: str) -> dict[str, tuple]:
    """``{label: (xs, ys)}`` of one panel: one entry per run and split with data (label:
    the run name, plus ``(split)`` when the run has several validation splits)."""
    out: dict[str, tuple] = {}
    for name, rows in runs.items():
        splits = _splits(rows, prefix)
        for split in splits:
            xs, ys = series(rows, split, metric, x)
            if xs:
                out[name if len(splits) == 1 else f"{name} ({split})"] = (xs, ys)
    return out


def learning_curve_figure(runs: Mapping[str, Sequence[Row]]) -> Any:
    """The figure: one row of axes per panel of ``PANELS`` that any run has data for, one
    column per x axis (step, epoch, wall time); each line is a run (and split)."""
    panels = [p for p in PANELS if any(curve_series(runs, p[0], p[1], "step").values())]
    if not panels:
        raise ValueError(f"runs {sorted(runs)}: no train loss, val forces_mae or val energy_mae rows to plot")
    fig = new_figure(len(panels), len(X_AXES))
    for r, (prefix, metric, ylabel) in enumerate(panels):
        for c, (x, xlabel) in enumerate(X_AXES):
            ax = fig.axes[r * len(X_AXES) + c]
            lines = curve_series(runs, prefix, metric, x)
            for label, (xs, ys) in lines.items():
                ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=label)
            if lines and all(v > 0 for _, ys in lines.values() for v in ys):
                ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(True, alpha=0.3)
            if lines and c == 0:
                ax.legend(fontsize="small")
    return fig


def run_names(run_dirs: Sequence[str]) -> list[str]:
    """Folder names of ``run_dirs``; the paths as given where two folders share a name."""
    bases = [os.path.basename(os.path.normpath(d)) for d in run_dirs]
    return [b if bases.count(b) == 1 else os.path.normpath(d) for b, d in zip(bases, run_dirs)]


def write_learning_curves(run_dirs: Sequence[str], path: str) -> str:
    """Read the metrics of ``run_dirs`` and write their learning curves to ``path`` (PNG)."""
    runs = {name: read_metrics(d) for name, d in zip(run_names(run_dirs), run_dirs)}
    return save_png(learning_curve_figure(runs), path)


def final_value(rows: Sequence[Row], split: str, metric: str) -> float:
    """The last finite value of ``metric`` in ``split`` (NaN when there is none)."""
    _, ys = series(rows, split, metric, "step")
    return ys[-1] if ys else math.nan
