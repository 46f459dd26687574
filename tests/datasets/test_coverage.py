"""Elements and energy scale a model was trained on, against what it is given."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from spinconv_train.datasets.coverage import (
    ElementWatch,
    UnseenElementWarning,
    element_name,
    elements_from_counts,
    elements_of,
    energy_scale_mismatch,
    referenced_energy_scale,
    unseen_elements,
)


def test_elements_and_names():
    assert elements_of(torch.tensor([78, 8, 6, 78, 8])) == {6, 8, 78}
    assert elements_from_counts(np.array([[0, 2, 0, 1], [0, 0, 0, 3]])) == {1, 3}
    assert element_name(78) == "Pt (78)" and element_name(150) == "Z=150"
    assert unseen_elements([1, 6, 8], torch.tensor([1, 6, 13, 34])) == [13, 34]
    assert unseen_elements(None, torch.tensor([13])) == []  # unknown: never flags


def test_element_watch_warns_once_per_structure_naming_elements():
    watch, seen = ElementWatch(), [1, 6, 8, 29]
    with pytest.warns(UnseenElementWarning, match=r"slab-3: elements Al \(13\), Se \(34\) never occurred.*model\.pt"
                      r" \(trained on H, C, O, Cu\)"):
        assert watch.check(torch.tensor([29, 29, 13, 34]), "slab-3", seen, "model.pt") == [13, 34]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert watch.check(torch.tensor([29, 13, 34]), "slab-3", seen, "model.pt") == [13, 34]  # said already
        assert watch.check(torch.tensor([29, 1, 8]), "slab-4", seen, "model.pt") == []
    with pytest.warns(UnseenElementWarning, match="slab-5"):
        watch.check_batch(torch.tensor([29, 1, 29, 13]), torch.tensor([0, 0, 1, 1]), ["slab-4", "slab-5"], seen,
                          "model.pt")


def test_unknown_training_elements_never_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ElementWatch().check_batch(torch.tensor([110]), torch.tensor([0]), ["x"], None, "old.pt")


def _counts(z_lists, max_z=40):
    counts = np.zeros((len(z_lists), max_z + 1))
    for row, zs in enumerate(z_lists):
        np.add.at(counts[row], zs, 1)
    return counts


def test_energy_scale_matches_data_of_the_same_kind():
    rng = np.random.default_rng(0)
    energies = rng.normal(-0.7, 2.9, size=200)
    counts = _counts([[29] * 12 + [8]] * 200)
    scale = referenced_energy_scale(energies, counts, None)
    assert scale.count == 200 and abs(scale.mean + 0.7) < 0.5 and abs(scale.std - 2.9) < 0.5
    assert energy_scale_mismatch(scale, mean=-0.75, std=2.89) is None


def test_total_energies_against_an_adsorption_energy_normaliser_are_flagged():
    # oxides' total energies (hundreds of eV) against a normaliser fitted on adsorption energies
    rng = np.random.default_rng(1)
    energies = rng.normal(-350.0, 40.0, size=50)
    scale = referenced_energy_scale(energies, _counts([[22, 8, 8]] * 50), None)
    message = energy_scale_mismatch(scale, mean=-0.75, std=2.89)
    assert message is not None and "mean" in message and "spread" in message


def test_element_references_bring_total_energies_to_the_normaliser_scale():
    rng = np.random.default_rng(2)
    refs = np.zeros(41)
    refs[[8, 22]] = [-4.9, -7.8]
    compositions = [[22] * int(n) + [8] * int(2 * n) for n in rng.integers(2, 6, size=60)]
    counts = _counts(compositions)
    energies = counts @ refs + rng.normal(0.0, 0.5, size=60)
    assert energy_scale_mismatch(referenced_energy_scale(energies, counts, None), mean=0.0, std=0.5) is not None
    assert energy_scale_mismatch(referenced_energy_scale(energies, counts, refs), mean=0.0, std=0.5) is None


def test_a_much_narrower_spread_is_flagged():
    scale = referenced_energy_scale(np.array([0.0, 0.001, -0.001, 0.0005]), _counts([[1]] * 4), None)
    assert "spread" in energy_scale_mismatch(scale, mean=0.0, std=1.0)
