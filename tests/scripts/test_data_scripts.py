"""Data scripts: ASE → LMDB preprocessing, regeneration of the committed data."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from trainers.trainer_testing import emt_frames, load_script, write_ase_inputs

from spinconv_train.datasets import DatasetError, LmdbDataset
from spinconv_train.datasets.preprocess import preprocess_ef, preprocess_relaxed

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_script(name, *args):
    """Run ``scripts/<name>.py`` in a fresh single-threaded interpreter; its last stdout line as JSON.

    A fresh process matters: OpenMP/BLAS thread settings are read when those libraries load,
    and the generators are only fast and reproducible single-threaded.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", f"{name}.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def ase_files(tmp_path):
    return write_ase_inputs(tmp_path)


def test_preprocess_ef_round_trip(tmp_path, ase_files):
    out = tmp_path / "lmdb"
    summary = preprocess_ef([p for p, _ in ase_files], str(out), num_shards=2, workers=1, progress=False)
    assert summary == {"records": 9, "shards": 2}
    ds = LmdbDataset({"src": str(out), "required_fields": ["y", "force"]})
    assert len(ds) == 9 and len(ds.shards) == 2
    assert ds.get_natoms().tolist() == [13] * 9  # from metadata.npz
    for k, (path, frames) in enumerate(ase_files):
        for fid, atoms in enumerate(frames):
            data = ds[3 * k + fid]
            assert (data.sid, data.fid) == (k, fid)
            assert torch.allclose(data.pos, torch.tensor(atoms.positions, dtype=torch.float32))
            assert float(data.y) == atoms.get_potential_energy()
            forces = torch.tensor(atoms.get_forces(apply_constraint=False), dtype=torch.float32)
            assert torch.allclose(data.force, forces)
            assert data.tags.tolist() == [0] * 4 + [1] * 8 + [2]
            assert data.pbc.tolist() == [[True, True, False]]  # fcc111 slabs: not periodic in z
            if not path.endswith("extxyz"):  # traj and db keep constraints
                assert data.fixed.tolist() == [1.0] * 4 + [0.0] * 9


def test_preprocess_ef_reference_energies_and_workers(tmp_path, ase_files):
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps({"Cu": -0.5, "8": -2.0}))
    out = tmp_path / "ref"
    preprocess_ef([p for p, _ in ase_files], str(out), num_shards=3, workers=2, refs=str(refs), progress=False)
    ds = LmdbDataset({"src": str(out)})
    frames = [a for _, fr in ase_files for a in fr]
    for i, atoms in enumerate(frames):
        assert float(ds[i].y) == pytest.approx(atoms.get_potential_energy() - (12 * -0.5 - 2.0), abs=1e-12)


def test_preprocess_ef_stores_graphs(tmp_path, ase_files):
    pytest.importorskip("spinconv_train.graph")
    from spinconv_train.datasets import RadiusGraph

    out = tmp_path / "g"
    preprocess_ef([ase_files[0][0]], str(out), graph=(5.0, 12), progress=False)
    stored = LmdbDataset({"src": str(out)})
    plain = LmdbDataset({"src": str(out), "validate": False})
    for i in range(len(stored)):
        data = stored[i]
        fresh = RadiusGraph(5.0, 12)(plain.raw_record(i).clone())
        assert data.edge_index.shape[1] > 0
        assert torch.equal(data.edge_index, fresh.edge_index) and torch.equal(data.cell_offsets, fresh.cell_offsets)


def test_preprocess_ef_bad_input_leaves_no_output(tmp_path, ase_files):
    frames = emt_frames(9)
    frames[1].calc = None
    bad = tmp_path / "bad.traj"
    write(bad, frames)
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match=r"bad.traj, record 1, field 'y'"):
        preprocess_ef([ase_files[0][0], str(bad)], str(out), num_shards=1, progress=False)
    assert not out.exists()  # no folder, no shard, no metadata
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["bad.traj", *(os.path.basename(p) for p, _ in
                                                                                ase_files)])  # no temporaries
    with pytest.raises(DatasetError, match="input file not found"):
        preprocess_ef([str(tmp_path / "missing.traj")], str(out))
    frames = emt_frames(3)
    frames[2].calc = SinglePointCalculator(frames[2], energy=float("nan"), forces=np.zeros((13, 3)))
    write(tmp_path / "nan.traj", frames)
    with pytest.raises(DatasetError, match=r"nan.traj, record 2, field 'y'"):
        preprocess_ef([str(tmp_path / "nan.traj")], str(out), progress=False)


def test_preprocess_relaxed(tmp_path):
    trajs = []
    for k in range(2):
        frames = emt_frames(k, n=4)
        write(tmp_path / f"r{k}.traj", frames)
        trajs.append((str(tmp_path / f"r{k}.traj"), frames))
    write(tmp_path / "init.extxyz", [trajs[0][1][0], trajs[1][1][0]])
    write(tmp_path / "final.extxyz", [trajs[0][1][-1], trajs[1][1][-1]])
    out = tmp_path / "is2re"
    summary = preprocess_relaxed(str(out), [p for p, _ in trajs], str(tmp_path / "init.extxyz"),
                                 str(tmp_path / "final.extxyz"), refs={"O": -1.0, "Cu": 0.0})
    assert summary == {"records": 4}
    ds = LmdbDataset({"src": str(out), "required_fields": ["y_init", "y_relaxed", "pos_relaxed"]})
    for i in range(4):
        frames = trajs[i % 2][1]
        data = ds[i]
        assert float(data.y_init) == pytest.approx(frames[0].get_potential_energy() + 1.0, abs=1e-12)
        assert float(data.y_relaxed) == pytest.approx(frames[-1].get_potential_energy() + 1.0, abs=1e-12)
        assert torch.allclose(data.pos_relaxed, torch.tensor(frames[-1].positions, dtype=torch.float32))
        assert torch.allclose(data.pos, torch.tensor(frames[0].positions, dtype=torch.float32))
    write(tmp_path / "short.extxyz", [trajs[0][1][-1]])
    with pytest.raises(DatasetError, match="2 initial frames but 1 relaxed"):
        preprocess_relaxed(str(tmp_path / "x"), [], str(tmp_path / "init.extxyz"), str(tmp_path / "short.extxyz"))
    assert not (tmp_path / "x").exists()


def _records_by_id(src):
    ds = LmdbDataset({"src": src})
    return {(ds[i].sid, ds[i].fid): ds[i] for i in range(len(ds))}


# Regenerated data go through EMT / xTB and numpy: other library versions change the last bits
# (seen: 1e-14 eV, 3e-13 Å). These tolerances sit far above round-off and far below any real
# change of a generator (a different seed, step or setting moves values by >= 1e-4).
REGENERATION_ATOL = 1e-8
REGENERATION_RTOL = 1e-9


def assert_regenerated(new, committed, what) -> None:
    """Integer / string fields must be equal; float fields equal up to library round-off."""
    new, committed = np.asarray(new), np.asarray(committed)
    assert new.shape == committed.shape and new.dtype == committed.dtype, what
    if np.issubdtype(new.dtype, np.floating):
        np.testing.assert_allclose(new, committed, rtol=REGENERATION_RTOL, atol=REGENERATION_ATOL, err_msg=str(what))
    else:
        assert np.array_equal(new, committed), what


def test_regeneration_tolerance_catches_a_real_change():
    energies = np.array([-1.234567, 0.5, 12.75])
    assert_regenerated(energies + 1e-13, energies, "round-off")
    with pytest.raises(AssertionError):
        assert_regenerated(energies + 1e-5, energies, "a changed generator")
    with pytest.raises(AssertionError):
        assert_regenerated(np.array([1, 2, 4]), np.array([1, 2, 3]), "integers")


def test_make_oc20_mini_regenerates_committed_records(tmp_path):
    """The first two systems rebuilt with the committed flags equal the committed records up to round-off."""
    summary = run_script("make_oc20_mini", "--out", str(tmp_path), "--max-systems", "2", "--s2ef-every", "4")
    assert sum(v["systems"] for v in summary.values()) == 2
    compared = 0
    for task in ("s2ef", "is2re"):
        for split in ("train", "val_id", "val_ood"):
            if not summary[split]["systems"]:
                continue
            new = _records_by_id(str(tmp_path / task / split))
            committed = _records_by_id(os.path.join(ROOT, "data", "oc20_mini", task, split))
            for key, rec in new.items():
                ref = committed[key]
                assert sorted(rec.keys()) == sorted(ref.keys())
                for field in rec.keys():
                    a, b = rec[field], ref[field]
                    if isinstance(a, torch.Tensor):
                        assert_regenerated(a.numpy(), b.numpy(), (task, split, key, field))
                    elif isinstance(a, float):
                        assert_regenerated(np.float64(a), np.float64(b), (task, split, key, field))
                    else:
                        assert a == b, (task, split, key, field)
                compared += 1
    assert compared >= 4


def test_make_md17_xtb_regenerates_committed_frames(tmp_path):
    pytest.importorskip("tblite")
    run_script("make_md17_xtb", "--molecule", "ethanol", "--frames", "3", "--out", str(tmp_path / "e.npz"))
    committed = np.load(os.path.join(ROOT, "data", "md17", "ethanol_xtb.npz"))
    new = np.load(tmp_path / "e.npz")
    assert int(committed["every"]) == int(new["every"]) and float(committed["temperature_K"]) == 500.0
    for key in ("z", "R", "E", "F"):
        assert_regenerated(new[key], committed[key][: len(new[key])], key)
    assert committed["E"].shape == (2000, 1)


@pytest.mark.slow
def test_make_qm9_subset_regenerates_committed_file(tmp_path):
    if importlib.util.find_spec("qm9pack") is None:  # its own import is broken: only locate it
        pytest.skip("optional qm9pack not installed")
    script = load_script("make_qm9_subset")
    script.make_subset(str(tmp_path / "s.npz"))
    new, old = np.load(tmp_path / "s.npz"), np.load(os.path.join(ROOT, "data", "qm9", "qm9_subset.npz"))
    for key in old.files:
        assert_regenerated(new[key], old[key], key)


def test_benchmark_data_prints_a_rate(capsys):
    pytest.importorskip("spinconv_train.graph")
    script = load_script("benchmark_data")
    script.main(["--src", os.path.join(ROOT, "data", "oc20_mini", "s2ef", "val_id"), "--runs", "1"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["records"] > 0 and result["records_per_s"] > 0 and result["edges_per_structure"] > 100
