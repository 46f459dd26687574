"""metadata.npz for LMDBs written elsewhere (datasets/lmdb_metadata.py, scripts/write_lmdb_metadata.py)."""
from __future__ import annotations

import json
import pickle
import warnings

import numpy as np
import pytest
import torch
from datasets.test_lmdb_dataset import _OldPygRecord, _put_raw
from trainers.trainer_testing import load_script

from spinconv_train.datasets import DatasetError, LmdbDataset
from spinconv_train.datasets.lmdb_metadata import write_lmdb_metadata


def test_written_metadata_is_used_by_the_dataset(shard_folder, records):
    summary = write_lmdb_metadata(str(shard_folder), workers=2)
    expected = [int(r.natoms) for r in records]
    assert summary["shards"] == 2 and summary["records"] == 12 and summary["atoms"] == sum(expected)
    with np.load(shard_folder / "metadata.npz") as meta:
        assert meta["natoms"].tolist() == expected
        assert meta["z_min"].tolist() == [int(r.atomic_numbers.min()) for r in records]
        assert meta["z_max"].tolist() == [int(r.atomic_numbers.max()) for r in records]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no read pass over the records any more
        assert LmdbDataset({"src": str(shard_folder)}).get_natoms().tolist() == expected


def test_reference_pickles_without_natoms_count_their_positions(tmp_path):
    # PyG 1.x pickles as the reference wrote them; the second record has no natoms field.
    first = _OldPygRecord(pos=torch.zeros(4, 3), atomic_numbers=torch.ones(4), natoms=4, cell=torch.eye(3)[None])
    second = _OldPygRecord(pos=torch.zeros(6, 3), atomic_numbers=torch.ones(6), cell=torch.eye(3)[None])
    path = tmp_path / "ref" / "data.0000.lmdb"
    path.parent.mkdir()
    _put_raw(path, [(b"0", pickle.dumps(first, protocol=2)), (b"1", pickle.dumps(second, protocol=2)),
                    (b"length", pickle.dumps(2))])
    summary = write_lmdb_metadata(str(path))
    assert summary["metadata"] == str(path.parent / "metadata.npz")
    assert LmdbDataset({"src": str(path)}).get_natoms().tolist() == [4, 6]


def test_script_refuses_what_it_would_break(shard_folder, tmp_path, capsys):
    script = load_script("write_lmdb_metadata")
    # One shard of a multi-shard folder: the folder's metadata would then describe only it.
    assert script.main([str(shard_folder / "a.lmdb")]) == 2
    assert "pass the folder" in capsys.readouterr().err
    assert not (shard_folder / "metadata.npz").exists()
    assert script.main([str(shard_folder)]) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert line["records"] == 12 and line["src"] == str(shard_folder)
    before = (shard_folder / "metadata.npz").read_bytes()
    assert script.main([str(shard_folder)]) == 2  # exists: kept
    assert "exists" in capsys.readouterr().err and (shard_folder / "metadata.npz").read_bytes() == before
    assert script.main([str(shard_folder), "--overwrite"]) == 0
    missing = str(tmp_path / "nowhere")
    assert script.main([missing]) == 2
    assert missing in capsys.readouterr().err


def test_missing_metadata_warning_names_the_command(shard_folder):
    with pytest.warns(RuntimeWarning, match=f"spinconv-lmdb-metadata {shard_folder}"):
        LmdbDataset({"src": str(shard_folder)}).get_natoms()
    with pytest.raises(DatasetError, match="nowhere"):
        write_lmdb_metadata(str(shard_folder / "nowhere.lmdb"))
