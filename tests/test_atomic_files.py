"""Atomic outputs: complete or absent, and a full disk is one clear error naming the output."""
from __future__ import annotations

import builtins
import errno
import os

import numpy as np
import pytest

from spinconv_train.atomic_files import DiskFullError, atomic_path, exchange_paths


def _full_disk_on_write(monkeypatch, folder):
    """Make every file opened for writing in ``folder`` fail with ENOSPC on write."""
    real_open = builtins.open

    class FullFile:
        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    def fake_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        if any(c in mode for c in "wa") and os.path.dirname(os.path.abspath(str(file))) == str(folder):
            return FullFile(handle)
        return handle

    monkeypatch.setattr(builtins, "open", fake_open)


def test_full_disk_is_one_error_naming_the_path(tmp_path, monkeypatch):
    target = tmp_path / "out.txt"
    target.write_text("old content\n")
    _full_disk_on_write(monkeypatch, tmp_path)
    with pytest.raises(DiskFullError) as info:
        with atomic_path(str(target)) as tmp, open(tmp, "w") as handle:
            handle.write("new content\n")
    err = info.value
    assert "no space left on device" in str(err) and str(target) in str(err)
    assert err.errno == errno.ENOSPC and isinstance(err, OSError)
    # not chained: the traceback shows this error alone
    assert err.__cause__ is None and err.__suppress_context__
    monkeypatch.undo()
    assert target.read_text() == "old content\n"
    assert sorted(os.listdir(tmp_path)) == ["out.txt"]  # no temporary file left behind


def test_full_disk_through_the_writers(tmp_path, monkeypatch):
    from spinconv_train.config import write_text_atomic
    from spinconv_train.datasets.lmdb_io import save_npz_atomic

    _full_disk_on_write(monkeypatch, tmp_path)
    for write, name in ((lambda p: write_text_atomic(p, "x"), "a.json"),
                        (lambda p: save_npz_atomic(p, natoms=np.arange(3)), "metadata.npz")):
        path = str(tmp_path / name)
        with pytest.raises(DiskFullError, match=f"no space left on device while writing {path}"):
            write(path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_disk_full_error_survives_pickling():
    import pickle

    err = pickle.loads(pickle.dumps(DiskFullError("/data/out")))
    assert isinstance(err, DiskFullError) and err.path == "/data/out" and "/data/out" in str(err)


def test_other_errors_pass_unchanged(tmp_path):
    with pytest.raises(PermissionError):
        with atomic_path(str(tmp_path / "x")):
            raise PermissionError(errno.EACCES, "denied")
    assert os.listdir(tmp_path) == []


def test_command_reports_a_full_disk_in_one_line(tmp_path, monkeypatch, capsys):
    from spinconv_train.commands import report

    path = str(tmp_path / "out.npz")

    def produce():
        raise DiskFullError(path)

    assert report(produce, (ValueError,)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: no space left on device") and path in err


class _FullDiskEnv:
    """An LMDB environment whose write transactions fail as py-lmdb reports ENOSPC."""

    def __init__(self, env):
        self.env = env

    def begin(self, write=False):
        if write:
            import lmdb

            raise lmdb.Error("mdb_txn_commit: No space left on device")
        return self.env.begin()

    def __getattr__(self, name):
        return getattr(self.env, name)


def _full_disk_lmdb(monkeypatch):
    import lmdb

    real_open = lmdb.open

    def fake_open(path, **kwargs):
        env = real_open(path, **kwargs)
        return env if kwargs.get("readonly") else _FullDiskEnv(env)

    monkeypatch.setattr(lmdb, "open", fake_open)


def test_full_disk_while_writing_an_lmdb(tmp_path, monkeypatch):
    import torch
    from torch_geometric.data import Data

    from spinconv_train.datasets.lmdb_io import write_lmdb

    _full_disk_lmdb(monkeypatch)
    path = str(tmp_path / "data.lmdb")
    with pytest.raises(DiskFullError, match=f"no space left on device while writing {path}") as info:
        write_lmdb(path, [Data(pos=torch.zeros(2, 3)) for _ in range(3)])
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert os.listdir(tmp_path) == []


def test_preprocess_on_a_full_disk_is_one_error_line(tmp_path, monkeypatch, capsys):
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from spinconv_train.commands import preprocess_ef

    atoms = bulk("Cu", cubic=True)
    atoms.calc = SinglePointCalculator(atoms, energy=0.0, forces=np.zeros((len(atoms), 3)))
    write(tmp_path / "in.extxyz", [atoms, atoms])
    _full_disk_lmdb(monkeypatch)
    out = tmp_path / "out"
    assert preprocess_ef.main([str(tmp_path / "in.extxyz"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.endswith(f"error: {DiskFullError(str(out))}\n")  # names the output folder, not a temporary
    assert "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == ["in.extxyz"]  # nothing left behind


def test_exchange_paths_swaps_two_folders(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_text("a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "y").write_text("b")
    if not exchange_paths(str(tmp_path / "a"), str(tmp_path / "b")):
        pytest.skip("this system or file system cannot exchange paths")
    assert os.listdir(tmp_path / "a") == ["y"] and os.listdir(tmp_path / "b") == ["x"]
    with pytest.raises(FileNotFoundError):
        exchange_paths(str(tmp_path / "a"), str(tmp_path / "missing"))
