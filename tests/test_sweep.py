"""Hyperparameter sweeps (--sweep-yml): one run per combination, configs checked first."""
from __future__ import annotations

import json
import os

import pytest
import yaml
from trainers.trainer_testing import read_jsonl, tiny_config, write_config

from spinconv_train.config import ConfigError
from spinconv_train.launch.cli import main
from spinconv_train.launch.sweep import read_sweep, sweep_points


def _sweep_file(tmp_path, grid, name="sweep.yml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(grid))
    return str(path)


def test_grid_points_and_labels():
    points = sweep_points({"optim.lr_initial": [0.001, 0.01], "seed": [0, 1, 2]})
    assert len(points) == 6
    assert points[0].values == {"optim.lr_initial": 0.001, "seed": 0}
    assert points[0].overrides == ["--optim.lr_initial=0.001", "--seed=0"]
    assert points[5].label == "lr_initial-0.01_seed-2"
    assert len({p.label for p in points}) == 6
    # Values whose labels would collide get numbered.
    clash = sweep_points({"model.name": ["a/b", "ab"]})
    assert [p.label for p in clash] == ["00-name-ab", "01-name-ab"]


def test_local_sweep_trains_every_combination(s2ef_data, tmp_path, capsys):
    config = write_config(tmp_path, tiny_config(s2ef_data, max_steps=2, max_epochs=None))
    sweep = _sweep_file(tmp_path, {"optim.lr_initial": [0.001, 0.01], "seed": [0, 1]})
    runs = tmp_path / "runs"
    assert main(["--mode", "train", "--config-yml", config, "--sweep-yml", sweep, "--run-dir", str(runs),
                 "--run-name", "grid", "--no-progress"]) == 0
    names = sorted(n for n in os.listdir(runs) if os.path.isdir(runs / n))
    assert names == ["grid-lr_initial-0.001_seed-0", "grid-lr_initial-0.001_seed-1",
                     "grid-lr_initial-0.01_seed-0", "grid-lr_initial-0.01_seed-1"]
    for name in names:
        saved = yaml.safe_load((runs / name / "config.yml").read_text())
        assert name.endswith(f"lr_initial-{saved['optim']['lr_initial']}_seed-{saved['seed']}")
    summary = json.loads((runs / "grid-sweep.json").read_text())
    assert set(summary["runs"]) == {n[len("grid-"):] for n in names}
    for label, entry in summary["runs"].items():
        last = read_jsonl(entry["run_dir"], "val")[-1]
        assert entry["trained"]["forces_mae"] == last["forces_mae"]
    maes = {label: entry["trained"]["forces_mae"] for label, entry in summary["runs"].items()}
    assert len(set(maes.values())) == 4  # learning rates and seeds really differ
    assert "sweep, final validation metrics:" in capsys.readouterr().out


def test_bad_sweeps_fail_before_any_run(s2ef_data, tmp_path, capsys):
    config = write_config(tmp_path, tiny_config(s2ef_data, max_steps=1, max_epochs=None))
    runs = tmp_path / "runs"
    base = ["--mode", "train", "--config-yml", config, "--run-dir", str(runs), "--no-progress"]
    cases = [
        ({"optim.lr_initial": [0.001], "optim.not_a_key": [1, 2]}, "not_a_key"),
        ({"optim.lr_initial": [0.001, "fast"]}, "optim.lr_initial"),
        ({"optim.lr_initial": []}, "non-empty list"),
        ({"optim.lr_initial": 0.001}, "non-empty list"),
    ]
    for k, (grid, message) in enumerate(cases):
        assert main([*base, "--sweep-yml", _sweep_file(tmp_path, grid, f"bad{k}.yml")]) == 2
        err = capsys.readouterr().err
        assert message in err and f"bad{k}.yml" in err, err
    assert main([*base, "--sweep-yml", _sweep_file(tmp_path, {"seed": [0, 1]}), "--seed", "3"]) == 2
    assert "--seed 3" in capsys.readouterr().err
    assert main(["--mode", "validate", "--config-yml", config, "--sweep-yml", _sweep_file(tmp_path, {"seed": [0]}),
                 "--checkpoint", "x.pt"]) == 2
    assert "use it with --mode train" in capsys.readouterr().err
    assert not runs.exists() or not os.listdir(runs)
    broken = tmp_path / "broken.yml"
    broken.write_text("a: [1,")
    with pytest.raises(ConfigError, match="broken.yml.*not valid YAML"):
        read_sweep(str(broken))
    with pytest.raises(ConfigError, match="cannot be read"):
        read_sweep(str(tmp_path / "missing.yml"))


def test_submitted_sweep_is_one_job_per_combination(s2ef_data, tmp_path, monkeypatch):
    from spinconv_train.launch import slurm

    submitted = []
    monkeypatch.setattr(slurm, "submit", lambda args, argv, config, entry: submitted.append((args.run_name, list(argv),
                                                                                       config["seed"])))
    config = write_config(tmp_path, tiny_config(s2ef_data, max_steps=1, max_epochs=None))
    sweep = _sweep_file(tmp_path, {"seed": [4, 5]})
    assert main(["--mode", "train", "--config-yml", config, "--sweep-yml", sweep, "--submit", "--run-name", "s",
                 "--run-dir", str(tmp_path / "runs")]) == 0
    assert [(name, seed) for name, _, seed in submitted] == [("s-seed-4", 4), ("s-seed-5", 5)]
    for _, argv, seed in submitted:
        assert "--sweep-yml" not in argv and argv[-1] == f"--seed={seed}"
