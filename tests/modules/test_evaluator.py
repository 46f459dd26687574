"""Each OC20 metric against a hand computation with numpy on random data."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spinconv_train.tasks import metrics as ev


@pytest.fixture
def random_batch():
    rng = np.random.default_rng(0)
    natoms = np.array([3, 5, 4, 6])
    n = natoms.sum()
    batch = np.repeat(np.arange(len(natoms)), natoms)
    target_f = rng.normal(size=(n, 3))
    pred_f = target_f + rng.normal(scale=0.02, size=(n, 3))
    pred_f[batch == 1] = target_f[batch == 1] + 0.001      # structure 1: forces within threshold
    free = rng.random(n) > 0.3
    free[batch == 2] = False                                 # structure 2: no free atoms
    target_e = rng.normal(size=4)
    pred_e = target_e + np.array([0.01, 0.015, 0.05, 0.001])
    return natoms, batch, pred_e, target_e, pred_f, target_f, free


def t(x):
    return torch.as_tensor(x)


def test_metrics_match_numpy(random_batch):
    natoms, batch, pred_e, target_e, pred_f, target_f, free = random_batch
    value = lambda sc: sc[0] / sc[1]  # noqa: E731
    assert value(ev.energy_mae(t(pred_e), t(target_e))) == pytest.approx(np.abs(pred_e - target_e).mean())
    assert value(ev.energy_per_atom_mae(t(pred_e), t(target_e), t(natoms))) == pytest.approx(
        (np.abs(pred_e - target_e) / natoms).mean())
    # RMSEs: the accumulator takes the root of the global mean of squared errors.
    acc = ev.MetricAccumulator()
    acc.add("energy_rmse", ev.energy_squared_error(t(pred_e[:2]), t(target_e[:2])))
    acc.add("energy_rmse", ev.energy_squared_error(t(pred_e[2:]), t(target_e[2:])))
    acc.add("forces_rmse", ev.forces_squared_error(t(pred_f), t(target_f), t(free)))
    computed = acc.compute()
    assert computed["energy_rmse"] == pytest.approx(np.sqrt(((pred_e - target_e) ** 2).mean()))
    assert computed["forces_rmse"] == pytest.approx(np.sqrt(((pred_f[free] - target_f[free]) ** 2).mean()))
    assert value(ev.forces_mae(t(pred_f), t(target_f), t(free))) == pytest.approx(
        np.abs(pred_f[free] - target_f[free]).mean())
    p, q = pred_f[free], target_f[free]
    cos = (p * q).sum(1) / np.linalg.norm(p, axis=1) / np.linalg.norm(q, axis=1)
    assert value(ev.forces_cos(t(pred_f), t(target_f), t(free))) == pytest.approx(cos.mean())
    mag = np.abs(np.linalg.norm(p, axis=1) - np.linalg.norm(q, axis=1)).mean()
    assert value(ev.forces_magnitude(t(pred_f), t(target_f), t(free))) == pytest.approx(mag)
    ewt = (np.abs(pred_e - target_e) < 0.02).mean()
    assert value(ev.energy_within_threshold(t(pred_e), t(target_e))) == pytest.approx(ewt)
    ok = []
    for k in range(len(natoms)):
        sel = (batch == k) & free
        worst = np.abs(pred_f[sel] - target_f[sel]).max() if sel.any() else 0.0
        ok.append(abs(pred_e[k] - target_e[k]) < 0.02 and worst < 0.03)
    efwt = ev.energy_force_within_threshold(t(pred_e), t(target_e), t(pred_f), t(target_f), t(free), t(batch))
    assert value(efwt) == pytest.approx(np.mean(ok))
    assert 0 < np.mean(ok) < 1  # the data exercise both outcomes


def test_sums_and_counts_give_the_global_mean(random_batch):
    natoms, batch, pred_e, target_e, pred_f, target_f, free = random_batch
    acc = ev.MetricAccumulator(["forces_mae"])
    for k in range(len(natoms)):  # one structure at a time
        sel = batch == k
        acc.add("forces_mae", ev.forces_mae(t(pred_f[sel]), t(target_f[sel]), t(free[sel])))
    expected = np.abs(pred_f[free] - target_f[free]).mean()
    assert acc.compute()["forces_mae"] == pytest.approx(expected)
    # A mean of per-structure means would differ (structures have different free-atom counts).
    per = [np.abs(pred_f[(batch == k) & free] - target_f[(batch == k) & free]).mean()
           for k in range(len(natoms)) if ((batch == k) & free).any()]
    assert abs(np.mean(per) - expected) > 1e-6


def test_adwt_uses_minimum_image_and_thresholds():
    rng = np.random.default_rng(1)
    cell = np.diag([5.0, 6.0, 20.0])
    target = rng.random((4, 3)) * [5, 6, 20]
    shift = np.array([0.05, 0.0, 0.0])
    pred = target + shift + np.array([5.0, -6.0, 0.0])  # a lattice vector away: same under PBC
    pbc = np.array([True, True, False])
    d = ev.minimum_image_distance(pred, target, cell, pbc)
    np.testing.assert_allclose(d, 0.05, atol=1e-12)
    thresholds = np.arange(0.01, 0.5, 0.001)
    assert len(thresholds) == len(ev.ADWT_THRESHOLDS)
    expected = (0.05 < thresholds).mean()
    assert ev.average_distance_within_threshold(pred, target, cell, pbc) == pytest.approx(expected)
    # Without periodicity the lattice shift counts: far beyond every threshold.
    assert ev.average_distance_within_threshold(pred, target, cell, np.zeros(3, bool)) == 0.0


def test_higher_is_better():
    assert ev.higher_is_better("energy_force_within_threshold") and ev.higher_is_better("forces_cos")
    assert not ev.higher_is_better("forces_mae")


def test_rmse_of_a_subset_takes_the_root():
    from spinconv_train.tasks.metrics import MetricAccumulator, is_rmse

    assert is_rmse("forces_rmse") and is_rmse("forces_rmse_all_atoms") and not is_rmse("forces_mae_all_atoms")
    acc = MetricAccumulator()
    acc.add("forces_rmse_all_atoms", (8.0, 2.0))
    acc.add("forces_mae_all_atoms", (8.0, 2.0))
    assert acc.compute() == {"forces_rmse_all_atoms": 2.0, "forces_mae_all_atoms": 4.0}
