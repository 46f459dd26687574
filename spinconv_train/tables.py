"""Plain-text metric tables for the terminal."""
from __future__ import annotations

from collections.abc import Mapping


def format_table(rows: Mapping[str, Mapping[str, float]]) -> str:
    """A plain-text table: one column per row label, one line per metric."""
    labels = list(rows)
    names: list[str] = []
    for metrics in rows.values():
        names += [n for n in metrics if n not in names]
    width = max([len(n) for n in names] + [6])
    lines = [" " * width + "".join(f"  {label:>14}" for label in labels)]
    for name in names:
        cells = "".join(f"  {rows[label].get(name, float('nan')):>14.6g}" for label in labels)
        lines.append(f"{name:<{width}}{cells}")
    return "\n".join(lines)
