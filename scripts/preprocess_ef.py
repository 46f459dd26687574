"""ASE trajectories / extxyz / ASE databases → S2EF LMDB shards (OC20 layout).

Every frame with stored energy and forces becomes one record (``pos``, ``cell``,
``atomic_numbers``, ``natoms``, ``tags`` from the Atoms, ``fixed`` from ``FixAtoms``,
``y``, ``force``, ``sid``, ``fid``). Input files are spread over ``--num-shards`` LMDB
files written by ``--workers`` processes, each atomically; ``metadata.npz`` holds
``natoms`` per record in dataset order. With ``--ref-energies refs.json``
(``{"Cu": -3.5, "O": ...}`` eV) the summed references are subtracted from every energy;
with ``--graph-cutoff 6`` each record also stores its radius graph (``edge_index``,
``cell_offsets``), so loading needs no graph construction.

    python scripts/preprocess_ef.py --out OUT --num-shards 4 --workers 4 a.traj b.extxyz c.db
"""
from __future__ import annotations

import argparse
import json

from spinconv_train.datasets.preprocess import preprocess_ef


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("inputs", nargs="+", help="ASE-readable files (.traj, .extxyz, .db, ...)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--num-shards", type=int, default=1, help="LMDB files to write")
    parser.add_argument("--workers", type=int, default=1, help="processes writing shards")
    parser.add_argument("--ref-energies", default=None, help="JSON {element: eV} subtracted per atom")
    parser.add_argument("--graph-cutoff", type=float, default=None,
                        help="also store each record's radius graph with this cutoff (Å)")
    parser.add_argument("--max-neighbors", type=int, default=40, help="neighbour cap of the stored graph")
    parser.add_argument("--stress", action="store_true",
                        help="also store each frame's stress (every frame must have one) to train on it")
    args = parser.parse_args(argv)
    graph = None if args.graph_cutoff is None else (args.graph_cutoff, args.max_neighbors)
    print(json.dumps(preprocess_ef(args.inputs, args.out, args.num_shards, args.workers, args.ref_energies,
                                   graph=graph, stress=args.stress)))


if __name__ == "__main__":
    main()
