"""Normaliser and element references: fitted statistics and round trips."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spinconv_train.tasks.element_references import ElementReferences
from spinconv_train.tasks.normalizer import Normalizer


def test_fit_norm_denorm_round_trip():
    values = torch.tensor([1.0, 2.0, 4.0, 9.0], dtype=torch.float64)
    norm = Normalizer.fit(values)
    assert float(norm.mean) == pytest.approx(4.0)
    assert float(norm.std) == pytest.approx(np.std([1, 2, 4, 9]))
    z = norm.norm(values)
    assert float(z.mean()) == pytest.approx(0.0, abs=1e-12) and float(z.std(unbiased=False)) == pytest.approx(1.0)
    torch.testing.assert_close(norm.denorm(z), values)
    forces = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(norm.denorm_forces(norm.norm_forces(forces)), forces)
    assert norm.force_std == pytest.approx(float(norm.std))  # OCP: forces scaled by the energy std
    again = Normalizer.from_state_dict(norm.state_dict())
    torch.testing.assert_close(again.norm(values), z)


def test_multi_target_and_bad_std():
    values = torch.tensor([[1.0, 10.0], [3.0, 30.0]])
    norm = Normalizer.fit(values)
    assert norm.mean.tolist() == [2.0, 20.0] and norm.std.tolist() == [1.0, 10.0]
    with pytest.raises(ValueError, match="std"):
        Normalizer(0.0, 0.0)


class _Toy(torch.utils.data.Dataset):
    def __init__(self, refs):
        rng = np.random.default_rng(0)
        self.items = []
        for _ in range(12):
            z = rng.choice([1, 6, 8], size=rng.integers(2, 7))
            energy = sum(refs[int(e)] for e in z)
            from torch_geometric.data import Data
            self.items.append(Data(atomic_numbers=torch.tensor(z, dtype=torch.float32), y=energy,
                                   pos=torch.zeros(len(z), 3)))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_element_references_recover_linear_energies():
    refs = {1: -0.5, 6: -37.8, 8: -75.0}
    ds = _Toy(refs)
    fitted = ElementReferences.fit(ds)
    for z, value in refs.items():
        assert float(fitted.references[z]) == pytest.approx(value, abs=1e-5)  # energies read as float32
    z = torch.tensor([1, 1, 6, 8, 8], dtype=torch.float32)
    batch = torch.tensor([0, 0, 0, 1, 1])
    energy = fitted.energy(z, batch, 2)
    assert energy.tolist() == pytest.approx([-38.8, -150.0], abs=1e-4)
    again = ElementReferences.from_state_dict(fitted.state_dict())
    torch.testing.assert_close(again.energy(z, batch, 2), energy)
