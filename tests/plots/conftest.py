"""Fixtures of the plot tests: two tiny trained runs (SchNet, a few steps) on the EMT fixture data."""
from __future__ import annotations

import os

import pytest
from trainers.trainer_testing import tiny_config, write_config


@pytest.fixture(scope="session")
def trained_runs(s2ef_data, tmp_path_factory) -> dict[str, str]:
    """``{"a": run_dir, "b": run_dir}``: 6 steps each (seeds 0 and 1), validated every 3
    steps on ``val`` and ``val_extra``; the labelled ``val`` split is also their ``test``."""
    from spinconv_train.launch.cli import main

    root = tmp_path_factory.mktemp("plot_runs")
    runs = {}
    for name, seed in (("a", 0), ("b", 1)):
        data = {"train": s2ef_data["train"], "val": s2ef_data["val"], "val_extra": s2ef_data["val"],
                "test": s2ef_data["val"]}
        config = tiny_config(data, max_steps=6, max_epochs=None, eval_every=3)
        config["logger"]["print_every"] = 2
        path = write_config(root, config, f"{name}.yml")
        assert main(["--mode", "train", "--config-yml", path, "--run-dir", str(root / name), "--run-name", name,
                     "--seed", str(seed), "--no-progress"]) == 0
        runs[name] = os.path.join(str(root / name), name)
    return runs
