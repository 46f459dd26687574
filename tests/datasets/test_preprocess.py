"""Preprocessing output folders: new or empty only, --overwrite replaces them whole, a
failure leaves nothing; shard counts are said, never silently capped."""
from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
from ase.io import write
from trainers.trainer_testing import emt_frames, write_ase_inputs

from spinconv_train.commands import preprocess_ef as ef_command
from spinconv_train.commands import preprocess_relaxed as relaxed_command
from spinconv_train.datasets import DatasetError, LmdbDataset
from spinconv_train.datasets.preprocess import preprocess_ef, preprocess_relaxed


@pytest.fixture
def inputs(tmp_path):
    (tmp_path / "in").mkdir()
    return [path for path, _ in write_ase_inputs(str(tmp_path / "in"))]


def _sids(folder):
    ds = LmdbDataset({"src": str(folder)})
    return [int(ds[i].sid) for i in range(len(ds))]


def test_non_empty_output_folder_is_refused(tmp_path, inputs):
    out = tmp_path / "out"
    preprocess_ef(inputs, str(out), num_shards=2, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(DatasetError, match=r"not empty .*--overwrite"):
        preprocess_ef(inputs[:1], str(out), num_shards=1, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_overwrite_replaces_the_whole_folder(tmp_path, inputs):
    """The issue's case: a 1-shard rerun into a 2-shard folder must not keep the old second shard."""
    out = tmp_path / "out"
    preprocess_ef(inputs, str(out), num_shards=2, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["data.0000.lmdb", "data.0001.lmdb", "metadata.npz"]
    summary = preprocess_ef(inputs[:1], str(out), num_shards=1, progress=False, overwrite=True)
    assert summary == {"records": 3, "shards": 1}
    assert sorted(p.name for p in out.iterdir()) == ["data.0000.lmdb", "metadata.npz"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # metadata matches the records: no read pass, no warning
        assert len(LmdbDataset({"src": str(out)}).get_natoms()) == 3
    assert _sids(out) == [0, 0, 0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]  # nothing left beside it


def test_failed_overwrite_keeps_the_old_content(tmp_path, inputs):
    out = tmp_path / "out"
    preprocess_ef(inputs, str(out), num_shards=2, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    frames = emt_frames(2)
    frames[1].calc = None
    write(tmp_path / "bad.traj", frames)
    with pytest.raises(DatasetError, match=r"bad.traj, record 1"):
        preprocess_ef([inputs[0], str(tmp_path / "bad.traj")], str(out), progress=False, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.traj", "in", "out"]


def test_failure_leaves_no_folder(tmp_path, inputs):
    frames = emt_frames(2)
    frames[0].calc = None
    write(tmp_path / "bad.traj", frames)
    out = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(DatasetError):
        preprocess_ef([str(tmp_path / "bad.traj")], str(out), progress=False)
    assert not (tmp_path / "new").exists()  # not even the parent folders it created
    with pytest.raises(DatasetError, match="no input structures"):
        preprocess_relaxed(str(tmp_path / "r"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.traj", "in"]


def test_overwrite_refuses_a_folder_with_other_files(tmp_path, inputs):
    out = tmp_path / "project"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match=r"LMDB output only.*notes.txt"):
        preprocess_ef(inputs, str(out), progress=False, overwrite=True)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_empty_existing_folder_is_used(tmp_path, inputs):
    out = tmp_path / "empty"
    out.mkdir()
    assert preprocess_ef(inputs, str(out), progress=False)["records"] == 9
    assert len(LmdbDataset({"src": str(out)})) == 9


def test_relaxed_overwrite(tmp_path):
    frames = emt_frames(0, n=3)
    write(tmp_path / "r.traj", frames)
    out = tmp_path / "is2re"
    preprocess_relaxed(str(out), [str(tmp_path / "r.traj")])
    with pytest.raises(DatasetError, match="not empty"):
        preprocess_relaxed(str(out), [str(tmp_path / "r.traj")])
    assert preprocess_relaxed(str(out), [str(tmp_path / "r.traj")] * 2, overwrite=True) == {"records": 2}
    assert len(LmdbDataset({"src": str(out)})) == 2


def test_commands_take_overwrite(tmp_path, inputs, capsys):
    out = str(tmp_path / "out")
    assert ef_command.main([*inputs, "--out", out]) == 0
    capsys.readouterr()
    assert ef_command.main([inputs[0], "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--overwrite" in err and out in err
    assert ef_command.main([inputs[0], "--out", out, "--overwrite"]) == 0
    assert json.loads(capsys.readouterr().out.strip())["records"] == 3
    write(tmp_path / "r.traj", emt_frames(0, n=3))
    relaxed_out = str(tmp_path / "is2re")
    assert relaxed_command.main([str(tmp_path / "r.traj"), "--out", relaxed_out]) == 0
    assert relaxed_command.main([str(tmp_path / "r.traj"), "--out", relaxed_out]) == 2
    assert relaxed_command.main([str(tmp_path / "r.traj"), "--out", relaxed_out, "--overwrite"]) == 0


def test_more_shards_than_files_is_said(tmp_path, inputs, capsys):
    with pytest.warns(UserWarning, match=r"--num-shards 8 but 3 input file\(s\): writing 3 shard\(s\)"):
        summary = preprocess_ef(inputs, str(tmp_path / "a"), num_shards=8, progress=False)
    assert summary == {"records": 9, "shards": 3, "shards_requested": 8}
    assert len(list((tmp_path / "a").glob("*.lmdb"))) == 3
    assert ef_command.main([*inputs, "--out", str(tmp_path / "b"), "--num-shards", "5"]) == 0
    captured = capsys.readouterr()
    assert "warning: --num-shards 5 but 3 input file(s): writing 3 shard(s)" in captured.err
    assert json.loads(captured.out.strip())["shards_requested"] == 5
    with pytest.raises(SystemExit):
        ef_command.main([*inputs, "--out", str(tmp_path / "c"), "--num-shards", "0"])


def test_metadata_lists_each_records_elements(tmp_path, inputs):
    out = tmp_path / "out"
    preprocess_ef(inputs, str(out), num_shards=2, progress=False)
    with np.load(out / "metadata.npz") as meta:
        assert meta["natoms"].tolist() == [13] * 9
        assert meta["z_min"].tolist() == [8] * 9 and meta["z_max"].tolist() == [29] * 9  # Cu slab + O


def test_mixed_folder_warning_does_not_suggest_rewriting_the_metadata(tmp_path, inputs):
    """A folder whose shards and metadata disagree (as a pre-fix rerun left it) is reported as
    possibly mixed, with the rebuild as the fix, not a metadata rewrite that would hide it."""
    two, one = tmp_path / "two", tmp_path / "one"
    preprocess_ef(inputs, str(two), num_shards=2, progress=False)
    preprocess_ef(inputs[:1], str(one), num_shards=1, progress=False)
    os.replace(one / "data.0000.lmdb", two / "data.0000.lmdb")
    os.replace(one / "metadata.npz", two / "metadata.npz")
    with pytest.warns(RuntimeWarning) as record:
        LmdbDataset({"src": str(two)}).get_natoms()
    message = str(record[0].message)
    assert "lists 3 records but the shards" in message and "mix the outputs of different runs" in message
    assert "--overwrite" in message and "spinconv-lmdb-metadata" not in message
