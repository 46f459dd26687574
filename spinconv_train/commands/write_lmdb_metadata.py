"""Write ``metadata.npz`` (atoms per record) for OC20-layout LMDBs, e.g. the OC20 downloads.

    spinconv-lmdb-metadata data/s2ef/2M/train data/s2ef/all/val_id --workers 8

Each SRC is a folder of ``*.lmdb`` shards or one ``.lmdb`` file (alone in its folder). The
balanced batch sampler reads the atom counts from this file; without it every training
start reads all records once (minutes for OC20's 2M structures). Our own preprocessing
(``preprocess_ef.py``, ``preprocess_relaxed.py``) writes the file already. Prints one JSON
line per SRC; an existing file is kept unless ``--overwrite``.

``spinconv-lmdb-metadata`` is installed with the package; from a checkout ``python scripts/write_lmdb_metadata.py`` is the same.
"""
from __future__ import annotations

import argparse
import sys

from spinconv_train.commands import report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", nargs="+", help="folder of *.lmdb shards, or one .lmdb file")
    p.add_argument("--workers", type=int, default=1, help="processes reading shards in parallel")
    p.add_argument("--overwrite", action="store_true", help="replace an existing metadata.npz")
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error(f"--workers must be >= 1, got {args.workers}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from spinconv_train.datasets import DatasetError
    from spinconv_train.datasets.lmdb_metadata import write_lmdb_metadata

    codes = [report(lambda: {"src": src, **write_lmdb_metadata(src, args.workers, args.overwrite)}, (DatasetError,))
             for src in args.src]
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())
