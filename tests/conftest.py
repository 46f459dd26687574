"""Shared fixtures: tiny OC20-layout LMDBs of ASE EMT structures (helpers in
``tests/trainers/trainer_testing.py``)."""
from __future__ import annotations

import pytest
import torch
from trainers.trainer_testing import emt_slabs, write_split


@pytest.fixture(scope="session")
def s2ef_data(tmp_path_factory) -> dict[str, str]:
    """Tiny S2EF LMDB splits: train (8 structures), val (4), test (4, without labels)."""
    root = tmp_path_factory.mktemp("s2ef")
    return {"train": write_split(str(root / "train"), emt_slabs(8, seed=1)),
            "val": write_split(str(root / "val"), emt_slabs(4, seed=2)),
            "test": write_split(str(root / "test"), emt_slabs(4, seed=3, labelled=False))}


@pytest.fixture(scope="session")
def is2re_data(tmp_path_factory) -> dict[str, str]:
    """Tiny IS2RE LMDB splits with ``y_relaxed``."""
    root = tmp_path_factory.mktemp("is2re")
    return {"train": write_split(str(root / "train"), emt_slabs(8, seed=4, relaxed=True)),
            "val": write_split(str(root / "val"), emt_slabs(4, seed=5, relaxed=True))}


@pytest.fixture
def torch_threads():
    """Single-threaded torch for bit-reproducible comparisons."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
