"""The committed OC20-mini data: layout, splits, tags, and energies/forces that EMT reproduces."""
from __future__ import annotations

import os
from collections import defaultdict

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.emt import EMT

from spinconv_train.datasets import BalancedBatchSampler, LmdbDataset

SPLITS = ("train", "val_id", "val_ood")


@pytest.fixture(scope="module")
def mini():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.join(os.path.dirname(os.path.dirname(here)), "data", "oc20_mini")
    s2ef = {s: LmdbDataset({"src": os.path.join(root, "s2ef", s), "required_fields": ["y", "force"]}) for s in SPLITS}
    is2re = {s: LmdbDataset({"src": os.path.join(root, "is2re", s),
                             "required_fields": ["y_init", "y_relaxed", "pos_relaxed"]}) for s in SPLITS}
    return s2ef, is2re


def _is_ood(data) -> bool:
    z = data.atomic_numbers.long()
    ads = sorted(z[data.tags == 2].tolist())
    return bool((z == 79).any()) or ads == [7, 8]


def test_sizes_and_metadata(mini):
    s2ef, is2re = mini
    assert len(s2ef["train"].shards) == 2
    assert 200 <= len(s2ef["train"]) <= 600 and len(s2ef["val_id"]) >= 50 and len(s2ef["val_ood"]) >= 50
    assert all(len(is2re[s]) >= 5 for s in SPLITS) and sum(len(is2re[s]) for s in SPLITS) >= 30
    for ds in list(s2ef.values()) + list(is2re.values()):
        natoms = ds.get_natoms()  # from metadata.npz: no warning expected
        assert natoms.tolist() == [int(ds[i].natoms) for i in range(len(ds))]


def test_splits_by_system_with_unseen_metal_and_adsorbate(mini):
    s2ef, is2re = mini
    sids = {}
    for split in SPLITS:
        records = [s2ef[split][i] for i in range(len(s2ef[split]))]
        sids[split] = {r.sid for r in records}
        assert {r.sid for r in (is2re[split][i] for i in range(len(is2re[split])))} == sids[split]
        ood = [_is_ood(r) for r in records]
        assert all(ood) if split == "val_ood" else not any(ood)
    assert not (sids["train"] & sids["val_id"]) and not (sids["train"] & sids["val_ood"])


def test_tags_and_fixed_atoms(mini):
    s2ef, _ = mini
    data = s2ef["train"][0]
    assert set(data.tags.tolist()) == {0, 1, 2}
    assert torch.equal(data.fixed.bool(), data.tags == 0)
    assert data.cell.shape == (1, 3, 3) and data.atomic_numbers.dtype == torch.float32
    z_slab = data.pos[data.tags < 2, 2]
    assert data.pos[data.tags == 2, 2].min() > z_slab.max()  # adsorbate sits on top


def test_frames_reproduced_by_emt(mini):
    """Forces equal EMT forces; E_EMT - y is one constant (the reference) per system."""
    s2ef, is2re = mini
    ds = s2ef["val_id"]
    offsets = defaultdict(list)
    for i in range(0, len(ds), 3):
        data = ds[i]
        atoms = Atoms(numbers=data.atomic_numbers.long().numpy(), positions=data.pos.double().numpy(),
                      cell=data.cell[0].double().numpy(), pbc=True)
        atoms.calc = EMT()
        forces = atoms.get_forces()
        assert np.abs(forces - data.force.double().numpy()).max() < 2e-3
        offsets[data.sid].append(atoms.get_potential_energy() - float(data.y))
    assert len(offsets) >= 3
    for values in offsets.values():
        assert np.ptp(values) < 2e-3  # float32 positions: ~1e-4 eV noise
    # adsorption energies: relaxation lowers them; initial S2EF frame equals y_init
    first = {ds[i].sid: float(ds[i].y) for i in range(len(ds)) if ds[i].fid == 0}
    for i in range(len(is2re["val_id"])):
        rec = is2re["val_id"][i]
        assert float(rec.y_relaxed) < float(rec.y_init)
        assert float(rec.y_init) == first[rec.sid]
        assert rec.pos_relaxed.shape == rec.pos.shape


def test_balanced_sampler_on_mini(mini):
    s2ef, _ = mini
    sampler = BalancedBatchSampler(s2ef["val_ood"], batch_size=4, num_replicas=2, rank=0, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) and all(len(b) == 4 for b in batches)


def test_element_references_fit_on_train(mini):
    from spinconv_train.datasets import energies_and_counts, fit_element_references

    s2ef, _ = mini
    refs = fit_element_references(s2ef["train"], max_z=90)
    energies, counts = energies_and_counts(s2ef["train"], max_z=90)
    residual = energies - counts @ refs.numpy()
    assert refs.shape == (91,) and float(refs[79]) == 0.0  # Au only in val_ood
    assert residual.std() < energies.std() and abs(residual.mean()) < 1e-8
