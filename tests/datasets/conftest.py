"""Shared fixtures for the dataset tests: tiny OC20-style records and LMDB files."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from spinconv_train.datasets.lmdb_io import write_lmdb

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_record(n: int, seed: int, sid: int = 0, fid: int = 0) -> Data:
    """A random slab-like record with OC20 dtypes (atomic_numbers float, natoms int)."""
    gen = torch.Generator().manual_seed(seed)
    return Data(
        pos=torch.rand(n, 3, generator=gen) * 8,
        cell=torch.eye(3).unsqueeze(0) * 8,
        atomic_numbers=torch.randint(1, 80, (n,), generator=gen).float(),
        natoms=n,
        tags=torch.randint(0, 3, (n,), generator=gen),
        fixed=(torch.rand(n, generator=gen) < 0.3).float(),
        y=float(torch.randn(1, generator=gen)),
        force=torch.randn(n, 3, generator=gen),
        sid=sid,
        fid=fid,
    )


@pytest.fixture
def records():
    return [make_record(3 + (i * 7) % 11, seed=i, sid=i // 3, fid=i % 3) for i in range(12)]


@pytest.fixture
def shard_folder(tmp_path, records):
    """Twelve records in two shards of 5 and 7."""
    folder = tmp_path / "s2ef"
    folder.mkdir()
    write_lmdb(str(folder / "a.lmdb"), records[:5])
    write_lmdb(str(folder / "b.lmdb"), records[5:])
    return folder


@pytest.fixture
def repo_root():
    return REPO


def assert_same_record(a: Data, b: Data) -> None:
    for key in ("pos", "cell", "atomic_numbers", "tags", "fixed", "force"):
        left, right = torch.as_tensor(getattr(a, key)), torch.as_tensor(getattr(b, key))
        assert torch.equal(left.reshape(-1), right.reshape(-1)), key
    assert float(a.y) == float(b.y)
    assert a.sid == b.sid and a.fid == b.fid
    assert int(torch.as_tensor(a.natoms).reshape(-1)[0]) == int(torch.as_tensor(b.natoms).reshape(-1)[0])


@pytest.fixture
def same_record():
    return assert_same_record


@pytest.fixture
def rng():
    return np.random.default_rng(0)
