"""Task trainers: losses, free-atom masking, normalisation, multi-target energies."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data

from spinconv_train.config import SCHEMA
from spinconv_train.tasks.element_references import ElementReferences
from spinconv_train.tasks.energy import EnergyTask
from spinconv_train.tasks.forces import ForcesTask
from spinconv_train.tasks.normalizer import Normalizer
from spinconv_train.tasks.targets import TargetState, scalar_loss, structure_ids


def section(name, **kw):
    out = {k: v[1] for k, v in SCHEMA[name].items()}
    out.update(kw)
    return out


def toy_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    items = []
    for k, n in enumerate([3, 4]):
        items.append(Data(pos=torch.randn(n, 3, generator=g), atomic_numbers=torch.tensor([1.0] * n),
                          natoms=torch.tensor([n]), fixed=torch.tensor([1] + [0] * (n - 1)),
                          y=float(k) + 0.5, force=torch.randn(n, 3, generator=g), sid=10 + k, fid=k,
                          y_relaxed=torch.tensor([[1.0 + k, 2.0 - k]])))
    return Batch.from_data_list(items)


def test_scalar_losses_by_hand():
    pred = torch.tensor([[0.0, 3.0, 4.0], [1.0, 1.0, 1.0]])
    target = torch.zeros(2, 3)
    assert float(scalar_loss("mae", pred, target)) == pytest.approx(10 / 6)
    assert float(scalar_loss("mse", pred, target)) == pytest.approx(28 / 6)
    assert float(scalar_loss("l2mae", pred, target)) == pytest.approx((5 + np.sqrt(3)) / 2)


@pytest.mark.parametrize("free_only", [True, False])
def test_force_loss_ignores_fixed_atoms_when_asked(free_only):
    batch = toy_batch()
    task = ForcesTask(section("task", train_on_free_atoms=free_only), section("optim", force_coefficient=1.0),
                      TargetState(Normalizer(0.5, 2.0)))
    out = {"energy": torch.zeros(2), "forces": torch.zeros(batch.pos.shape[0], 3)}
    before = float(task.loss(out, batch))
    batch.force[0] += 100.0  # atom 0 is fixed
    changed = float(task.loss(out, batch)) != pytest.approx(before)
    assert changed is (not free_only)


def test_forces_task_normalises_and_denormalises():
    batch = toy_batch()
    norm = Normalizer(0.5, 2.0)
    refs = ElementReferences(torch.tensor([0.0, 0.25]))  # H: 0.25 eV
    task = ForcesTask(section("task"), section("optim", energy_coefficient=1.0, force_coefficient=0.0),
                      TargetState(norm, refs))
    # A model output equal to the normalised, referenced targets gives zero energy loss ...
    target = (batch.y.double() - torch.tensor([0.75, 1.0], dtype=torch.float64) - 0.5) / 2.0
    out = {"energy": target.float(), "forces": batch.force / 2.0}
    assert float(task.loss(out, batch)) == pytest.approx(0.0, abs=1e-6)
    # ... and denormalises back to eV and eV/Å.
    pred = task.denormalize(out, batch)
    torch.testing.assert_close(pred["energy"], batch.y.double(), rtol=0, atol=1e-6)
    torch.testing.assert_close(pred["forces"].float(), batch.force)
    assert structure_ids(batch) == ["10_0", "11_1"]


def test_energy_task_multi_target_metrics():
    batch = toy_batch()
    task = EnergyTask(section("task", target="y_relaxed", labels=["a", "b"]), section("optim"),
                      TargetState(Normalizer([0.0, 0.0], [1.0, 1.0])))
    assert task.metric_names() == ["a_mae", "b_mae", "mean_mae"] and task.default_metric == "mean_mae"
    from spinconv_train.tasks.metrics import MetricAccumulator

    acc = MetricAccumulator(task.metric_names())
    pred = task.denormalize({"energy": torch.tensor([[1.5, 2.0], [2.0, 0.0]])}, batch)
    task.update_metrics(acc, pred, batch)
    metrics = acc.compute()
    assert metrics["a_mae"] == pytest.approx(0.25) and metrics["b_mae"] == pytest.approx(0.5)
    assert metrics["mean_mae"] == pytest.approx(0.375)
    with pytest.raises(KeyError, match="not a field"):
        EnergyTask(section("task", target="nope"), section("optim"), TargetState()).target(batch)


def test_energy_task_single_target_rmse():
    from spinconv_train.tasks.metrics import MetricAccumulator

    batch = toy_batch()  # y_relaxed column 0: 1.0 and 2.0
    task = EnergyTask(section("task", target="y_relaxed", target_indices=[0]), section("optim"),
                      TargetState(Normalizer(0.0, 1.0)))
    acc = MetricAccumulator(task.metric_names())
    task.update_metrics(acc, task.denormalize({"energy": torch.tensor([[1.5], [1.0]])}, batch), batch)
    metrics = acc.compute()
    assert metrics["energy_mae"] == pytest.approx(0.75)
    assert metrics["energy_rmse"] == pytest.approx(np.sqrt((0.25 + 1.0) / 2))


def test_metrics_by_tag_split_the_free_atoms_by_oc20_tag():
    from spinconv_train.tasks.metrics import MetricAccumulator

    batch = toy_batch()
    batch.tags = torch.tensor([0, 1, 1, 0, 1, 2, 2])  # atoms 0 and 3 are fixed (first of each structure)
    task = ForcesTask(section("task", metrics_by_tag=True), section("optim"), TargetState())
    pred = {"energy": batch.y.double(), "forces": torch.zeros(7, 3, dtype=torch.float64)}
    acc = MetricAccumulator(task.metric_names())
    task.update_metrics(acc, pred, batch)
    metrics = acc.compute()
    err = batch.force.double().abs()
    free = batch.fixed == 0
    for tag, group in ((1, "surface"), (2, "adsorbate")):
        rows = free & (batch.tags == tag)
        assert metrics[f"forces_mae_{group}"] == pytest.approx(float(err[rows].mean()))
    assert np.isnan(metrics["forces_mae_subsurface"])  # its only atoms (0 and 3) are fixed
    assert metrics["forces_mae"] == pytest.approx(float(err[free].mean()))
    assert "forces_mae_surface" not in ForcesTask(section("task"), section("optim"), TargetState()).metric_names()


@pytest.mark.parametrize("kind", ["mae", "mse"])
def test_energy_per_atom_loss_divides_each_error_by_its_atoms(kind):
    batch = toy_batch()  # structures of 3 and 4 atoms, y = 0.5 and 1.5
    norm = Normalizer(0.0, 1.0)
    optim = section("optim", energy_coefficient=1.0, force_coefficient=0.0, loss_energy=kind)
    out = {"energy": torch.tensor([2.0, -1.0]), "forces": torch.zeros(batch.pos.shape[0], 3)}
    errors = np.array([2.0 - 0.5, -1.0 - 1.5])
    total = ForcesTask(section("task"), optim, TargetState(norm)).loss(out, batch)
    per_atom = ForcesTask(section("task"), dict(optim, energy_per_atom=True), TargetState(norm)).loss(out, batch)
    reduce = (lambda e: np.abs(e).mean()) if kind == "mae" else (lambda e: (e ** 2).mean())
    assert float(total) == pytest.approx(reduce(errors))
    assert float(per_atom) == pytest.approx(reduce(errors / np.array([3.0, 4.0])))


def test_energy_per_atom_belongs_to_the_forces_trainer(s2ef_data):
    from trainers.trainer_testing import tiny_config

    from spinconv_train.config import ConfigError, config_from_dict

    config = tiny_config(s2ef_data)
    config["optim"]["energy_per_atom"] = True
    assert config_from_dict(config)["optim"]["energy_per_atom"] is True
    with pytest.raises(ConfigError, match="optim.energy_per_atom.*'energy'"):
        config_from_dict(dict(config, trainer="energy"))


def test_every_registered_task_offers_the_task_protocol():
    """The loop, checkpoints and calculators use a task only through tasks.protocol.Task:
    every registered task has its 13 members, and a class missing one does not pass."""
    from spinconv_train.registry import TRAINERS
    from spinconv_train.tasks.protocol import Task

    members = [name for name in dir(Task) if not name.startswith("_")] + list(Task.__annotations__)
    assert len(set(members)) == 13
    for name in TRAINERS.names():
        cls = TRAINERS.get(name)
        task = cls(section("task", target="y_relaxed"), section("optim"), TargetState())
        assert isinstance(task, Task), name
        assert all(hasattr(task, m) for m in set(members)), name

    class NoLoss(ForcesTask):
        loss = None

    assert not isinstance(NoLoss(section("task"), section("optim"), TargetState()), Task)
