"""Molecular-dynamics traces from ``md.csv`` (``spinconv-md``): total and conserved energy,
and temperature, against step."""
from __future__ import annotations

import csv
import os
from typing import Any

from spinconv_train.plots.figure import new_figure, save_png

CSV_NAME = "md.csv"
FILE_NAME = "md.png"
COLUMNS = ("step", "total_ev", "conserved_ev", "temperature_k")


def read_md_csv(path: str) -> dict[str, list[float]]:
    """The columns of ``md.csv`` as float lists; a missing column or bad value names the file and line."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing columns {missing} (found {reader.fieldnames})")
        columns: dict[str, list[float]] = {name: [] for name in reader.fieldnames or []}
        for number, row in enumerate(reader, start=2):
            for name in columns:
                try:
                    columns[name].append(float(row[name]))
                except (TypeError, ValueError):
                    raise ValueError(f"{path}, line {number}: column {name!r} is not a number: {row[name]!r}") \
                        from None
    return columns


def md_figure(columns: dict[str, list[float]]) -> Any:
    """Top: total and conserved energy minus their step-0 values (eV); bottom: temperature (K)."""
    fig = new_figure(2, 1, width=6.0, height=3.0)
    top, bottom = fig.axes
    steps = columns["step"]
    for name, label in (("total_ev", "total energy"), ("conserved_ev", "conserved energy")):
        values = columns[name]
        top.plot(steps, [v - values[0] for v in values], label=label)
    top.set_ylabel("drift from step 0 (eV)")
    top.legend(fontsize="small")
    top.grid(True, alpha=0.3)
    bottom.plot(steps, columns["temperature_k"], label="temperature")
    bottom.set_xlabel("MD step")
    bottom.set_ylabel("temperature (K)")
    bottom.grid(True, alpha=0.3)
    return fig


def write_md_plot(output_dir: str) -> str:
    """Write ``output_dir/md.png`` from ``output_dir/md.csv``; return its path."""
    columns = read_md_csv(os.path.join(output_dir, CSV_NAME))
    if not columns["step"]:
        raise ValueError(f"{os.path.join(output_dir, CSV_NAME)}: no rows")
    return save_png(md_figure(columns), os.path.join(output_dir, FILE_NAME))
