"""scripts/make_oc20_emt.py on a few systems: OC20-layout LMDBs the lmdb dataset reads, the
split rules, nested training subsets, and results independent of the worker count."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from trainers.trainer_testing import ROOT, load_script

from spinconv_train.datasets import LmdbDataset

SPLITS = ("train", "val_id", "val_ood_ads", "val_ood_cat", "val_ood_both")


def _generate(out, workers):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make_oc20_emt.py"), "--size", "8",
                           "--steps", "12", "--seed", "3", "--out", str(out), "--workers", str(workers),
                           "--train-subsets", "10,1000000", "--no-progress"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("emt")
    return {workers: (root / f"w{workers}", _generate(root / f"w{workers}", workers)) for workers in (1, 2)}


def _records(folder):
    if not os.path.exists(folder):
        return []
    ds = LmdbDataset({"src": str(folder)})
    return [ds[i] for i in range(len(ds))]


def test_worker_count_does_not_change_the_data(generated):
    (one, summary_one), (two, summary_two) = generated[1], generated[2]
    assert summary_one["splits"] == summary_two["splits"]
    compared = 0
    for task in ("s2ef", "is2re"):
        for split in SPLITS:
            a, b = _records(one / task / split), _records(two / task / split)
            assert len(a) == len(b)
            for x, y in zip(a, b):
                assert sorted(x.keys()) == sorted(y.keys())
                for key in x.keys():
                    assert torch.equal(x[key], y[key]) if isinstance(x[key], torch.Tensor) else x[key] == y[key]
                compared += 1
    assert compared == sum(v["frames"] + v["systems"] for v in summary_one["splits"].values())


def test_splits_subsets_and_manifest(generated):
    script = load_script("make_oc20_emt")
    out, summary = generated[1]
    manifest = json.loads((out / "manifest.json").read_text())
    systems = manifest["systems"]
    assert [s["sid"] for s in systems] == list(range(8))
    for system in systems:  # each system is its own seeded draw: the same at any --size
        expected = script.system_spec(system["sid"], 3)
        assert {k: system[k] for k in expected} == expected
        ood_cat = system["metal"] == "Au" or (system["metal"], system["facet"]) in (("Cu", "211"), ("Pd", "110"))
        ood_ads = system["adsorbate"] in ("NO", "NH2")
        assert system["split"] == {(True, True): "val_ood_both", (False, True): "val_ood_ads",
                                   (True, False): "val_ood_cat"}.get((ood_cat, ood_ads), system["split"])
        assert (ood_cat or ood_ads) == system["split"].startswith("val_ood")
    assert len({s["split"] for s in systems}) >= 3  # seed 3 draws several kinds of split
    for split in SPLITS:
        in_split = [s for s in systems if s["split"] == split]
        records = _records(out / "s2ef" / split)
        assert len(records) == sum(s["frames"] for s in in_split) == summary["splits"][split]["frames"]
        assert sorted({int(r.sid) for r in records}) == [s["sid"] for s in in_split]
        for record in records:
            assert math.isfinite(float(record.y)) and record.force.shape == (int(record.natoms), 3)
            assert record.tags.max() == 2 and (record.fixed[record.tags == 0] == 1).all()
        assert len(_records(out / "is2re" / split)) == len(in_split)
    subset = _records(out / "s2ef" / "train_10")
    train = _records(out / "s2ef" / "train")
    assert list(summary["train_subsets"]) == ["10"]  # 1000000 frames exceed the training split: left out
    first = [s for s in systems if s["split"] == "train"][0]
    assert len(subset) == first["frames"] >= 10  # whole systems, the first ones, until 10 frames
    assert all(torch.equal(a.pos, b.pos) for a, b in zip(subset, train))
