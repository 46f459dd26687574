"""LmdbDataset: OC20 layout, old PyG pickles, lazy per-process handles, bad input."""
from __future__ import annotations

import copyreg
import os
import pickle
import warnings

import lmdb
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torch_geometric.data import Data

from spinconv_train.datasets import DatasetError, LmdbDataset, collate, lmdb_io
from spinconv_train.datasets.lmdb_io import LmdbWriter, write_lmdb
from spinconv_train.registry import DATASETS


class _OldPygRecord:
    """Pickles as PyG 1.x did: class torch_geometric Data, state a plain __dict__ (no _store)."""

    def __init__(self, **fields):
        self.fields = fields

    def __reduce__(self):
        state = {"x": None, "edge_index": None, "edge_attr": None, "y": None, "pos": None,
                 "normal": None, "face": None, "__num_nodes__": None}
        state.update(self.fields)
        return (copyreg._reconstructor, (Data, object, None), state)


def _put_raw(path, items):
    env = lmdb.open(str(path), subdir=False, map_size=1 << 24, lock=False)
    with env.begin(write=True) as txn:
        for key, value in items:
            txn.put(key, value)
    env.close()


def test_registered_names():
    for name in ("lmdb", "trajectory_lmdb", "single_point_lmdb"):
        assert DATASETS.get(name) is LmdbDataset


def test_reads_current_pyg_records_across_shards(shard_folder, records, same_record):
    ds = LmdbDataset({"src": str(shard_folder), "required_fields": ["y", "force"]})
    assert len(ds) == 12 and len(ds.shards) == 2
    for i in (0, 4, 5, 11, -1):
        got = ds[i]
        same_record(got, records[i])
        assert got.natoms.dtype == torch.long and got.natoms.shape == (1,)
        assert got.cell.shape == (1, 3, 3)
        assert got.pbc.tolist() == [[True, True, True]]  # OC20 rule: non-zero cell, no pbc stored
    with pytest.raises(IndexError):
        ds[12]


def test_single_file_src(shard_folder, records, same_record):
    ds = LmdbDataset({"src": str(shard_folder / "b.lmdb")})
    assert len(ds) == 7
    same_record(ds[0], records[5])


def test_rebuilds_pyg1_pickles(tmp_path):
    pos = torch.arange(12.0).reshape(4, 3)
    old = _OldPygRecord(pos=pos, cell=torch.eye(3).reshape(1, 3, 3) * 5, atomic_numbers=torch.tensor([29.0, 29, 8, 1]),
                        natoms=4, tags=torch.tensor([0, 1, 2, 2]), fixed=torch.tensor([1.0, 0, 0, 0]),
                        y=-1.25, force=torch.ones(4, 3), sid=7, fid=3)
    raw = pickle.dumps(old, protocol=2)
    plain = pickle.loads(raw)  # what current PyG makes of it: a Data without _store
    assert type(plain) is Data and "_store" not in plain.__dict__
    with pytest.raises(RuntimeError):
        _ = plain.pos
    path = tmp_path / "old.lmdb"
    _put_raw(path, [(b"0", raw), (b"length", pickle.dumps(1))])
    data = LmdbDataset({"src": str(path), "required_fields": ["y", "force"]})[0]
    assert torch.equal(data.pos, pos) and data.y == -1.25 and data.sid == 7 and data.fid == 3
    assert data.natoms.tolist() == [4] and data.tags.tolist() == [0, 1, 2, 2]
    assert "x" not in data.keys()  # the None placeholders of PyG 1.x are dropped


def test_torch_default_pickles_without_length_key(tmp_path, records, same_record):
    """Records pickled the plain way (torch's own tensor pickling), no "length" entry."""
    path = tmp_path / "nolen.lmdb"
    _put_raw(path, [(f"{i}".encode(), pickle.dumps(r)) for i, r in enumerate(records[:3])])
    ds = LmdbDataset({"src": str(path)})
    assert len(ds) == 3
    same_record(ds[2], records[2])


def test_written_records_load_with_plain_pickle(shard_folder, records, same_record):
    """Our fast tensor pickling still gives ordinary Data of tensors to any pickle.loads."""
    env = lmdb.open(str(shard_folder / "a.lmdb"), subdir=False, readonly=True, lock=False)
    with env.begin() as txn:
        data = pickle.loads(txn.get(b"3"))
        assert pickle.loads(txn.get(b"length")) == 5
    env.close()
    assert isinstance(data, Data) and isinstance(data.pos, torch.Tensor)
    same_record(data, records[3])


def _check_loader(ds, records, context):
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate, multiprocessing_context=context)
    ys = torch.cat([batch.y for batch in loader])
    assert torch.allclose(ys, torch.tensor([r.y for r in records]))


def test_dataloader_fork_workers_after_parent_opened(shard_folder, records):
    ds = LmdbDataset({"src": str(shard_folder)})
    ds[0]  # the parent opens its handles before the workers fork
    parent_env = lmdb_io._SHARED[os.path.realpath(ds.shards[0])]
    _check_loader(ds, records, "fork")
    assert lmdb_io._SHARED[os.path.realpath(ds.shards[0])] is parent_env  # parent's handle untouched
    ds[1]


@pytest.mark.slow
def test_dataloader_spawn_workers(shard_folder, records):
    ds = LmdbDataset({"src": str(shard_folder)})
    ds[0]
    _check_loader(ds, records, "spawn")


def test_two_datasets_on_one_file_and_reopen_after_fork(shard_folder):
    ds = LmdbDataset({"src": str(shard_folder)})
    other = LmdbDataset({"src": str(shard_folder / "b.lmdb")})  # same file, same process
    assert float(other[1].y) == float(ds[6].y)
    clone = pickle.loads(pickle.dumps(ds))
    assert float(clone[6].y) == float(ds[6].y)
    before = ds._env(1)
    lmdb_io._SHARED_PID = -1  # as seen from a forked child: inherited handles are replaced
    assert ds._env(1) is not before
    assert float(ds[6].y) == float(other[1].y)


def test_unknown_config_key(shard_folder):
    with pytest.raises(DatasetError, match="'srcs'"):
        LmdbDataset({"src": str(shard_folder), "srcs": 1})


def test_missing_src(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        LmdbDataset({"src": str(tmp_path / "none")})
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no \\*.lmdb"):
        LmdbDataset({"src": str(tmp_path / "empty")})


def test_truncated_file_names_file(tmp_path, records):
    path = tmp_path / "t.lmdb"
    write_lmdb(str(path), records * 20)
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:
        handle.truncate(size // 3)
    with pytest.raises(DatasetError) as err:
        ds = LmdbDataset({"src": str(path)})
        for i in range(len(ds)):
            ds[i]
    assert str(path) in str(err.value)


def test_garbage_file_names_file(tmp_path):
    path = tmp_path / "g.lmdb"
    path.write_bytes(b"not an lmdb" * 1000)
    with pytest.raises(DatasetError, match=str(path)):
        LmdbDataset({"src": str(path)})


def test_corrupt_record_names_index(tmp_path, records):
    path = tmp_path / "c.lmdb"
    _put_raw(path, [(b"0", pickle.dumps(records[0])), (b"1", b"\x80\x04garbage"), (b"length", pickle.dumps(2))])
    ds = LmdbDataset({"src": str(path)})
    ds[0]
    with pytest.raises(DatasetError, match=r"record 1.*unpickle"):
        ds[1]


def _single(tmp_path, record, name="r.lmdb", **config):
    path = tmp_path / name
    write_lmdb(str(path), [record])
    return LmdbDataset({"src": str(path), **config})


@pytest.mark.parametrize("field", ["force", "y"])
def test_missing_required_field(tmp_path, records, field):
    record = records[1]
    del record[field]
    with pytest.raises(DatasetError, match=rf"r.lmdb, record 0, field '{field}'"):
        _single(tmp_path, record, required_fields=["y", "force"])[0]


def test_nan_target(tmp_path, records):
    record = records[2]
    record.force[1, 2] = float("nan")
    with pytest.raises(DatasetError, match=r"record 0, field 'force': contains NaN"):
        _single(tmp_path, record)[0]
    record = records[3]
    record.y = float("nan")
    with pytest.raises(DatasetError, match=r"field 'y'"):
        _single(tmp_path, record, name="y.lmdb")[0]


def test_wrong_shape(tmp_path, records):
    record = records[4]
    record.force = record.force[:-1]
    with pytest.raises(DatasetError, match=r"field 'force': expected shape"):
        _single(tmp_path, record)[0]
    record = records[5]
    record.pos = record.pos[:, :2]
    with pytest.raises(DatasetError, match=r"field 'pos'"):
        _single(tmp_path, record, name="p.lmdb")[0]


def test_unknown_element(tmp_path, records):
    record = records[6]
    record.atomic_numbers[0] = 130.0
    with pytest.raises(DatasetError, match=r"field 'atomic_numbers': unknown element"):
        _single(tmp_path, record)[0]
    record = records[7]
    record.atomic_numbers[:] = 29.0
    record.atomic_numbers[0] = 8.0
    with pytest.raises(DatasetError, match=r"not in the configured elements"):
        _single(tmp_path, record, name="e.lmdb", elements=[29])[0]


def test_writer_is_atomic_on_error(tmp_path, records):
    path = tmp_path / "out.lmdb"
    with pytest.raises(RuntimeError):
        with LmdbWriter(str(path)) as writer:
            writer.extend(records)
            raise RuntimeError("crash mid-write")
    assert os.listdir(tmp_path) == []
    write_lmdb(str(path), records[:2])  # an existing file is replaced only on success
    with pytest.raises(RuntimeError):
        with LmdbWriter(str(path)) as writer:
            writer.extend(records)
            raise RuntimeError("crash")
    assert len(LmdbDataset({"src": str(path)})) == 2
    assert sorted(os.listdir(tmp_path)) == ["out.lmdb"]


def test_writer_grows_map(tmp_path):
    big = [Data(pos=torch.rand(2000, 3), atomic_numbers=torch.ones(2000), y=float(i)) for i in range(10)]
    path = tmp_path / "big.lmdb"
    with LmdbWriter(str(path), map_size=1 << 16, batch=3) as writer:
        writer.extend(big)
    ds = LmdbDataset({"src": str(path)})
    assert len(ds) == 10 and torch.equal(ds[9].pos, big[9].pos)


def test_get_natoms_metadata_and_fallback(shard_folder, records):
    ds = LmdbDataset({"src": str(shard_folder)})
    expected = np.array([int(r.natoms) for r in records])
    with pytest.warns(RuntimeWarning, match="reading natoms"):
        assert np.array_equal(ds.get_natoms(), expected)
    np.savez(shard_folder / "metadata.npz", natoms=expected + 1)  # proves the file is used
    assert np.array_equal(ds.get_natoms(), expected + 1)


def test_src_list_concatenates_sources_with_their_metadata(tmp_path):
    from trainers.trainer_testing import emt_slabs, write_split

    a = write_split(str(tmp_path / "a"), emt_slabs(3, seed=1))
    b = write_split(str(tmp_path / "b"), emt_slabs(2, seed=2))
    both = LmdbDataset({"src": [a, b]})
    first, second = LmdbDataset({"src": a}), LmdbDataset({"src": b})
    assert len(both) == 5 and both.sources == [a, b]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # both metadata.npz files are used: no read pass
        natoms = both.get_natoms()
    assert natoms.tolist() == first.get_natoms().tolist() + second.get_natoms().tolist()
    for i, record in enumerate([first[k] for k in range(3)] + [second[k] for k in range(2)]):
        assert torch.equal(both[i].pos, record.pos) and float(both[i].y) == float(record.y)
    os.remove(os.path.join(b, "metadata.npz"))
    with pytest.warns(RuntimeWarning, match=r"no .*b/metadata.npz: reading natoms from all 2 records of"):
        assert LmdbDataset({"src": [a, b]}).get_natoms().tolist() == natoms.tolist()


def test_an_ase_file_given_as_lmdb_names_the_ase_dataset(tmp_path):
    from ase.build import molecule
    from ase.io import write

    path = tmp_path / "frames.extxyz"
    write(path, molecule("H2O"))
    with pytest.raises(DatasetError) as info:
        LmdbDataset({"src": str(path)})
    message = str(info.value)
    assert str(path) in message and "extxyz" in message and "name: ase" in message
    assert "corrupt or truncated" not in message
    with pytest.raises(DatasetError, match=r"no \*.lmdb files; it holds ASE-readable files \(frames.extxyz\).*name: ase"):
        LmdbDataset({"src": str(tmp_path)})
    garbage = tmp_path / "broken.lmdb"
    garbage.write_bytes(b"\x00\x01" * 3000)
    with pytest.raises(DatasetError, match="corrupt or truncated"):
        LmdbDataset({"src": str(garbage)})


def test_truncated_metadata_names_the_file_and_the_fix(shard_folder):
    from spinconv_train.datasets.lmdb_metadata import write_lmdb_metadata

    write_lmdb_metadata(str(shard_folder))
    meta = shard_folder / "metadata.npz"
    meta.write_bytes(meta.read_bytes()[:40])
    with pytest.raises(DatasetError) as info:
        LmdbDataset({"src": str(shard_folder)}).get_natoms()
    message = str(info.value)
    assert str(meta) in message and "truncated or corrupt" in message
    assert f"spinconv-lmdb-metadata --overwrite {shard_folder}" in message
