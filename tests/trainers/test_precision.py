"""precision: float64 — the model, its batches and its checkpoints in double precision."""
from __future__ import annotations

import os

import pytest
import torch
from models.spinconv_testkit import slab_with_adsorbate
from trainers.trainer_testing import only_run_dir, read_jsonl, tiny_config, write_config

from spinconv_train.calculators import ModelCalculator
from spinconv_train.checkpoints import store as ckpt
from spinconv_train.config import ConfigError, config_from_dict
from spinconv_train.launch.cli import main

SPINCONV = {"name": "spinconv", "hidden_channels": 8, "mid_hidden_channels": 16, "num_interactions": 1,
            "num_basis_functions": 16, "sphere_size_lat": 4, "sphere_size_long": 4, "max_num_neighbors": 12,
            "cutoff": 4.0, "embedding_size": 8, "force_estimator": "grad", "envelope": True}


def _run(tmp_path, s2ef_data, name, precision):
    config = tiny_config(s2ef_data, max_steps=3, max_epochs=None)
    config["model"] = dict(SPINCONV)
    config["precision"] = precision
    config["logger"]["print_every"] = 1
    path = write_config(tmp_path, config, f"{name}.yml")
    assert main(["--mode", "train", "--config-yml", path, "--run-dir", str(tmp_path / name), "--no-progress"]) == 0
    return only_run_dir(tmp_path / name)


def test_float64_training_matches_float32_and_stays_double(s2ef_data, tmp_path, torch_threads):
    single = _run(tmp_path, s2ef_data, "single", "float32")
    double = _run(tmp_path, s2ef_data, "double", "float64")
    payload = ckpt.read(os.path.join(double, "checkpoint.pt"))
    assert all(t.dtype == torch.float64 for t in payload["model"].values() if t.is_floating_point())
    assert all(t.dtype == torch.float32 for t in ckpt.read(os.path.join(single, "checkpoint.pt"))["model"].values()
               if t.is_floating_point())
    # Same seed, same initial weights: the first step's loss agrees to float32 rounding.
    first = [read_jsonl(run, "train")[0]["loss"] for run in (single, double)]
    assert first[1] == pytest.approx(first[0], rel=1e-4)
    assert read_jsonl(double, "val")[-1]["forces_mae"] == pytest.approx(read_jsonl(single, "val")[-1]["forces_mae"],
                                                                       rel=1e-2)
    # The calculator of a float64 checkpoint computes in float64 from unrounded positions.
    calc = ModelCalculator.from_checkpoint(os.path.join(double, "checkpoint.pt"))
    assert next(calc.model.parameters()).dtype == torch.float64
    atoms = slab_with_adsorbate(0)
    atoms.calc = calc
    assert atoms.get_forces().dtype.name == "float64"


def test_precision_values_are_checked(s2ef_data):
    config = tiny_config(s2ef_data)
    for spelling, resolved in (("float64", "float64"), ("double", "float64"), ("fp32", "float32")):
        assert config_from_dict(dict(config, precision=spelling))["precision"] == resolved
    with pytest.raises(ConfigError, match="precision.*float16"):
        config_from_dict(dict(config, precision="float16"))
