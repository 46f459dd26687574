"""ASE trajectories / extxyz / ASE databases → S2EF LMDB shards (OC20 layout).

Every frame with stored energy and forces becomes one record (``pos``, ``cell``,
``atomic_numbers``, ``natoms``, ``tags`` from the Atoms, ``fixed`` from ``FixAtoms``,
``y``, ``force``, ``sid``, ``fid``). Input files are spread over ``--num-shards`` LMDB
files (a shard holds whole files: at most one shard per input file) written by
``--workers`` processes; ``metadata.npz`` holds ``natoms``, ``z_min`` and ``z_max`` per
record in dataset order. The folder ``--out`` must be new or empty: it is built beside it
and moved into place when complete (a failed run leaves nothing); ``--overwrite``
replaces the content of a folder of earlier output as a whole. With ``--ref-energies refs.json``
(``{"Cu": -3.5, "O": ...}`` eV) the summed references are subtracted from every energy;
with ``--graph-cutoff 6`` each record also stores its radius graph (``edge_index``,
``cell_offsets``), so loading needs no graph construction.

    spinconv-preprocess-ef --out OUT --num-shards 4 --workers 4 a.traj b.extxyz c.db

OC20's S2EF downloads (``N.extxyz.xz`` with ``N.txt.xz`` rows ``random<sid>,frame<fid>,<ref>``):
``--oc20-txt`` takes ``sid``/``fid`` from the rows, ``--oc20-ref-energy`` subtracts ``<ref>``
(adsorption energies, as in OC20's released LMDBs); fixed atoms come from ``move_mask``::

    spinconv-preprocess-ef s2ef_train_200K/*.extxyz.xz --oc20-txt --oc20-ref-energy \
        --out data/s2ef/200k/train --num-shards 8 --workers 8

``spinconv-preprocess-ef`` is installed with the package; from a checkout ``python scripts/preprocess_ef.py`` is the same.
"""
from __future__ import annotations

import argparse
import sys

from spinconv_train.commands import report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("inputs", nargs="+", help="ASE-readable files (.traj, .extxyz, .db, ...)")
    parser.add_argument("--out", required=True, help="output folder (new or empty; see --overwrite)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the content of an output folder of earlier LMDB output (built beside it, "
                             "then swapped in)")
    parser.add_argument("--num-shards", type=int, default=1, help="LMDB files to write")
    parser.add_argument("--workers", type=int, default=1, help="processes writing shards")
    parser.add_argument("--ref-energies", default=None, help="JSON {element: eV} subtracted per atom")
    parser.add_argument("--graph-cutoff", type=float, default=None,
                        help="also store each record's radius graph with this cutoff (Å)")
    parser.add_argument("--max-neighbors", type=int, default=40, help="neighbour cap of the stored graph")
    parser.add_argument("--stress", action="store_true",
                        help="also store each frame's stress (every frame must have one) to train on it")
    parser.add_argument("--oc20-txt", action="store_true",
                        help="OC20 S2EF inputs (N.extxyz.xz): take sid and fid from each file's N.txt(.xz) rows")
    parser.add_argument("--oc20-ref-energy", action="store_true",
                        help="with --oc20-txt: subtract the rows' reference energies (adsorption energies, "
                             "as in OC20's released LMDBs)")
    args = parser.parse_args(argv)
    if args.num_shards < 1:
        parser.error(f"--num-shards must be >= 1, got {args.num_shards}")
    if args.oc20_ref_energy and not args.oc20_txt:
        parser.error("--oc20-ref-energy needs --oc20-txt")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from spinconv_train.datasets import DatasetError
    from spinconv_train.datasets.preprocess import preprocess_ef

    graph = None if args.graph_cutoff is None else (args.graph_cutoff, args.max_neighbors)
    return report(lambda: preprocess_ef(args.inputs, args.out, args.num_shards, args.workers, args.ref_energies,
                                        graph=graph, stress=args.stress, oc20_sidecars=args.oc20_txt,
                                        subtract_reference=args.oc20_ref_energy, overwrite=args.overwrite),
                  (DatasetError,))


if __name__ == "__main__":
    sys.exit(main())
