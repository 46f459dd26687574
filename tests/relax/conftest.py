"""Fixtures of the relaxation tests: a tiny trained force checkpoint (SchNet, a few steps)."""
from __future__ import annotations

import os

import pytest
from trainers.trainer_testing import only_run_dir, tiny_config, write_config


@pytest.fixture(scope="session")
def force_checkpoint(s2ef_data, tmp_path_factory) -> str:
    """``checkpoint.pt`` of a tiny SchNet trained for 4 steps with the ``forces`` trainer
    (non-trivial normaliser fitted on the EMT fixture data)."""
    from spinconv_train.launch.cli import main

    root = tmp_path_factory.mktemp("relax_train")
    config = tiny_config({"train": s2ef_data["train"], "test": s2ef_data["test"]}, max_steps=4, max_epochs=None)
    path = write_config(root, config)
    assert main(["--mode", "train", "--config-yml", path, "--run-dir", str(root / "runs"), "--no-progress"]) == 0
    return os.path.join(only_run_dir(root / "runs"), "checkpoint.pt")
