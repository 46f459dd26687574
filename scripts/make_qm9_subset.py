"""Write a seeded random subset of QM9 (from the PyPI package qm9pack) as a compact npz.

The npz holds ``ids`` (gdb index), ``natoms``, ``z`` and ``pos`` (Å, concatenated) and
``props`` (M, 12) in the original units (D, bohr^3, Ha, bohr^2, cal/(mol K)); the
``qm9`` dataset converts units and subtracts atom references when it reads it.
Needs ``pip install -e .[qm9]``.
"""
from __future__ import annotations

import argparse
import csv
import json
import os

import numpy as np

from spinconv_train.datasets.lmdb_io import save_npz_atomic
from spinconv_train.datasets.qm9_formats import qm9pack_csv_files, read_qm9pack, to_npz_arrays


def all_ids(files: list[str]) -> np.ndarray:
    """Every gdb index in the CSV files, sorted."""
    csv.field_size_limit(1 << 30)
    ids = []
    for path in files:
        with open(path, newline="") as handle:
            reader = csv.reader(handle)
            column = next(reader).index("Index")
            ids.extend(int(row[column]) for row in reader)
    return np.sort(np.array(ids, dtype=np.int64))


def select_ids(files: list[str], size: int, seed: int) -> np.ndarray:
    """``size`` gdb indices drawn without replacement with a seeded generator, sorted."""
    ids = all_ids(files)
    if size > len(ids):
        raise SystemExit(f"--size {size} exceeds the {len(ids)} molecules available")
    return np.sort(np.random.default_rng(seed).choice(ids, size=size, replace=False))


def make_subset(out: str, size: int = 2000, seed: int = 0, files: list[str] | None = None) -> dict:
    """Write the subset npz to ``out``; returns a short summary."""
    files = files or qm9pack_csv_files()
    ids = select_ids(files, size, seed)
    table = read_qm9pack(files, ids=set(ids.tolist()))
    order = np.argsort(table.ids, kind="stable")
    if not np.array_equal(table.ids[order], ids):
        raise SystemExit("qm9pack rows do not match the selected ids (duplicate or missing Index values)")
    save_npz_atomic(out, **to_npz_arrays(table))
    return {"out": out, "molecules": int(len(table.ids)), "atoms": int(table.natoms.sum())}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=2000, help="molecules in the subset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join("data", "qm9", "qm9_subset.npz"))
    args = parser.parse_args(argv)
    print(json.dumps(make_subset(args.out, args.size, args.seed)))


if __name__ == "__main__":
    main()
