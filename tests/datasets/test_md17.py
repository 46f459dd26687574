"""MD17 / rMD17 reading, unit conversion, splits and bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import units

from spinconv_train.datasets import DatasetError, MD17Dataset
from spinconv_train.registry import DATASETS

KCAL = units.kcal / units.mol


@pytest.fixture
def md17_arrays(rng):
    frames, z = 60, np.array([6, 6, 8, 1, 1, 1, 1, 1, 1])
    return {
        "z": z,
        "R": rng.normal(size=(frames, 9, 3)),
        "E": rng.normal(-97000.0, 3.0, size=(frames, 1)),
        "F": rng.normal(0, 30.0, size=(frames, 9, 3)),
    }


@pytest.fixture
def md17_file(tmp_path, md17_arrays):
    path = tmp_path / "md17_ethanol.npz"
    np.savez(path, **md17_arrays)
    return path


def test_units_and_layout(md17_file, md17_arrays):
    assert DATASETS.get("md17") is MD17Dataset
    ds = MD17Dataset({"src": str(md17_file), "split": "all"})
    data = ds[7]
    assert abs(KCAL - 0.0433641) < 1e-7
    assert data.y.dtype == torch.float64 and data.y.shape == (1,)
    assert float(data.y) == pytest.approx(md17_arrays["E"][7, 0] * 0.0433641, rel=1e-6)
    assert torch.allclose(data.force, torch.tensor(md17_arrays["F"][7] * KCAL, dtype=torch.float32))
    assert torch.allclose(data.pos, torch.tensor(md17_arrays["R"][7], dtype=torch.float32))
    assert data.cell.shape == (1, 3, 3) and not data.cell.any() and data.pbc.shape == (1, 3) and not data.pbc.any()
    assert data.natoms.tolist() == [9] and data.fid == 7 and data.tags.tolist() == [0] * 9


def test_rmd17_layout_gives_identical_results(tmp_path, md17_file, md17_arrays):
    rmd17 = tmp_path / "rmd17_ethanol.npz"
    np.savez(rmd17, nuclear_charges=md17_arrays["z"], coords=md17_arrays["R"],
             energies=md17_arrays["E"][:, 0], forces=md17_arrays["F"])
    a = MD17Dataset({"src": str(md17_file), "split": "all"})
    b = MD17Dataset({"src": str(rmd17), "split": "all"})
    assert (a.layout, b.layout) == ("md17", "rmd17")
    for i in range(len(a)):
        assert torch.equal(a[i].y, b[i].y) and torch.equal(a[i].force, b[i].force) and torch.equal(a[i].pos, b[i].pos)


def test_folder_and_molecule(tmp_path, md17_file):
    ds = MD17Dataset({"src": str(tmp_path), "molecule": "ethanol", "split": "all"})
    assert ds.path == str(md17_file)
    with pytest.raises(DatasetError, match="molecule"):
        MD17Dataset({"src": str(tmp_path), "molecule": "benzene"})


def test_seeded_splits(md17_file):
    cfg = {"src": str(md17_file), "train_size": 30, "val_size": 10, "seed": 4}
    parts = {s: MD17Dataset({**cfg, "split": s}).indices for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [30, 10, 20]
    assert len(set(np.concatenate(list(parts.values())))) == 60
    assert np.array_equal(MD17Dataset({**cfg, "split": "train"}).indices, parts["train"])
    assert not np.array_equal(MD17Dataset({**cfg, "split": "train", "seed": 5}).indices, parts["train"])
    with pytest.raises(DatasetError, match="exceed"):
        MD17Dataset({"src": str(md17_file)})  # the paper's 1000 + 1000 do not fit in 60 frames


def test_index_files(tmp_path, md17_file):
    (tmp_path / "index_train_01.csv").write_text("3\n5\n7\n")
    index_files = {"train": str(tmp_path / "index_train_01.csv")}
    ds = MD17Dataset({"src": str(md17_file), "split": "train", "index_files": index_files})
    assert [d.fid for d in ds] == [3, 5, 7]
    (tmp_path / "bad.csv").write_text("3\n99\n")
    with pytest.raises(DatasetError, match="bad.csv"):
        MD17Dataset({"src": str(md17_file), "index_files": {"train": str(tmp_path / "bad.csv")}})


def test_bad_input(tmp_path, md17_arrays):
    def write(name, **changes):
        arrays = {**md17_arrays, **changes}
        arrays = {k: v for k, v in arrays.items() if v is not None}
        np.savez(tmp_path / name, **arrays)
        return str(tmp_path / name)

    with pytest.raises(DatasetError, match=r"none.npz, field 'src': MD17 src does not exist"):
        MD17Dataset({"src": str(tmp_path / "none.npz")})
    with pytest.raises(DatasetError, match=r"field 'F'"):
        MD17Dataset({"src": write("a.npz", F=None)})
    with pytest.raises(DatasetError, match=r"field 'F': expected shape"):
        MD17Dataset({"src": write("b.npz", F=md17_arrays["F"][:, :8])})
    bad = md17_arrays["E"].copy()
    bad[17, 0] = np.nan
    with pytest.raises(DatasetError, match=r"c.npz, record 17, field 'E': contains NaN"):
        MD17Dataset({"src": write("c.npz", E=bad)})
    z = md17_arrays["z"].copy()
    z[0] = 150
    with pytest.raises(DatasetError, match=r"field 'atomic_numbers': unknown element"):
        MD17Dataset({"src": write("d.npz", z=z)})
    with pytest.raises(DatasetError, match=r"'splits'"):
        MD17Dataset({"src": write("e.npz"), "splits": 1})


def test_committed_xtb_ethanol_is_physical(repo_root):
    ds = MD17Dataset({"src": f"{repo_root}/data/md17", "molecule": "ethanol", "split": "all"})
    assert len(ds) == 2000 and ds.layout == "md17"
    assert sorted(ds.z.tolist()) == [1] * 6 + [6, 6, 8]
    # 500 K: fluctuations of a few tenths of an eV, forces of a few eV/Å, intact molecule
    assert 0.05 < ds.energy.std() < 1.0
    assert 0.5 < np.abs(ds.force).mean() < 5.0
    d = np.linalg.norm(ds.pos[:, :, None] - ds.pos[:, None], axis=-1)
    assert d[:, np.triu_indices(9, 1)[0], np.triu_indices(9, 1)[1]].min() > 0.7


def test_committed_xtb_aspirin_stays_intact(repo_root):
    ds = MD17Dataset({"src": f"{repo_root}/data/md17/aspirin_xtb.npz", "split": "all"})
    assert len(ds) == 500 and np.bincount(ds.z).tolist()[1:9] == [8, 0, 0, 0, 0, 9, 0, 4]  # C9H8O4
    # the bonded graph (pairs closer than 1.25x covalent radii) never changes along the MD
    from ase.data import covalent_radii

    r = covalent_radii[ds.z]
    limit = 1.25 * (r[:, None] + r[None, :])
    d = np.linalg.norm(ds.pos[:, :, None] - ds.pos[:, None], axis=-1)
    bonds = (d < limit) & ~np.eye(21, dtype=bool)
    assert (bonds == bonds[0]).all()
    assert bonds[0].sum() // 2 == 21  # aspirin: 21 atoms, one ring, so 21 bonds


@pytest.mark.parametrize("molecule,frames", [("ethanol", (0, 1999)), ("aspirin", (0, 499))])
def test_committed_xtb_forces_are_the_calculators(repo_root, molecule, frames):
    """The stored forces are GFN2-xTB's own (recomputed here with tblite), so they sum to
    zero as every translation-invariant energy's do, and models can fit them."""
    pytest.importorskip("tblite")
    from ase import Atoms
    from tblite.ase import TBLite

    ds = MD17Dataset({"src": f"{repo_root}/data/md17/{molecule}_xtb.npz", "split": "all"})
    assert np.abs(ds.force.sum(axis=1)).max() < 1e-3
    for k in frames:
        atoms = Atoms(numbers=ds.z, positions=ds.pos[k])
        atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
        assert np.abs(atoms.get_forces() - ds.force[k]).max() < 1e-3
        assert atoms.get_potential_energy() == pytest.approx(ds.energy[k], abs=1e-3)


def test_forces_with_a_net_force_are_named_in_a_warning(tmp_path, md17_arrays, caplog):
    arrays = dict(md17_arrays)
    balanced = arrays["F"] - arrays["F"].mean(axis=1, keepdims=True)
    for name, forces, expected in (("balanced.npz", balanced, False), ("net.npz", balanced + 5.0, True)):
        path = tmp_path / name
        np.savez(path, **{**arrays, "F": forces})
        caplog.clear()
        MD17Dataset({"src": str(path), "split": "all"})
        warned = [r.getMessage() for r in caplog.records if "sum to" in r.getMessage()]
        assert bool(warned) == expected
        if expected:
            assert name in warned[0] and "'F'" in warned[0] and "apply_constraint=False" in warned[0]
