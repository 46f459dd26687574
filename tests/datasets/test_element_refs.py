"""Element reference energies fitted by least squares on element counts."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset
from torch_geometric.data import Data

from spinconv_train.datasets import MD17Dataset, energies_and_counts, fit_element_references


class _Toy(Dataset):
    """Structures whose energy is exactly a sum of per-element energies."""

    def __init__(self, refs, n=40, seed=0):
        rng = np.random.default_rng(seed)
        self.items = []
        for i in range(n):
            z = rng.choice(list(refs), size=rng.integers(2, 12))
            self.items.append(Data(pos=torch.zeros(len(z), 3), atomic_numbers=torch.tensor(z, dtype=torch.float32),
                                   y=float(sum(refs[int(k)] for k in z))))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_recovers_exact_references():
    refs = {1: -3.4, 6: -7.1, 8: -4.9, 29: -1.2}
    fitted = fit_element_references(_Toy(refs), max_z=90)
    assert fitted.shape == (91,)
    for z, e in refs.items():
        assert float(fitted[z]) == pytest.approx(e, abs=1e-9)
    assert float(fitted.abs().sum()) == pytest.approx(sum(abs(v) for v in refs.values()), abs=1e-8)


def test_indices_restrict_the_fit():
    ds = _Toy({1: -1.0, 8: -2.0}, n=10)
    energies, counts = energies_and_counts(ds, indices=[0, 3])
    assert energies.shape == (2,) and counts.shape == (2, 119)
    assert energies[1] == ds[3].y


def test_single_composition_md17(tmp_path):
    rng = np.random.default_rng(1)
    z = np.array([6, 6, 8, 1, 1, 1, 1, 1, 1])
    np.savez(tmp_path / "m.npz", z=z, R=rng.normal(size=(30, 9, 3)), E=rng.normal(-100, 1, size=(30, 1)),
             F=rng.normal(size=(30, 9, 3)))
    ds = MD17Dataset({"src": str(tmp_path / "m.npz"), "train_size": 20, "val_size": 5})
    refs = fit_element_references(ds)
    energies, counts = energies_and_counts(ds)
    # rank-deficient: the minimum-norm solution still reproduces the mean energy
    assert float(counts[0] @ refs.numpy()) == pytest.approx(energies.mean(), rel=1e-10)
