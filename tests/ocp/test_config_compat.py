"""OCP config keys -> native settings (spinconv_train/config_ocp.py, config.py)."""
from __future__ import annotations

import copy
import logging

import pytest
import yaml

from spinconv_train.config import ConfigError, load_config
from spinconv_train.config_ocp import translate

OCP_TRAIN = {"src": "data/train", "normalize_labels": True, "target_mean": -0.75, "target_std": 2.9,
             "grad_target_mean": 0.0, "grad_target_std": 2.5}


def ocp_config(**changes):
    config = {"trainer": "forces", "dataset": [dict(OCP_TRAIN), {"src": "data/val"}, {"src": "data/test"}],
              "logger": "tensorboard", "task": {"dataset": "trajectory_lmdb", "metric": "mae"},
              "model": {"name": "spinconv", "otf_graph": True},
              "optim": {"batch_size": 3, "lr_initial": 4e-4, "max_epochs": 2, "num_workers": 0}}
    config.update(changes)
    return config


def write(path, data):
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


def test_positional_dataset_list_is_train_val_test_with_ocp_normaliser(tmp_path):
    config = load_config(write(tmp_path / "c.yml", ocp_config()))
    assert config["dataset"] == {"train": {"src": "data/train"}, "val": {"src": "data/val"},
                                 "test": {"src": "data/test"}}
    assert config["task"]["normalize_labels"] is True
    assert config["task"]["normalizer"] == {"mean": -0.75, "std": 2.9, "force_std": 2.5}
    assert config.origin("dataset.val") == str(tmp_path / "c.yml")


def test_ocp_trainer_defaults_apply_to_ocp_form(tmp_path):
    config = load_config(write(tmp_path / "c.yml", ocp_config()))
    assert config["optim"]["optimizer"] == "AdamW"              # OCP's default optimiser
    assert config["optim"]["scheduler"] == "step"               # OCP's default LambdaLR: warm-up + milestones
    assert config["task"]["metric"] == "energy_force_within_threshold"  # OCP's S2EF primary metric


def test_native_config_is_left_alone(tmp_path):
    native = {"trainer": "forces", "dataset": {"train": {"src": "x"}}, "model": {"name": "spinconv"},
              "optim": {"max_epochs": 1}, "task": {"metric": "mae"}}
    data = copy.deepcopy(native)
    assert translate(data, {}) == [] and data == native
    config = load_config(write(tmp_path / "n.yml", native))
    assert config["optim"]["optimizer"] == "Adam" and config["optim"]["scheduler"] is None
    assert config["task"]["normalize_labels"] is True and config["task"]["normalizer"] is None


def test_without_statistics_ocp_normalises_only_when_asked(tmp_path):
    fit = ocp_config(dataset=[{"src": "a", "normalize_labels": True}])
    assert load_config(write(tmp_path / "fit.yml", fit))["task"]["normalizer"] is None  # fitted here
    plain = ocp_config(dataset=[{"src": "a"}])
    assert load_config(write(tmp_path / "plain.yml", plain))["task"]["normalize_labels"] is False


def test_unsupported_ocp_values_are_errors_naming_the_key(tmp_path):
    shifted = ocp_config(dataset=[dict(OCP_TRAIN, grad_target_mean=0.5)])
    with pytest.raises(ConfigError, match=r"dataset.train.grad_target_mean"):
        load_config(write(tmp_path / "a.yml", shifted))
    total = ocp_config(dataset=[dict(OCP_TRAIN, train_on_oc20_total_energies=True)])
    with pytest.raises(ConfigError, match=r"dataset.train.train_on_oc20_total_energies"):
        load_config(write(tmp_path / "b.yml", total))
    too_many = ocp_config(dataset=[{"src": "a"}] * 4)
    with pytest.raises(ConfigError, match=r"\[train, val, test\]"):
        load_config(write(tmp_path / "c.yml", too_many))


def test_relaxation_task_keys_are_mapped(tmp_path):
    task = {"dataset": "lmdb", "primary_metric": "forces_mae", "relaxation_steps": 300, "relaxation_fmax": 0.03,
            "write_pos": True, "relax_dataset": {"src": "r.lmdb", "total_shards": 1, "shard": 0},
            "relax_opt": {"name": "lbfgs", "maxstep": 0.04, "memory": 50, "damping": 1.0, "alpha": 70.0},
            "eval_relaxations": False, "strict_load": True, "save_full_traj": True,
            "set_deterministic_scatter": False}
    config = load_config(write(tmp_path / "c.yml", ocp_config(task=task)))
    assert config["task"]["metric"] == "forces_mae"
    assert config["task"]["relax_opt"]["steps"] == 300 and config["task"]["relax_opt"]["fmax"] == 0.03
    assert config["task"]["write_relaxed_structures"] is True
    assert config["task"]["relax_dataset"] == {"src": "r.lmdb"}
    from spinconv_train.relaxation.settings import relax_settings

    assert relax_settings(config).options.steps == 300


def test_keys_without_effect_warn_once_naming_them(tmp_path, caplog):
    task = {"dataset": "lmdb", "num_relaxation_batches": 5, "prediction_dtype": "float16",
            "eval_relaxations": True, "relax_opt": {"traj_dir": "t"}}
    optim = {"batch_size": 3, "lr_initial": 4e-4, "max_epochs": 2, "load_balancing": "neighbors",
             "num_workers": 10_000}
    with caplog.at_level(logging.WARNING, logger="spinconv_train.ocp"):
        config = load_config(write(tmp_path / "c.yml", ocp_config(task=task, optim=optim, slurm={"x": 1})))
    lines = [r.getMessage() for r in caplog.records]
    for key in ("task.num_relaxation_batches", "task.prediction_dtype", "task.eval_relaxations",
                "task.relax_opt.traj_dir", "optim.load_balancing", "optim.num_workers", "slurm"):
        assert sum(f"'{key}'" in line for line in lines) == 1, key
    assert all(str(tmp_path / "c.yml") in line for line in lines)
    assert config["optim"]["num_workers"] < 10_000 and config["task"]["write_trajectories"] is True


def test_plateau_mode_follows_the_monitored_metric(tmp_path, caplog):
    optim = {"batch_size": 3, "lr_initial": 4e-4, "max_epochs": 2, "scheduler": "ReduceLROnPlateau", "mode": "min"}
    with caplog.at_level(logging.WARNING, logger="spinconv_train.ocp"):
        config = load_config(write(tmp_path / "c.yml", ocp_config(optim=optim)))
    assert config["optim"]["mode"] == "max"
    assert any("'optim.mode'" in r.getMessage() for r in caplog.records)


def test_null_scheduler_is_constant_without_warmup(tmp_path):
    optim = {"batch_size": 3, "lr_initial": 4e-4, "max_epochs": 2, "scheduler": "Null", "warmup_steps": 100}
    config = load_config(write(tmp_path / "c.yml", ocp_config(optim=optim)))
    assert config["optim"]["scheduler"] == "constant" and config["optim"]["warmup_steps"] == 0


def test_includes_resolve_from_working_directory_first(tmp_path, monkeypatch, caplog):
    (tmp_path / "configs" / "a").mkdir(parents=True)
    write(tmp_path / "configs" / "a" / "base.yml", {"optim": {"batch_size": 5}})
    main = write(tmp_path / "configs" / "a" / "run.yml",
                 yaml.safe_dump(ocp_config()) + "includes: [configs/a/base.yml]\n")
    monkeypatch.chdir(tmp_path)
    assert load_config(main)["optim"]["batch_size"] == 3  # the including file wins over its include
    # Relative to the including file's folder when the working directory has no such file.
    write(tmp_path / "configs" / "a" / "local.yml", {"optim": {"eval_batch_size": 7}})
    other = write(tmp_path / "configs" / "a" / "other.yml", yaml.safe_dump(ocp_config()) + "includes: [local.yml]\n")
    assert load_config(other)["optim"]["eval_batch_size"] == 7
    # Both exist and differ: the working directory's is used, with a warning naming both.
    write(tmp_path / "local.yml", {"optim": {"eval_batch_size": 9}})
    with caplog.at_level(logging.WARNING):
        assert load_config(other)["optim"]["eval_batch_size"] == 9
    assert any("working directory" in r.getMessage() and "local.yml" in r.getMessage() for r in caplog.records)


def test_missing_include_names_both_places(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main = write(tmp_path / "run.yml", "includes: [configs/nowhere.yml]\nmodel: {name: spinconv}\n")
    with pytest.raises(ConfigError, match=r"nowhere.yml.*looked for.*and"):
        load_config(main)
