"""main.py flags and bad input: clear errors, exit codes, nothing written over results."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from trainers.trainer_testing import tiny_config, write_config

from spinconv_train.launch.cli import build_parser, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_parser_has_the_reference_flags():
    args, extra = build_parser().parse_known_args(
        ["--mode", "train", "--config-yml", "c.yml", "--checkpoint", "x.pt", "--identifier", "abc", "--run-dir", "r",
         "--seed", "3", "--amp", "--debug", "--cpu", "--optim.lr_initial=1e-4"])
    assert (args.mode, args.seed, args.amp, args.debug, args.cpu) == ("train", 3, True, True, True)
    assert args.identifier == "abc"
    assert extra == ["--optim.lr_initial=1e-4"]


@pytest.mark.parametrize("flags,needle", [
    (["--mode", "run-relaxations", "--config-yml", "x.yml"], "--checkpoint"),
    (["--mode", "train", "--config-yml", "x.yml", "--submit", "--distributed"], "--submit and --distributed"),
    (["--mode", "train", "--config-yml", "x.yml", "--num-gpus", "2"], "need --submit"),
    (["--mode", "train"], "--config-yml"),
    (["--mode", "validate", "--config-yml", "nope.yml"], "nope.yml"),
])
def test_rejected_flags(flags, needle, capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main(flags) == 2
    assert needle in capsys.readouterr().err


def test_distributed_flag_needs_torchrun(capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main(["--mode", "train", "--config-yml", "x.yml", "--distributed"]) == 2
    assert "torchrun" in capsys.readouterr().err


def test_missing_dataset_path_names_key_and_file(s2ef_data, tmp_path, capsys):
    cfg = tiny_config(dict(s2ef_data, train=str(tmp_path / "missing")))
    path = write_config(tmp_path, cfg)
    assert main(["--mode", "train", "--config-yml", path, "--run-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "dataset.train.src" in err and "config.yml" in err and "missing" in err
    assert not os.path.exists(tmp_path / "runs")  # nothing was created


def test_unknown_model_argument_and_model_name(s2ef_data, tmp_path, capsys):
    path = write_config(tmp_path, tiny_config(s2ef_data))
    assert main(["--mode", "train", "--config-yml", path, "--model.hiden_channels=3"]) == 2
    err = capsys.readouterr().err
    assert "model.hiden_channels" in err and "command line" in err and "hidden_channels" in err
    assert main(["--mode", "train", "--config-yml", path, "--model.name=schnett"]) == 2
    err = capsys.readouterr().err
    assert "schnett" in err and "schnet" in err.replace("schnett", "")  # known names are listed


def test_validate_needs_a_checkpoint(s2ef_data, tmp_path, capsys):
    path = write_config(tmp_path, tiny_config(s2ef_data))
    assert main(["--mode", "validate", "--config-yml", path, "--run-dir", str(tmp_path / "runs")]) == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_main_py_runs_as_a_script():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), "--help"], capture_output=True,
                            text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0 and "--config-yml" in result.stdout and "run-relaxations" in result.stdout


def test_unknown_trainer_names_key_and_known_trainers(s2ef_data, tmp_path, capsys):
    path = write_config(tmp_path, tiny_config(s2ef_data))
    assert main(["--mode", "train", "--config-yml", path, "--trainer=forcez", "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "key 'trainer'" in err and "command line" in err and "energy" in err and "forces" in err


def test_console_command_and_main_py_share_one_entry_path():
    """``spinconv-train`` (setup.py) and main.py both run launch.entry.main, which sets
    OMP_WAIT_POLICY=PASSIVE before torch is imported (a user's own choice is kept)."""
    import re

    setup = open(os.path.join(ROOT, "setup.py")).read()
    assert re.search(r'"spinconv-train=spinconv_train\.launch\.entry:main"', setup)
    assert "from spinconv_train.launch.entry import main" in open(os.path.join(ROOT, "main.py")).read()
    # a stand-in command line reports what the real one would see when it imports torch
    probe = ("import os, sys, types\n"
             "from spinconv_train.launch import entry\n"
             "fake = types.ModuleType('spinconv_train.launch.cli')\n"
             "fake.main = lambda argv=None: print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules) or 0\n"
             "sys.modules['spinconv_train.launch.cli'] = fake\n"
             "sys.exit(entry.main([]))\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["PASSIVE", "False"]  # set, and torch not yet imported
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    kept = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120)
    assert kept.stdout.split()[0] == "ACTIVE", kept.stderr


@pytest.mark.parametrize("typo, flag", [("--chekpoint", "--checkpoint"), ("--dryrun", "--dry-run"),
                                        ("--no-progres", "--no-progress")])
def test_misspelled_flag_names_the_flag_it_resembles(typo, flag, capsys):
    assert main(["--mode", "train", "--config-yml", "x.yml", typo, "value"]) == 2
    assert f"unknown option {typo}; did you mean {flag}?" in capsys.readouterr().err


def test_config_overrides_are_not_taken_for_typos():
    # a dotted key or a top-level config key is an override, never a misspelled flag
    from spinconv_train.launch.args import build_parser, check_misspelled_flags

    check_misspelled_flags(build_parser(), ["--optim.checkpoint_every=5", "--seed=3", "--precision=float64"])
