"""Config value checks: ranges of optim numbers, and errors blamed on the command line
when it set the value."""
from __future__ import annotations

import pytest
import yaml

from spinconv_train.config import ConfigError, load_config

BASE = {"trainer": "forces", "model": {"name": "spinconv"}, "dataset": {"train": {"src": "x"}},
        "optim": {"lr_initial": 1e-3, "max_epochs": 1}}


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "run.yml"
    path.write_text(yaml.safe_dump(BASE))
    return str(path)


@pytest.mark.parametrize("override,key", [
    ("--optim.lr_initial=-1e-3", "optim.lr_initial"), ("--optim.lr_initial=0", "optim.lr_initial"),
    ("--optim.lr_initial=.nan", "optim.lr_initial"), ("--optim.weight_decay=-1", "optim.weight_decay"),
    ("--optim.ema_decay=1.0", "optim.ema_decay"), ("--optim.factor=1.5", "optim.factor"),
    ("--optim.warmup_factor=2", "optim.warmup_factor"), ("--optim.num_workers=-1", "optim.num_workers"),
    ("--optim.eval_every=0", "optim.eval_every"), ("--optim.clip_grad_norm=0", "optim.clip_grad_norm"),
])
def test_out_of_range_optim_values_are_config_errors(config_file, override, key):
    with pytest.raises(ConfigError) as err:
        load_config(config_file, [override])
    assert f"'{key}'" in str(err.value) and "command line" in str(err.value)


def test_bad_override_is_blamed_on_the_command_line(config_file):
    with pytest.raises(ConfigError) as err:
        load_config(config_file, ["--optim.lr=abc"])
    assert str(err.value).startswith("command line: key 'optim.lr'")
    with pytest.raises(ConfigError) as err:
        load_config(config_file, ["--optim.lr_initial=abc"])
    assert str(err.value).startswith("command line: key 'optim.lr_initial'")


def test_section_error_names_the_command_line_keys_under_it(config_file):
    config = load_config(config_file, ["--model.hidden_channels=abc"])
    message = str(config.fail("model", "cannot build model 'spinconv': invalid literal for int()"))
    assert "command line: model.hidden_channels" in message and config_file in message
    assert config_file in str(load_config(config_file).fail("model", "x"))
    assert "command line" not in str(load_config(config_file).fail("model", "x"))


def test_section_error_from_the_cli_dry_run(config_file, capsys):
    from pathlib import Path

    from spinconv_train.launch.cli import main

    train = Path(__file__).resolve().parents[1] / "data" / "oc20_mini" / "s2ef" / "train"
    code = main(["--mode", "train", "--dry-run", "--config-yml", config_file, f"--dataset.train.src={train}",
                 "--model.hidden_channels=abc"])
    err = capsys.readouterr().err
    assert code == 2 and "command line: model.hidden_channels" in err
