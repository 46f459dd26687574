"""Checkpoints remember the elements they were trained on; inference and fine-tuning say when
they meet others, and fine-tuning says when new energies do not fit the kept normaliser."""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from trainers.trainer_testing import only_run_dir, tiny_config, write_config, write_split

from spinconv_train.checkpoints import store as ckpt
from spinconv_train.datasets.coverage import EnergyScaleWarning, UnseenElementWarning
from spinconv_train.launch.cli import main


def _al_slabs(count: int, seed: int, energy_shift_per_atom: float):
    """Al(111) 2x2x3 slabs with an N adatom: elements a Cu/O/H model never saw, with energies
    shifted per atom as total energies of another code would be."""
    from ase.build import add_adsorbate, fcc111
    from ase.calculators.emt import EMT

    from spinconv_train.datasets.ase_convert import atoms_to_data

    rng = np.random.default_rng(seed)
    records = []
    for k in range(count):
        slab = fcc111("Al", size=(2, 2, 3), vacuum=6.0)
        add_adsorbate(slab, "N", 1.5, "fcc")
        slab.set_tags([0] * 4 + [1] * 8 + [2])
        slab.positions += rng.normal(scale=0.05, size=slab.positions.shape)
        slab.calc = EMT()
        energy = slab.get_potential_energy() + energy_shift_per_atom * len(slab) + 0.5 * rng.normal()
        records.append(atoms_to_data(slab, energy=energy, forces=slab.get_forces(), sid=100 + k, fid=0))
    return records


def _train(config_path, run_dir):
    assert main(["--mode", "train", "--config-yml", config_path, "--run-dir", str(run_dir), "--no-progress"]) == 0
    return only_run_dir(run_dir)


@pytest.fixture(scope="module")
def pretrained(s2ef_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("coverage")
    run = _train(write_config(root, tiny_config(s2ef_data, max_epochs=1)), root / "runs")
    new = write_split(str(root / "al"), _al_slabs(6, seed=7, energy_shift_per_atom=-4.0))
    return {"checkpoint": os.path.join(run, "checkpoint.pt"), "root": root, "al": new}


def test_checkpoint_remembers_the_training_elements(pretrained):
    assert ckpt.read(pretrained["checkpoint"])["targets"]["elements"] == [1, 8, 29]  # H, O, Cu


def test_validate_names_unseen_elements_and_structures(pretrained, tmp_path):
    args = ["--mode", "validate", "--checkpoint", pretrained["checkpoint"], "--no-progress",
            "--run-dir", str(tmp_path), f"--dataset.val.src={pretrained['al']}"]
    with pytest.warns(UnseenElementWarning, match=r"100_0: elements N \(7\), Al \(13\) never occurred in the "
                      r"training data of .*checkpoint\.pt"):
        assert main(args) == 0


def test_calculator_names_unseen_elements(pretrained):
    from ase.build import fcc111

    from spinconv_train.calculators import ModelCalculator

    calc = ModelCalculator.from_checkpoint(pretrained["checkpoint"])
    slab = fcc111("Al", size=(2, 2, 2), vacuum=5.0)
    slab.calc = calc
    with pytest.warns(UnseenElementWarning, match=r"Al8: elements Al \(13\) never occurred"):
        slab.get_potential_energy()
    cu = fcc111("Cu", size=(2, 2, 2), vacuum=5.0)
    cu.calc = calc
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnseenElementWarning)
        cu.get_potential_energy()


def _finetune(pretrained, tmp_path, targets):
    cfg = tiny_config({"train": pretrained["al"], "val": pretrained["al"]}, max_epochs=1)
    cfg["finetune"] = {"checkpoint": pretrained["checkpoint"], "targets": targets}
    if targets == "fit":
        cfg["task"]["element_references"] = True
    return _train(write_config(tmp_path, cfg, "finetune.yml"), tmp_path / "runs")


def test_finetuning_on_another_energy_scale_names_the_fix(pretrained, tmp_path):
    with pytest.warns(EnergyScaleWarning) as caught:
        _finetune(pretrained, tmp_path, "checkpoint")
    text = "\n".join(str(w.message) for w in caught)
    assert "never saw in training" in text and "N, Al" in text
    assert "do not match the normaliser" in text and "spreads from the normaliser's mean" in text
    assert "--finetune.targets=fit --task.element_references=true" in text


def test_finetuning_with_refitted_targets_only_notes_new_elements(pretrained, tmp_path):
    with pytest.warns(EnergyScaleWarning) as caught:
        run = _finetune(pretrained, tmp_path, "fit")
    text = "\n".join(str(w.message) for w in caught)
    assert "their embeddings start untrained" in text and "normaliser" not in text
    # the fine-tuned model has seen both trainings' elements
    assert ckpt.read(os.path.join(run, "checkpoint.pt"))["targets"]["elements"] == [1, 7, 8, 13, 29]


def test_an_element_beyond_the_embedding_is_a_dataset_error_naming_the_file(pretrained, tmp_path, capsys):
    from trainers.trainer_testing import emt_slabs

    records = emt_slabs(2, seed=9)
    records[1].atomic_numbers[0] = 110  # beyond SchNet's embedding (Z <= 99)
    bad = write_split(str(tmp_path / "bad"), records)
    capsys.readouterr()
    assert main(["--mode", "validate", "--checkpoint", pretrained["checkpoint"], "--no-progress",
                 "--run-dir", str(tmp_path / "v"), f"--dataset.val.src={bad}"]) == 2
    err = capsys.readouterr().err
    assert "atomic number 110" in err and "data.lmdb" in err and "1..99" in err
