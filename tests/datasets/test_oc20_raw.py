"""OC20's S2EF downloads: N.extxyz.xz frames with N.txt.xz rows random<sid>,frame<fid>,<reference energy>."""
from __future__ import annotations

import lzma
import os

import numpy as np
import pytest
import torch
from ase.build import add_adsorbate, fcc111
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms
from ase.io import write
from trainers.trainer_testing import load_script

from spinconv_train.datasets import AseDataset, DatasetError, LmdbDataset
from spinconv_train.datasets.preprocess import preprocess_ef

# (file stem, compressed txt?, rows (sid, fid, reference energy)); energies are -10 - frame index
FILES = [("0", True, [(1234, 7, -3.25), (98765, 0, 1.5), (42, 12, -0.125)]), ("1", False, [(7, 3, 2.0), (8, 1, -1.0)])]


def _slab(seed):
    rng = np.random.default_rng(seed)
    slab = fcc111("Pt", size=(2, 2, 3), vacuum=6.0)
    add_adsorbate(slab, "O", 1.8, "fcc")
    slab.set_constraint(FixAtoms(indices=[0, 1, 2, 3]))
    slab.set_tags([0] * 4 + [1] * 8 + [2])
    slab.positions += rng.normal(0, 0.02, slab.positions.shape)
    return slab


def _write_xz(path, text):
    with lzma.open(path, "wt") as handle:
        handle.write(text)


@pytest.fixture
def oc20_folder(tmp_path):
    """Two OC20-layout shards; the first with a compressed sidecar, the second with a plain one."""
    count = 0
    for stem, compressed, rows in FILES:
        frames = []
        for sid, fid, ref in rows:
            atoms = _slab(count)
            energy = -10.0 - count
            atoms.calc = SinglePointCalculator(atoms, energy=energy, free_energy=energy,
                                               forces=np.full((len(atoms), 3), 0.01 * count))
            frames.append(atoms)
            count += 1
        plain = tmp_path / f"{stem}.extxyz"
        write(plain, frames, format="extxyz")
        _write_xz(str(tmp_path / f"{stem}.extxyz.xz"), plain.read_text())
        plain.unlink()
        lines = "".join(f"random{sid},frame{fid},{ref}\n" for sid, fid, ref in rows)
        if compressed:
            _write_xz(str(tmp_path / f"{stem}.txt.xz"), lines)
        else:
            (tmp_path / f"{stem}.txt").write_text(lines)
    return tmp_path


def _inputs(folder):
    return [str(folder / f"{stem}.extxyz.xz") for stem, _, _ in FILES]


def test_preprocess_takes_ids_and_reference_energies_from_the_txt(oc20_folder, tmp_path):
    out = str(tmp_path / "lmdb")
    assert preprocess_ef(_inputs(oc20_folder), out, num_shards=2, progress=False, oc20_sidecars=True,
                         subtract_reference=True) == {"records": 5, "shards": 2}
    ds = LmdbDataset({"src": out, "required_fields": ["y", "force"]})
    rows = [row for _, _, rows in FILES for row in rows]
    for k, (sid, fid, ref) in enumerate(rows):
        data = ds[k]
        assert (data.sid, data.fid) == (sid, fid)
        assert float(data.y) == pytest.approx(-10.0 - k - ref, abs=1e-12)
        assert data.fixed.tolist() == [1.0] * 4 + [0.0] * 9  # from the extxyz move_mask column
        assert data.tags.tolist() == [0] * 4 + [1] * 8 + [2]
        assert torch.allclose(data.force, torch.full((13, 3), 0.01 * k))
    kept = str(tmp_path / "total")
    preprocess_ef(_inputs(oc20_folder), kept, progress=False, oc20_sidecars=True)
    assert float(LmdbDataset({"src": kept})[0].y) == -10.0  # total energy without the subtraction


def test_ase_dataset_reads_the_same_records(oc20_folder, tmp_path):
    out = str(tmp_path / "lmdb")
    preprocess_ef(_inputs(oc20_folder), out, progress=False, oc20_sidecars=True, subtract_reference=True)
    lmdb = LmdbDataset({"src": out})
    ds = AseDataset({"src": str(oc20_folder), "oc20_txt": True, "oc20_ref_energy": True})
    assert [os.path.basename(f) for f in ds.files] == ["0.extxyz.xz", "1.extxyz.xz"]
    assert len(ds) == len(lmdb) == 5
    for k in range(5):
        a, b = ds[k], lmdb[k]
        assert (a.sid, a.fid, float(a.y)) == (b.sid, b.fid, float(b.y))
        for field in ("pos", "cell", "atomic_numbers", "fixed", "tags", "force"):
            assert torch.equal(torch.as_tensor(a[field]), torch.as_tensor(b[field])), (k, field)


def test_sidecar_errors_name_the_file(oc20_folder, tmp_path):
    out = str(tmp_path / "out")
    (oc20_folder / "1.txt").write_text("random7,frame3,2.0\n")
    with pytest.raises(DatasetError, match=r"1.txt: has 1 rows but .*1.extxyz.xz has 2 frames"):
        preprocess_ef(_inputs(oc20_folder), out, progress=False, oc20_sidecars=True)
    (oc20_folder / "1.txt").write_text("random7,frame3,2.0\nsystem8,1,-1.0\n")
    with pytest.raises(DatasetError, match=r"1.txt: row 1 is 'system8,1,-1.0', expected random<sid>"):
        preprocess_ef(_inputs(oc20_folder), out, progress=False, oc20_sidecars=True)
    (oc20_folder / "1.txt").unlink()
    with pytest.raises(DatasetError, match=r"1.extxyz.xz: no OC20 sidecar file .*1.txt or .*1.txt.xz"):
        preprocess_ef(_inputs(oc20_folder), out, progress=False, oc20_sidecars=True)
    assert not os.path.exists(out) or not [f for f in os.listdir(out) if f.endswith(".lmdb")]
    with pytest.raises(DatasetError, match="subtract_reference needs oc20_sidecars"):
        preprocess_ef(_inputs(oc20_folder), out, progress=False, subtract_reference=True)


def test_script_flags(oc20_folder, tmp_path, capsys):
    script = load_script("preprocess_ef")
    with pytest.raises(SystemExit) as exit_info:
        script.main([*_inputs(oc20_folder), "--out", str(tmp_path / "x"), "--oc20-ref-energy"])
    assert exit_info.value.code == 2 and "--oc20-ref-energy needs --oc20-txt" in capsys.readouterr().err
    script.main([*_inputs(oc20_folder), "--out", str(tmp_path / "y"), "--oc20-txt", "--oc20-ref-energy"])
    assert '"records": 5' in capsys.readouterr().out
    assert LmdbDataset({"src": str(tmp_path / "y")})[3].sid == 7
