"""Config loading: includes, dotted overrides, validation messages, saving."""
from __future__ import annotations

import pytest
import yaml

from spinconv_train.config import ConfigError, load_config, parse_overrides, save_config


def write(path, data) -> str:
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


@pytest.fixture
def base_files(tmp_path):
    (tmp_path / "base").mkdir()
    write(tmp_path / "base" / "common.yml", {
        "trainer": "forces", "task": {"dataset": "lmdb"},
        "optim": {"batch_size": 3, "lr_initial": 4e-4, "max_epochs": 2},
    })
    main = write(tmp_path / "run.yml", "includes:\n  - base/common.yml\n"
                 "model:\n  name: schnet\n  hidden_channels: 8\noptim:\n  lr_initial: 1e-3\n")
    return tmp_path, main


def test_includes_are_relative_and_later_files_win(base_files):
    _, main = base_files
    config = load_config(main)
    assert config["optim"]["batch_size"] == 3          # from the included file
    assert config["optim"]["lr_initial"] == 1e-3        # the including file wins; `1e-3` is a float
    assert isinstance(config["optim"]["lr_initial"], float)
    assert config["model"] == {"name": "schnet", "hidden_channels": 8}
    assert config["optim"]["loss_force"] == "mae"       # default filled in


def test_dotted_overrides_parse_yaml_scalars(base_files):
    _, main = base_files
    config = load_config(main, ["--optim.lr_initial=1e-4", "--model.hidden_channels", "2",
                                "--task.train_on_free_atoms=false", "--optim.lr_milestones=[10, 20]"])
    assert config["optim"]["lr_initial"] == pytest.approx(1e-4)
    assert config["model"]["hidden_channels"] == 2
    assert config["task"]["train_on_free_atoms"] is False
    assert config["optim"]["lr_milestones"] == [10, 20]


def test_unknown_key_names_key_and_file(base_files):
    root, _ = base_files
    bad = write(root / "bad.yml", "includes: [base/common.yml]\nmodel: {name: schnet}\noptim:\n  lr_intial: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert "optim.lr_intial" in str(err.value) and "bad.yml" in str(err.value)
    assert "lr_initial" in str(err.value)  # the known keys are listed


def test_wrong_type_in_included_file_names_that_file(base_files):
    root, _ = base_files
    write(root / "base" / "common.yml", {"optim": {"batch_size": "three", "max_epochs": 1}})
    with pytest.raises(ConfigError) as err:
        load_config(str(root / "run.yml"))
    assert "optim.batch_size" in str(err.value) and "common.yml" in str(err.value)
    assert "'three'" in str(err.value)


def test_override_errors_name_the_command_line(base_files):
    _, main = base_files
    with pytest.raises(ConfigError, match="command line.*optim.batch_size"):
        load_config(main, ["--optim.batch_size=abc"])
    with pytest.raises(ConfigError, match="command line"):
        load_config(main, ["--optim.nope=1"])


def test_bool_is_not_an_int(base_files):
    _, main = base_files
    with pytest.raises(ConfigError, match="optim.batch_size"):
        load_config(main, ["--optim.batch_size=true"])


@pytest.mark.parametrize("key", ["energy_coefficient", "force_coefficient", "stress_coefficient"])
def test_negative_loss_coefficient_is_refused(base_files, key):
    _, main = base_files
    with pytest.raises(ConfigError, match=f"optim.{key}.*>= 0"):
        load_config(main, [f"--optim.{key}=-1"])


def test_include_cycle_and_missing_include(tmp_path):
    write(tmp_path / "a.yml", "includes: [b.yml]\n")
    write(tmp_path / "b.yml", "includes: [a.yml]\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(str(tmp_path / "a.yml"))
    write(tmp_path / "c.yml", "includes: [nope.yml]\n")
    with pytest.raises(ConfigError, match="nope.yml"):
        load_config(str(tmp_path / "c.yml"))


def test_values_are_checked(base_files):
    _, main = base_files
    with pytest.raises(ConfigError, match="optim.loss_force.*l2mae"):
        load_config(main, ["--optim.loss_force=huber"])
    with pytest.raises(ConfigError, match="dataset.train.*src"):
        load_config(main, ["--dataset.train.path=x"])
    with pytest.raises(ConfigError, match="model.name"):
        load_config(main, ["--model.name="])


def test_logger_forms_and_saved_config_round_trip(base_files, tmp_path):
    _, main = base_files
    assert load_config(main, ["--logger=tensorboard"])["logger"]["backends"] == ["tensorboard"]
    config = load_config(main, ["--logger.backends=[wandb]", "--logger.print_every=5"])
    assert config["logger"]["backends"] == ["wandb"] and config["logger"]["print_every"] == 5
    out = tmp_path / "saved.yml"
    save_config(config, str(out))
    again = load_config(str(out))
    assert dict(again) == dict(config)


def test_parse_overrides_rejects_garbage():
    with pytest.raises(ConfigError):
        parse_overrides(["optim.lr=1"])
    with pytest.raises(ConfigError, match="no value"):
        parse_overrides(["--optim.lr"])


ROOT = __import__("os").path.dirname(__import__("os").path.dirname(__import__("os").path.abspath(__file__)))
SHIPPED = sorted(str(p.relative_to(ROOT)) for p in __import__("pathlib").Path(ROOT, "configs").rglob("*.yml")
                 if p.name != "base.yml")


def test_configs_are_shipped():
    names = set(SHIPPED)
    for expected in ("configs/s2ef/oc20_mini/spinconv_force.yml", "configs/s2ef/oc20_mini/spinconv_energy.yml",
                     "configs/s2ef/oc20_mini/schnet.yml", "configs/s2ef/2M/spinconv.yml",
                     "configs/is2re/oc20_mini/spinconv.yml", "configs/md17/ethanol.yml", "configs/qm9/U0.yml"):
        assert expected in names


@pytest.mark.parametrize("path", SHIPPED)
def test_shipped_config_validates_and_builds(path, monkeypatch):
    import os

    from spinconv_train.checkpoints import build_model
    from spinconv_train.registry import DATASETS
    from spinconv_train.tasks.build import build_task, monitored_metric
    from spinconv_train.tasks.data import build_dataset
    from spinconv_train.tasks.targets import TargetState

    monkeypatch.chdir(ROOT)  # dataset paths are relative to the repository root
    config = load_config(path)
    assert config["model"]["name"] in ("spinconv", "schnet", "dimenetplusplus")
    assert config["task"]["dataset"] in DATASETS
    task = build_task(config, TargetState())
    assert monitored_metric(config, task) in task.metric_names()
    if "/oc20_mini/" in path or "_xtb" in str(config["dataset"]["train"]["src"]) or "qm9" in path:
        assert os.path.exists(config["dataset"]["train"]["src"])  # the committed data
        for split in config["dataset"]:
            assert len(build_dataset(config, split)) > 0
    quick = config["model"]["name"] != "dimenetplusplus"  # its sympy basis set-up takes ~1 min
    if quick and ("oc20_mini" in path or "qm9/U0" in path or "md17/ethanol" in path):
        build_model(config)  # arguments accepted by the model
