"""Seeded train/val/test splits by size."""
from __future__ import annotations

import numpy as np

from .errors import DatasetError

SPLIT_NAMES = ("train", "val", "test")


def split_by_size(
    n: int,
    train_size: int,
    val_size: int,
    test_size: int | None = None,
    seed: int = 0,
    source: str | None = None,
) -> dict[str, np.ndarray]:
    """Disjoint index arrays ``train``/``val``/``test`` from one seeded permutation of ``n``.

    ``test_size=None`` takes every remaining index. The permutation depends only on
    ``n`` and ``seed``, so the same seed gives the same split everywhere.
    """
    sizes = {"train_size": train_size, "val_size": val_size}
    if test_size is not None:
        sizes["test_size"] = test_size
    for key, value in sizes.items():
        if int(value) < 0:
            raise DatasetError(f"{key} must be >= 0, got {value}", source, field=key)
    rest = n - int(train_size) - int(val_size)
    if rest < 0 or (test_size is not None and int(test_size) > rest):
        raise DatasetError(
            f"split sizes train {train_size} + val {val_size} + test {test_size} exceed the "
            f"{n} structures available; set train_size/val_size/test_size in the config",
            source, field="train_size",
        )
    perm = np.random.default_rng(int(seed)).permutation(n)
    a, b = int(train_size), int(train_size) + int(val_size)
    c = n if test_size is None else b + int(test_size)
    return {"train": perm[:a], "val": perm[a:b], "test": perm[b:c]}


def read_index_file(path: str, n: int) -> np.ndarray:
    """Read a whitespace/comma separated file of integer indices (rMD17 ``index_*.csv``)."""
    try:
        with open(path) as handle:
            text = handle.read().replace(",", " ")
    except OSError as err:
        raise DatasetError(f"cannot read index file: {err}", path) from err
    try:
        indices = np.array([int(tok) for tok in text.split()], dtype=np.int64)
    except ValueError as err:
        raise DatasetError(f"index file holds a non-integer entry: {err}", path) from err
    if indices.size and (indices.min() < 0 or indices.max() >= n):
        raise DatasetError(f"indices must lie in 0..{n - 1}, found {indices.min()}..{indices.max()}", path)
    return indices
