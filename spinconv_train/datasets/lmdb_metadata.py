"""``metadata.npz`` (atoms and element range per record) for OC20-layout LMDBs written elsewhere.

The balanced batch sampler needs every record's atom count before the first batch, and the
element check (``check_atomic_numbers``) each record's smallest and largest atomic number
(``natoms``, ``z_min``, ``z_max``, one entry per record in dataset order). Our
preprocessing scripts write it beside the shards; for LMDBs from other sources (the OC20
downloads, files written by the reference code) :func:`write_lmdb_metadata` reads each
record once, shard by shard (in parallel with ``workers``), and writes the file
atomically where :class:`LmdbDataset` looks for it (``metadata_path``).
"""
from __future__ import annotations

import glob
import multiprocessing
import os
import time
from typing import Any

import numpy as np

from .errors import DatasetError
from .lmdb_dataset import METADATA_NAME, LmdbDataset, find_shards, metadata_path, record_summary
from .lmdb_io import save_npz_atomic


def shard_metadata(path: str) -> np.ndarray:
    """``(natoms, z_min, z_max)`` rows of every record of one ``.lmdb`` file, in record order."""
    dataset = LmdbDataset({"src": path, "validate": False})
    try:
        return np.array([record_summary(dataset.raw_record(i)) for i in range(len(dataset))],
                        dtype=np.int64).reshape(-1, 3)
    finally:
        dataset.close()


def save_metadata(path: str, rows: np.ndarray) -> None:
    """Write ``metadata.npz`` atomically from ``(natoms, z_min, z_max)`` rows, one per record."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1, 3)
    save_npz_atomic(path, natoms=rows[:, 0].copy(), z_min=rows[:, 1].copy(), z_max=rows[:, 2].copy())


def check_own_folder(src: str) -> None:
    """Refuse a single ``.lmdb`` file that shares its folder with other ``.lmdb`` files: the
    folder's ``metadata.npz`` (``metadata_path``) describes all of them together."""
    if os.path.isdir(src):
        return
    folder = os.path.dirname(os.path.abspath(src))
    others = [p for p in glob.glob(os.path.join(folder, "*.lmdb")) if os.path.abspath(p) != os.path.abspath(src)]
    if others:
        raise DatasetError(f"{len(others)} other .lmdb file(s) share this file's folder, whose {METADATA_NAME} "
                           f"describes all of them: pass the folder {folder} instead", src, field="src")


def write_lmdb_metadata(src: str, workers: int = 1, overwrite: bool = False) -> dict[str, Any]:
    """Count the atoms of every record of ``src`` and write its ``metadata.npz``.

    Returns a summary: the metadata path, shards, records, total atoms and seconds taken.
    An existing file is kept unless ``overwrite``."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    shards = find_shards(src)
    check_own_folder(src)
    destination = metadata_path(src)
    if os.path.exists(destination) and not overwrite:
        raise DatasetError(f"{destination} exists; pass overwrite to replace it", src)
    start = time.perf_counter()
    if workers > 1 and len(shards) > 1:
        # spawn: the parent may hold open LMDB handles and torch threads, which fork would copy.
        with multiprocessing.get_context("spawn").Pool(min(workers, len(shards))) as pool:
            parts = pool.map(shard_metadata, shards)
    else:
        parts = [shard_metadata(shard) for shard in shards]
    rows = np.concatenate(parts) if parts else np.zeros((0, 3), dtype=np.int64)
    save_metadata(destination, rows)
    return {"metadata": destination, "shards": len(shards), "records": int(len(rows)),
            "atoms": int(rows[:, 0].sum()), "seconds": round(time.perf_counter() - start, 3)}
