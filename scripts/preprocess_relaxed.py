"""Initial/relaxed structure pairs → IS2RE/IS2RS LMDB (``OUT/data.lmdb`` + ``metadata.npz``).

Pairs come from relaxation trajectories (first frame = initial, last = relaxed) or from
two files whose frames pair up in order (``--initial``, ``--relaxed``). Each record holds
the initial structure plus ``y_init``, ``y_relaxed`` and ``pos_relaxed``, as OC20's
IS2RE/IS2RS files. ``--ref-energies`` as in preprocess_ef.py.

    python scripts/preprocess_relaxed.py --out OUT relax1.traj relax2.traj
    python scripts/preprocess_relaxed.py --out OUT --initial init.extxyz --relaxed final.extxyz
"""
from __future__ import annotations

import argparse
import json

from spinconv_train.datasets.preprocess import preprocess_relaxed


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trajectories", nargs="*", help="relaxation trajectories (first/last frames)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--initial", default=None, help="file of initial structures")
    parser.add_argument("--relaxed", default=None, help="file of relaxed structures, same order")
    parser.add_argument("--ref-energies", default=None, help="JSON {element: eV} subtracted per atom")
    args = parser.parse_args(argv)
    print(json.dumps(preprocess_relaxed(args.out, args.trajectories, args.initial, args.relaxed,
                                        args.ref_energies)))


if __name__ == "__main__":
    main()
