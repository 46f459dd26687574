"""QM9: original xyz (folder and tar.bz2), qm9pack CSV, committed subset, units, splits."""
from __future__ import annotations

import importlib.util
import tarfile

import numpy as np
import pytest
import torch
from ase.data import chemical_symbols
from ase.units import Hartree

from spinconv_train.datasets import DatasetError, QM9Dataset
from spinconv_train.datasets.qm9 import ATOM_REFS_HARTREE, STANDARD_SPLIT
from spinconv_train.datasets.qm9_formats import PROPERTY_NAMES, parse_qm9_xyz, read_npz

SUBSET = "data/qm9/qm9_subset.npz"


def _mathematica(x: float) -> str:
    """A number the way the QM9 files sometimes write it: mantissa*^exponent."""
    mantissa, exponent = f"{x:.10e}".split("e")
    return f"{mantissa}*^{int(exponent)}"


def xyz_text(gdb_id, z, pos, props) -> str:
    """One molecule in the original dsgdb9nsd xyz layout (rotational constants set to 0)."""
    head = ["gdb", str(gdb_id), "0.", "0.", "0."] + [_mathematica(p) if k % 2 else repr(float(p))
                                                     for k, p in enumerate(props)]
    lines = [str(len(z)), "\t".join(head)]
    for zi, (x, y, w) in zip(z, pos):
        lines.append(f"{chemical_symbols[zi]}\t{_mathematica(x)}\t{float(y)!r}\t{float(w)!r}\t0.0")
    lines += ["1.0\t2.0", "C\tC", "InChI=1S/x\tInChI=1S/x"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def subset():
    import os

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.path.join(root, SUBSET)


def test_parse_xyz_with_mathematica_exponents():
    text = "2\ngdb 7\t1.\t2.\t3.\t" + "\t".join(["1.5*^-3"] * 11 + ["6.5"]) + "\n" \
           "C\t0.1*^1\t-2.5\t3.\t-0.1\nH\t1.\t2.\t3.25*^-2\t0.1\nfreq\nsmiles\ninchi\n"
    gdb_id, z, pos, props = parse_qm9_xyz(text, "mol.xyz")
    assert gdb_id == 7 and z.tolist() == [6, 1]
    assert pos.tolist() == [[1.0, -2.5, 3.0], [1.0, 2.0, 0.0325]]
    assert props.tolist() == [0.0015] * 11 + [6.5]
    with pytest.raises(DatasetError, match=r"mol.xyz.*field 'pos'"):
        parse_qm9_xyz("3\ngdb 1 " + "0 " * 15 + "\nC 0 0 0 0\n", "mol.xyz")
    with pytest.raises(DatasetError, match=r"record 7, field 'atomic_numbers'"):
        parse_qm9_xyz(text.replace("H\t", "Qq\t"), "mol.xyz")


def test_xyz_folder_and_tar_match_the_subset(tmp_path, subset):
    table = read_npz(subset)
    folder = tmp_path / "xyz"
    folder.mkdir()
    for m in range(6):
        z, pos = table.molecule(m)
        (folder / f"dsgdb9nsd_{table.ids[m]:06d}.xyz").write_text(xyz_text(table.ids[m], z, pos, table.props[m]))
    archive = tmp_path / "dsgdb9nsd.xyz.tar.bz2"
    with tarfile.open(archive, "w:bz2") as tar:
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=path.name)
    truncated = tmp_path / "cut.tar.bz2"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DatasetError, match=r"cut.tar.bz2.*corrupt or truncated"):
        QM9Dataset({"src": str(truncated), "split": "all"})
    reference = QM9Dataset({"src": subset, "split": "all"})
    for src in (str(folder), str(archive)):
        ds = QM9Dataset({"src": src, "split": "all"})
        assert len(ds) == 6
        for m in range(6):
            assert ds[m].sid == reference[m].sid
            assert torch.equal(ds[m].pos, reference[m].pos)
            assert torch.allclose(ds[m].y, reference[m].y, rtol=1e-12, atol=0)


def test_units_and_atom_references(subset):
    raw = read_npz(subset)
    ds = QM9Dataset({"src": subset, "split": "all", "target": ["homo", "U0", "mu", "Cv"]})
    plain = QM9Dataset({"src": subset, "split": "all", "target": "U0", "subtract_atomref": False})
    assert ds.target_names == ("homo", "U0", "mu", "Cv") and ds.units == ("eV", "eV", "D", "cal/(mol K)")
    m = 11
    z, _ = raw.molecule(m)
    y = ds[m].y
    assert y.shape == (1, 4) and y.dtype == torch.float64
    assert float(y[0, 0]) == pytest.approx(raw.props[m, PROPERTY_NAMES.index("homo")] * Hartree, rel=1e-12)
    atom_sum = sum(ATOM_REFS_HARTREE[int(zi)][0] for zi in z)
    u0 = raw.props[m, PROPERTY_NAMES.index("U0")]
    assert float(y[0, 1]) == pytest.approx((u0 - atom_sum) * Hartree, rel=1e-12)
    assert float(plain[m].y) == pytest.approx(u0 * Hartree, rel=1e-12)
    assert float(y[0, 2]) == raw.props[m, PROPERTY_NAMES.index("mu")]
    # atomisation energies are negative and roughly proportional to size
    u0_all = ds.targets[:, 1]
    assert (u0_all < 0).all() and np.corrcoef(u0_all, raw.natoms)[0, 1] < -0.8


def test_split_sizes_and_standard_split(subset):
    cfg = {"src": subset, "train_size": 1500, "val_size": 200, "seed": 2, "target": "gap"}
    parts = [QM9Dataset({**cfg, "split": s}).indices for s in ("train", "val", "test")]
    assert [len(p) for p in parts] == [1500, 200, 300]
    assert len(np.unique(np.concatenate(parts))) == 2000
    assert STANDARD_SPLIT == (110_000, 10_000)
    with pytest.raises(DatasetError, match="train_size"):
        QM9Dataset({"src": subset})  # the standard split needs the full 130k molecules
    ds = QM9Dataset({**cfg, "split": "train"})
    assert ds.get_natoms().sum() == sum(int(ds[i].natoms) for i in range(len(ds)))


def test_bad_config_and_elements(subset, tmp_path):
    with pytest.raises(DatasetError, match="unknown target"):
        QM9Dataset({"src": subset, "target": "energy"})
    with pytest.raises(DatasetError, match="'targets'"):
        QM9Dataset({"src": subset, "targets": "U0"})
    with pytest.raises(DatasetError, match=r"field 'atomic_numbers'.*not in the configured elements"):
        QM9Dataset({"src": subset, "split": "all", "elements": [1, 6, 7, 8]})  # the subset holds F
    props = np.ones(12)
    props[0] = np.nan  # mu
    text = xyz_text(5, np.array([6, 1]), np.zeros((2, 3)), props)
    (tmp_path / "a.xyz").write_text(text)
    with pytest.raises(DatasetError, match=r"record 5, field 'mu': target is NaN"):
        QM9Dataset({"src": str(tmp_path), "split": "all"})


@pytest.mark.skipif(importlib.util.find_spec("qm9pack") is None, reason="optional qm9pack not installed")
def test_qm9pack_csv_matches_committed_subset(subset):
    from spinconv_train.datasets.qm9_formats import qm9pack_csv_files, read_qm9pack

    table = read_npz(subset)
    first = qm9pack_csv_files()[0]
    ids = set(table.ids[table.ids < 5000].tolist())
    csv_table = read_qm9pack([first], ids=ids)
    assert set(csv_table.ids.tolist()) == ids
    for m, gdb_id in enumerate(csv_table.ids):
        k = int(np.flatnonzero(table.ids == gdb_id)[0])
        z, pos = table.molecule(k)
        zc, pc = csv_table.molecule(m)
        assert np.array_equal(z, zc) and np.array_equal(pos, pc)
        assert np.array_equal(table.props[k], csv_table.props[m])
