"""The runner is right independent of training: with a model whose forces are exactly EMT's,
relaxations converge to fmax and land on the EMT-relaxed positions (high ADwT)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.emt import EMT
from ase.optimize import BFGS
from trainers.trainer_testing import emt_slabs, tiny_config, write_split

from spinconv_train.calculators import ModelCalculator, record_to_atoms
from spinconv_train.config import config_from_dict
from spinconv_train.datasets import LmdbDataset
from spinconv_train.relaxation import RelaxOptions, relax_indices, relaxation_metrics
from spinconv_train.tasks.forces import ForcesTask
from spinconv_train.tasks.normalizer import Normalizer
from spinconv_train.tasks.targets import TargetState

NORMALIZER = Normalizer(mean=-2.0, std=3.0)  # outputs are normalised, as a trained model's are


class EMTModel(torch.nn.Module):
    """Test double of a force model: EMT energy and forces of each structure of the batch,
    normalised with ``NORMALIZER`` (so the calculator's denormalising is exercised)."""

    def forward(self, batch) -> dict:
        energies, forces = [], []
        for k in range(int(batch.natoms.numel())):
            sel = batch.batch == k
            atoms = Atoms(numbers=batch.atomic_numbers[sel].long().numpy(), positions=batch.pos[sel].double().numpy(),
                          cell=batch.cell[k].double().numpy(), pbc=batch.pbc[k].numpy())
            atoms.calc = EMT()
            energies.append(atoms.get_potential_energy())
            forces.append(atoms.get_forces(apply_constraint=False))
        energy = torch.tensor(energies, dtype=torch.float64)
        force = torch.tensor(np.concatenate(forces), dtype=torch.float64)
        return {"energy": NORMALIZER.norm(energy).float(), "forces": NORMALIZER.norm_forces(force).float()}


def emt_calculator() -> ModelCalculator:
    config = config_from_dict(tiny_config({"train": "unused"}))
    task = ForcesTask(config["task"], config["optim"], TargetState(NORMALIZER))
    return ModelCalculator(EMTModel(), task, torch.device("cpu"))


@pytest.fixture(scope="module")
def relax_dataset(tmp_path_factory):
    """Rattled Cu(111)+O/H slabs with the adsorbate 0.3 Å too high; ``pos_relaxed`` and
    ``y_relaxed`` from a tight EMT BFGS relaxation (fmax 0.002) of the stored positions."""
    records = emt_slabs(3, seed=11, labelled=False)
    for k, record in enumerate(records):
        record.pos[-1, 2] += 0.3
        atoms = record_to_atoms(record)
        atoms.calc = EMT()
        BFGS(atoms, logfile=None).run(fmax=0.002, steps=500)
        record.pos_relaxed = torch.tensor(atoms.get_positions(), dtype=torch.float32)
        record.y_relaxed = float(atoms.get_potential_energy())
        record.sid = 500 + k
    folder = write_split(str(tmp_path_factory.mktemp("emt_relax")), records)
    return LmdbDataset({"src": folder})


@pytest.mark.parametrize("name", ["lbfgs", "bfgs", "fire"])
def test_relaxation_with_exact_emt_forces_converges_to_the_emt_minimum(relax_dataset, name):
    options = RelaxOptions.from_mapping({"name": name, "fmax": 0.05, "steps": 300, "maxstep": 0.04})
    results = relax_indices(relax_dataset, range(len(relax_dataset)), emt_calculator(), options)
    assert [r.index for r in results] == [0, 1, 2]
    for result in results:
        record = relax_dataset[result.index]
        assert result.converged and 0 < result.steps < 300
        # Independent check with ASE's EMT at the returned positions: converged to fmax, and
        # the reported energy is EMT's (denormalised correctly).
        atoms = record_to_atoms(record)
        atoms.positions = result.positions
        atoms.calc = EMT()
        assert np.linalg.norm(atoms.get_forces(), axis=1).max() < 0.05 + 1e-4
        assert result.energy == pytest.approx(atoms.get_potential_energy(), abs=2e-4)
        fixed = record.fixed.numpy() != 0
        assert fixed.sum() == 4
        np.testing.assert_array_equal(result.positions[fixed], record.pos.double().numpy()[fixed])
        assert np.abs(result.positions[~fixed] - result.initial_positions[~fixed]).max() > 0.05
    metrics = relaxation_metrics(results)
    assert metrics["converged"] == 1.0
    assert metrics["average_distance_within_threshold"] > 0.9
    assert metrics["average_distance_within_threshold_initial"] < metrics["average_distance_within_threshold"] - 0.2
    assert metrics["energy_mae"] < 0.02 and metrics["energy_within_threshold"] == 1.0


def test_each_structure_has_its_own_optimiser_history(relax_dataset):
    """A structure's relaxation does not depend on which others are relaxed with it
    (the reference's batched L-BFGS shared one history across the batch)."""
    options = RelaxOptions.from_mapping({"name": "lbfgs", "steps": 40})
    together = relax_indices(relax_dataset, [0, 2], emt_calculator(), options)
    alone = relax_indices(relax_dataset, [2], emt_calculator(), options)
    np.testing.assert_array_equal(together[1].positions, alone[0].positions)
    assert together[1].steps == alone[0].steps


def test_step_limit_is_respected_and_reported_unconverged(relax_dataset):
    options = RelaxOptions.from_mapping({"name": "lbfgs", "fmax": 1e-4, "steps": 3})
    (result,) = relax_indices(relax_dataset, [1], emt_calculator(), options)
    assert result.steps == 3 and not result.converged and result.fmax > 1e-4


def test_trajectories_are_named_by_sid_and_fid(relax_dataset, tmp_path):
    from ase.io import read

    options = RelaxOptions.from_mapping({"name": "fire", "steps": 2})
    results = relax_indices(relax_dataset, [0, 1], emt_calculator(), options, trajectory_dir=str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["500_0.traj", "501_1.traj"]
    frames = read(str(tmp_path / "501_1.traj"), index=":")
    assert len(frames) == 3 and np.allclose(frames[-1].positions, results[1].positions)


def _emt_task():
    config = config_from_dict(tiny_config({"train": "unused"}))
    return ForcesTask(config["task"], config["optim"], TargetState(NORMALIZER))


@pytest.mark.parametrize("name, batch_size", [("lbfgs", 2), ("fire", 3), ("bfgs", 8)])
def test_batched_relaxations_equal_one_at_a_time(relax_dataset, name, batch_size):
    """Each structure keeps its own optimiser: relaxing them together with batched model calls
    gives exactly the sequential trajectories (EMT per structure is independent of the batch)."""
    from spinconv_train.relaxation.mode import relax_calculator

    options = RelaxOptions.from_mapping({"name": name, "steps": 60, "batch_size": batch_size})
    indices = [2, 0, 1, 2]  # order kept, repeats allowed
    sequential = relax_indices(relax_dataset, indices, emt_calculator(), options)
    evaluator = relax_calculator(EMTModel(), _emt_task(), torch.device("cpu"), batch_size)
    batched = relax_indices(relax_dataset, indices, evaluator, options)
    assert [r.index for r in batched] == indices
    for a, b in zip(sequential, batched):
        np.testing.assert_array_equal(a.positions, b.positions)
        assert (a.steps, a.converged, a.energy) == (b.steps, b.converged, b.energy)
    # one model call per lockstep round: the batches hold up to batch_size structures, and
    # there are far fewer calls than structure evaluations
    sizes = evaluator.batch_sizes
    assert max(sizes) == min(batch_size, len(indices))
    assert sum(sizes) == sum(r.steps + 1 for r in sequential)
    assert len(sizes) < sum(sizes)


def test_batched_relaxation_of_spinconv_matches_its_calculator():
    """A real (untrained, float64, energy-centric) SpinConv: batched predictions through
    ``predict_atoms`` against the calculator one structure at a time, with the cell relaxed."""
    from models.spinconv_testkit import distorted_crystal, make_model, to_data

    from spinconv_train.relaxation.mode import relax_calculator

    class RawTask:
        targets = TargetState()  # no normaliser; elements unknown
        def denormalize(self, out, batch):
            return out

    torch.manual_seed(0)
    model = make_model(torch.float64, force_estimator="grad", envelope=True, cutoff=5.0).eval()
    records = [to_data(distorted_crystal(seed=s)) for s in (1, 2, 3)]
    options = RelaxOptions.from_mapping({"name": "fire", "steps": 15, "relax_cell": True, "batch_size": 3})
    sequential = relax_indices(records, [0, 1, 2], ModelCalculator(model, RawTask()), options)
    evaluator = relax_calculator(model, RawTask(), torch.device("cpu"), 3)
    batched = relax_indices(records, [0, 1, 2], evaluator, options)
    for a, b in zip(sequential, batched):  # batched and single evaluation round differently (~1e-12)
        np.testing.assert_allclose(b.positions, a.positions, atol=1e-6)
        np.testing.assert_allclose(b.cell, a.cell, atol=1e-6)
        assert a.steps == b.steps and b.energy == pytest.approx(a.energy, abs=1e-6)
    assert np.abs(batched[0].cell - records[0].cell.numpy().reshape(3, 3)).max() > 1e-4  # the cell moved
    assert max(evaluator.batch_sizes) == 3


def test_batched_relaxation_raises_model_and_record_errors_without_hanging(relax_dataset):
    from spinconv_train.calculators.batched import BatchEvaluator

    options = RelaxOptions.from_mapping({"name": "lbfgs", "steps": 5, "batch_size": 3})
    calls = []

    def failing(frames, stress):
        calls.append(len(frames))
        if len(calls) == 2:
            raise FloatingPointError("model produced NaN")
        return [{"energy": 0.0, "forces": np.ones((len(a), 3))} for a in frames]  # never converged

    with pytest.raises(FloatingPointError, match="model produced NaN"):
        relax_indices(relax_dataset, [0, 1, 2], BatchEvaluator(failing), options)

    class Broken:
        def __getitem__(self, index):
            if index == 1:
                raise KeyError("record 1 is unreadable")
            return relax_dataset[index]

    evaluator = BatchEvaluator(lambda frames, stress: [{"energy": 0.0, "forces": np.zeros((len(a), 3))}
                                                       for a in frames])
    with pytest.raises(KeyError, match="record 1 is unreadable"):
        relax_indices(Broken(), [0, 1, 2], evaluator, options)
    short = BatchEvaluator(lambda frames, stress: [{"energy": 0.0, "forces": np.ones((len(frames[0]), 3))}])
    with pytest.raises(RuntimeError, match="returned 1 results for 3 structures"):
        relax_indices(relax_dataset, [0, 1, 2], short, options)


def test_relax_batch_size_is_checked():
    from spinconv_train.relaxation.settings import OptionError

    assert RelaxOptions.from_mapping({}).batch_size == 8
    for bad in (0, 2.5, True):
        with pytest.raises(OptionError, match="key 'task.relax_opt.batch_size': must be an integer >= 1"):
            RelaxOptions.from_mapping({"batch_size": bad})


def test_binding_cap_is_warned_for_energy_centric_relaxations():
    from models.spinconv_testkit import make_model, slab_with_adsorbate

    from spinconv_train.datasets.ase_convert import atoms_to_data
    from spinconv_train.relaxation.mode import warn_binding_cap

    records = [atoms_to_data(slab_with_adsorbate(seed=k), sid=10 + k) for k in range(2)]
    capped = make_model(force_estimator="grad", cutoff=5.0, max_num_neighbors=6)
    with pytest.warns(UserWarning, match=r"max_num_neighbors: 6\) cuts .* of 2 structure\(s\): sid 10 \(\d+ of 14 "
                      r"atoms\), sid 11"):
        assert warn_binding_cap(capped, records, range(2)) is not None
    assert warn_binding_cap(make_model(force_estimator="grad", cutoff=5.0, max_num_neighbors=None), records,
                            range(2)) is None
    assert warn_binding_cap(make_model(force_estimator="direct", cutoff=5.0, max_num_neighbors=6), records,
                            range(2)) is None  # force-centric: no energy to be smooth
