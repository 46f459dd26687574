"""check_atomic_numbers: elements beyond a model's embedding are a dataset error naming the
file and the record, found from metadata.npz when it lists them, else by reading."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from datasets.conftest import make_record
from torch.utils.data import Subset

from spinconv_train.datasets import AseDataset, DatasetError, LmdbDataset, check_atomic_numbers
from spinconv_train.datasets.lmdb_io import write_lmdb
from spinconv_train.datasets.lmdb_metadata import write_lmdb_metadata
from spinconv_train.datasets.preprocess import preprocess_ef

MAX_Z = 89  # SpinConv's default max_num_elements 90 embeds 0..89


@pytest.fixture
def folder_with_z110(tmp_path):
    """Two shards of 4 records each; record 2 of the second shard holds a Ds (Z=110) atom."""
    records = [make_record(5, seed=i) for i in range(8)]
    for r in records:
        r.atomic_numbers = torch.clamp(r.atomic_numbers, max=MAX_Z)
    records[6].atomic_numbers[3] = 110.0
    folder = tmp_path / "lmdb"
    folder.mkdir()
    write_lmdb(str(folder / "a.lmdb"), records[:4])
    write_lmdb(str(folder / "b.lmdb"), records[4:])
    return folder


def test_lmdb_element_beyond_embedding_names_file_and_record(folder_with_z110):
    ds = LmdbDataset({"src": str(folder_with_z110)})
    ds[6]  # passes the per-record checks (110 is an element): only the model's range excludes it
    with pytest.raises(DatasetError) as info:
        check_atomic_numbers(ds, MAX_Z, "train")
    message = str(info.value)
    assert f"file {folder_with_z110 / 'b.lmdb'}, record 2, field 'atomic_numbers'" in message
    assert "atomic number 110 (Ds) in the train split" in message and "1..89" in message
    check_atomic_numbers(ds, 110, "train")  # a model embedding it: fine


def test_metadata_is_the_fast_path(folder_with_z110, monkeypatch):
    write_lmdb_metadata(str(folder_with_z110))
    ds = LmdbDataset({"src": str(folder_with_z110)})
    seen = []
    real = LmdbDataset.raw_record
    monkeypatch.setattr(LmdbDataset, "raw_record", lambda self, i: seen.append(i) or real(self, i))
    with pytest.raises(DatasetError, match=r"b.lmdb, record 2.*atomic number 110"):
        check_atomic_numbers(ds, MAX_Z, "val")
    assert seen == []  # no record read: metadata.npz listed the elements


def test_old_metadata_without_elements_falls_back_to_reading(folder_with_z110):
    ds = LmdbDataset({"src": str(folder_with_z110)})
    np.savez(folder_with_z110 / "metadata.npz", natoms=np.full(8, 5))  # as written before z_min/z_max
    with pytest.raises(DatasetError, match=r"b.lmdb, record 2.*atomic number 110"):
        check_atomic_numbers(ds, MAX_Z, "train")


def test_atomic_number_below_one(tmp_path):
    record = make_record(4, seed=0)
    record.atomic_numbers[1] = 0.0
    write_lmdb(str(tmp_path / "z0.lmdb"), [make_record(3, seed=1), record])
    ds = LmdbDataset({"src": str(tmp_path / "z0.lmdb"), "validate": False})
    with pytest.raises(DatasetError, match=r"z0.lmdb, record 1, field 'atomic_numbers': atomic number 0 "):
        check_atomic_numbers(ds, MAX_Z, "test")


def test_subset_maps_to_the_stored_record(folder_with_z110):
    ds = LmdbDataset({"src": str(folder_with_z110)})
    check_atomic_numbers(Subset(ds, [0, 1, 7]), MAX_Z, "train")
    with pytest.raises(DatasetError, match=r"b.lmdb, record 2"):
        check_atomic_numbers(Subset(ds, [0, 6]), MAX_Z, "train")


def _labelled(atoms):
    atoms.calc = SinglePointCalculator(atoms, energy=0.0, forces=np.zeros((len(atoms), 3)))
    return atoms


def test_ase_dataset_names_the_file_and_frame(tmp_path):
    frames = [_labelled(bulk("Cu", cubic=True)) for _ in range(3)]
    heavy = bulk("Cu", cubic=True)
    heavy.numbers[0] = 110
    frames.insert(2, _labelled(heavy))
    write(tmp_path / "frames.extxyz", frames)
    ds = AseDataset({"src": str(tmp_path / "frames.extxyz")})
    with pytest.raises(DatasetError, match=r"frames.extxyz, record 2, field 'atomic_numbers': atomic number 110"):
        check_atomic_numbers(ds, MAX_Z, "train")
    # the same frames through preprocessing: found from the metadata it writes
    preprocess_ef([str(tmp_path / "frames.extxyz")], str(tmp_path / "lmdb"), progress=False)
    with pytest.raises(DatasetError, match=r"data.0000.lmdb, record 2, .*atomic number 110"):
        check_atomic_numbers(LmdbDataset({"src": str(tmp_path / "lmdb")}), MAX_Z, "train")


def test_datasets_without_a_range_are_read(tmp_path):
    class Plain(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return make_record(3, seed=i)

    check_atomic_numbers(Plain(), 118, "train")
    with pytest.raises(DatasetError, match=r"record 0, field 'atomic_numbers'"):
        check_atomic_numbers(Plain(), 5, "train")
