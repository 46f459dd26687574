"""``dataset.<split>.every: k``: every k-th record, with the underlying files' names in errors."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from spinconv_train.config import ConfigError, load_config
from spinconv_train.datasets.element_refs import energies_and_counts
from spinconv_train.datasets.elements import record_origin
from spinconv_train.tasks.data import build_dataset, dataset_natoms

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "s2ef", "oc20_mini", "schnet.yml")
VAL = os.path.join(ROOT, "data", "oc20_mini", "s2ef", "val_id")


def _config(*overrides: str):
    return load_config(CONFIG, [f"--dataset.val.src={VAL}", *overrides])


def test_every_kth_record_of_the_split():
    full = build_dataset(_config(), "val")
    strided = build_dataset(_config("--dataset.val.every=3"), "val")
    assert len(strided) == (len(full) + 2) // 3
    for i in range(len(strided)):
        assert torch.equal(strided[i].pos, full[3 * i].pos)
        assert record_origin(strided, i) == record_origin(full, 3 * i)
    assert np.array_equal(dataset_natoms(strided), dataset_natoms(full)[::3])
    energies, counts = energies_and_counts(strided)
    full_energies, full_counts = energies_and_counts(full)
    assert np.array_equal(energies, full_energies[::3]) and np.array_equal(counts, full_counts[::3])


@pytest.mark.parametrize("value", ["0", "-2", "1.5", "true"])
def test_a_bad_stride_names_the_key(value):
    with pytest.raises(ConfigError, match=r"dataset\.val\.every"):
        build_dataset(_config(f"--dataset.val.every={value}"), "val")
