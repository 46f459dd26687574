"""Plot runs: learning curves of one or more run folders, and parity plots of predictions.

    spinconv-plot runs/schnet runs/spinconv [--out DIR] [--labels SRC]

Writes ``learning_curves.png`` (train loss, val force and energy MAE against step, epoch
and wall time; one line per run) and, for each run folder with a ``predictions.npz``
(``main.py --mode predict``), ``parity.png`` (energies and force components against the
labelled split the predictions were made on: the run's ``dataset.test``, or ``dataset.<--split>``
when ``--mode predict --split`` chose another, or ``--labels``).
With one run and no ``--out`` the files go into the run folder; with several runs
``--out`` is needed for the shared learning curves (parity plots stay in each run folder).
Prints one JSON line listing the files written.

``spinconv-plot`` is installed with the package; from a checkout ``python scripts/plot.py`` is the same.
"""
from __future__ import annotations

import argparse
import os
import sys

from spinconv_train.commands import report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders of main.py (metrics.jsonl/csv)")
    p.add_argument("--out", help="folder for learning_curves.png (default: the run folder; needed for several runs)")
    p.add_argument("--labels", help="labelled LMDB the predictions were made on (default: the run's dataset.<--split>)")
    p.add_argument("--split", default="test", help="the split `--mode predict` predicted (default test)")
    p.add_argument("--no-parity", action="store_true", help="skip parity plots even where predictions.npz exists")
    args = p.parse_args(argv)
    if args.out is None and len(args.run_dirs) > 1:
        p.error("several RUN_DIRs share one learning-curve figure: give --out DIR")
    return args


def make_plots(run_dirs: list[str], out: str | None, labels: str | None = None,
               parity: bool = True, split: str = "test") -> dict[str, list[str]]:
    """Write the learning curves of the runs with training or validation rows and the parity
    plots of the runs with predictions; returns ``{"written": [paths]}``."""
    from spinconv_train.plots import learning_curves
    from spinconv_train.plots import parity as parity_plots
    from spinconv_train.plots.figure import save_png
    from spinconv_train.plots.metrics_io import read_metrics

    for run_dir in run_dirs:
        if not os.path.isdir(run_dir):
            raise FileNotFoundError(f"{run_dir}: not a folder")
    predicted = [d for d in run_dirs if parity and os.path.exists(os.path.join(d, parity_plots.PREDICTIONS))]
    runs = {name: read_metrics(d) for name, d in zip(learning_curves.run_names(run_dirs), run_dirs)}
    curves = {name: rows for name, rows in runs.items()
              if any(learning_curves.curve_series({name: rows}, prefix, metric, "step")
                     for prefix, metric, _ in learning_curves.PANELS)}
    if not curves and not predicted:
        raise ValueError(f"{', '.join(run_dirs)}: no training or validation rows in the metrics files and no "
                         f"{parity_plots.PREDICTIONS}: nothing to plot")
    written = []
    if curves:
        folder = out if out is not None else run_dirs[0]
        path = os.path.join(folder, learning_curves.FILE_NAME)
        written.append(save_png(learning_curves.learning_curve_figure(curves), path))
    for run_dir in predicted:
        written.append(parity_plots.write_parity(run_dir, os.path.join(run_dir, parity_plots.FILE_NAME), labels, split))
    return {"written": written}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from spinconv_train.config import ConfigError
    from spinconv_train.datasets import DatasetError

    return report(lambda: make_plots(args.run_dirs, args.out, args.labels, not args.no_parity, args.split),
                  (OSError, ValueError, ConfigError, DatasetError))


if __name__ == "__main__":
    sys.exit(main())
