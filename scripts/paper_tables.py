#!/usr/bin/env python
"""Our OC20 results next to the SpinConv paper's, as a Markdown table.

    python scripts/paper_tables.py --run s2ef-2m-val-id=runs/<validate run> \\
        --run is2rs-all=runs/<run-relaxations run> --run is2re-all-relaxation=runs/<same run>

Each ``--run ROW=DIR`` names one of our run directories (``--mode validate``,
``--mode run-relaxations`` or a training run, whose last validation row is used); rows
without a run show the commands that would produce one. ``--list`` prints the rows.
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from spinconv_train.benchmarks.paper import PAPER_ROWS, RunMetricsError, paper_table

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", default=[], metavar="ROW=DIR", help="a paper row and our run directory")
    p.add_argument("--list", action="store_true", help="list the rows and how to produce them")
    args = p.parse_args(argv)
    if args.list:
        for row in PAPER_ROWS:
            print(f"{row.key}: {row.label} ({row.how})")
        return 0
    runs = {}
    for item in args.run:
        if "=" not in item:
            print(f"error: --run {item!r}: expected ROW=DIR", file=sys.stderr)
            return 2
        key, path = item.split("=", 1)
        runs[key] = path
    try:
        print(paper_table(runs))
    except (KeyError, RunMetricsError) as err:
        print(f"error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
