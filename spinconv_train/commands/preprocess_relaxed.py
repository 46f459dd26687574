"""Initial/relaxed structure pairs → IS2RE/IS2RS LMDB (``OUT/data.lmdb`` + ``metadata.npz``).

Pairs come from relaxation trajectories (first frame = initial, last = relaxed) or from
two files whose frames pair up in order (``--initial``, ``--relaxed``). Each record holds
the initial structure plus ``y_init``, ``y_relaxed`` and ``pos_relaxed``, as OC20's
IS2RE/IS2RS files. ``--ref-energies``, ``--out`` and ``--overwrite`` as in preprocess_ef.py.

    spinconv-preprocess-relaxed --out OUT relax1.traj relax2.traj
    spinconv-preprocess-relaxed --out OUT --initial init.extxyz --relaxed final.extxyz

``spinconv-preprocess-relaxed`` is installed with the package; from a checkout ``python scripts/preprocess_relaxed.py`` is the same.
"""
from __future__ import annotations

import argparse
import sys

from spinconv_train.commands import report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trajectories", nargs="*", help="relaxation trajectories (first/last frames)")
    parser.add_argument("--out", required=True, help="output folder (new or empty; see --overwrite)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the content of an output folder of earlier LMDB output (built beside it, "
                             "then swapped in)")
    parser.add_argument("--initial", default=None, help="file of initial structures")
    parser.add_argument("--relaxed", default=None, help="file of relaxed structures, same order")
    parser.add_argument("--ref-energies", default=None, help="JSON {element: eV} subtracted per atom")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from spinconv_train.datasets import DatasetError
    from spinconv_train.datasets.preprocess import preprocess_relaxed

    return report(lambda: preprocess_relaxed(args.out, args.trajectories, args.initial, args.relaxed,
                                             args.ref_energies, overwrite=args.overwrite), (DatasetError,))


if __name__ == "__main__":
    sys.exit(main())
