"""Extra validation splits (dataset.val_<name>): evaluated and logged with `val`, which
alone selects the best checkpoint."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from trainers.trainer_testing import only_run_dir, read_jsonl, tiny_config, write_config

from spinconv_train.checkpoints import store as ckpt
from spinconv_train.config import ConfigError, config_from_dict
from spinconv_train.launch.cli import main
from spinconv_train.registry import DATASETS


def _train(tmp_path, name, data):
    config = tiny_config(data, max_epochs=2, eval_every=2)
    path = write_config(tmp_path, config, f"{name}.yml")
    assert main(["--mode", "train", "--config-yml", path, "--run-dir", str(tmp_path / name), "--no-progress"]) == 0
    return only_run_dir(tmp_path / name)


def test_extra_split_is_logged_and_leaves_training_unchanged(s2ef_data, tmp_path, capsys):
    plain = _train(tmp_path, "plain", {"train": s2ef_data["train"], "val": s2ef_data["val"]})
    extra = _train(tmp_path, "extra", {"train": s2ef_data["train"], "val": s2ef_data["val"],
                                       "val_other": s2ef_data["train"]})
    out = capsys.readouterr().out
    assert "validation metrics, val_other:" in out
    # Same training, same validation, same checkpoints: the extra split only adds rows.
    untimed = [[{k: v for k, v in r.items() if k != "time"} for r in read_jsonl(run, "val")] for run in (plain, extra)]
    assert untimed[0] == untimed[1] and len(untimed[0]) == 5
    a, b = ckpt.read(os.path.join(plain, "best_checkpoint.pt")), ckpt.read(os.path.join(extra, "best_checkpoint.pt"))
    assert a["step"] == b["step"] and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    rows = read_jsonl(extra, "val_other")
    assert [r["step"] for r in rows] == [r["step"] for r in read_jsonl(extra, "val")] == [0, 2, 4, 6, 8]
    assert rows[0]["forces_mae"] != rows[-1]["forces_mae"]
    # The last row equals validating the final checkpoint on that split.
    assert main(["--mode", "validate", "--checkpoint", os.path.join(extra, "checkpoint.pt"), "--run-dir",
                 str(tmp_path / "v"), "--no-progress", f"--dataset.val.src={s2ef_data['train']}"]) == 0
    direct = read_jsonl(only_run_dir(tmp_path / "v"), "validate")[0]
    assert rows[-1]["forces_mae"] == pytest.approx(direct["forces_mae"], rel=1e-9)
    assert rows[-1]["energy_mae"] == pytest.approx(direct["energy_mae"], rel=1e-9)


def test_validate_mode_evaluates_every_split(s2ef_data, tmp_path):
    run = _train(tmp_path, "run", {"train": s2ef_data["train"], "val": s2ef_data["val"]})
    args = ["--mode", "validate", "--checkpoint", os.path.join(run, "checkpoint.pt"), "--no-progress"]
    assert main([*args, "--run-dir", str(tmp_path / "both"), f"--dataset.val_again.src={s2ef_data['train']}"]) == 0
    both = only_run_dir(tmp_path / "both")
    with open(os.path.join(both, "validate_metrics_val_again.json")) as handle:
        again = json.load(handle)
    with open(os.path.join(both, "validate_metrics.json")) as handle:
        val = json.load(handle)
    assert main([*args, "--run-dir", str(tmp_path / "alone"), f"--dataset.val.src={s2ef_data['train']}"]) == 0
    with open(os.path.join(only_run_dir(tmp_path / "alone"), "validate_metrics.json")) as handle:
        assert json.load(handle) == again
    assert val != again
    assert read_jsonl(both, "validate_val_again")[0]["forces_mae"] == again["forces_mae"]


def test_extra_split_names_and_dependencies_are_checked(s2ef_data):
    base = tiny_config({"train": s2ef_data["train"], "val": s2ef_data["val"]})
    bad = dict(base, dataset=dict(base["dataset"], validation2={"src": s2ef_data["val"]}))
    with pytest.raises(ConfigError, match=r"dataset.validation2.*val_\[A-Za-z0-9_\]\+"):
        config_from_dict(bad, origin="test")
    orphan = dict(base, dataset={"train": {"src": s2ef_data["train"]}, "val_ood": {"src": s2ef_data["val"]}})
    with pytest.raises(ConfigError, match="dataset.val_ood.*need dataset.val"):
        config_from_dict(orphan, origin="test")


def test_validate_a_chosen_split(s2ef_data, tmp_path, capsys):
    run = _train(tmp_path, "run", {"train": s2ef_data["train"], "val": s2ef_data["val"], "test": s2ef_data["train"]})
    args = ["--mode", "validate", "--checkpoint", os.path.join(run, "checkpoint.pt"), "--no-progress"]
    assert main([*args, "--run-dir", str(tmp_path / "t"), "--split", "test"]) == 0
    out = only_run_dir(tmp_path / "t")
    assert sorted(f for f in os.listdir(out) if f.endswith(".json")) == ["validate_metrics_test.json"]
    with open(os.path.join(out, "validate_metrics_test.json")) as handle:
        test = json.load(handle)
    assert main([*args, "--run-dir", str(tmp_path / "v"), f"--dataset.val.src={s2ef_data['train']}"]) == 0
    with open(os.path.join(only_run_dir(tmp_path / "v"), "validate_metrics.json")) as handle:
        assert json.load(handle) == test  # the test split holds the training data here
    capsys.readouterr()
    assert main([*args, "--run-dir", str(tmp_path / "x"), "--split", "nope"]) == 2
    assert "dataset.nope" in capsys.readouterr().err
    assert main(["--mode", "run-relaxations", "--checkpoint", os.path.join(run, "checkpoint.pt"), "--split",
                 "test"]) == 2
    assert "only --mode validate and --mode predict" in capsys.readouterr().err


def test_predict_names_its_split_source_and_count(s2ef_data, tmp_path, capsys):
    import warnings

    run = _train(tmp_path, "run", {"train": s2ef_data["train"], "val": s2ef_data["val"], "test": s2ef_data["test"]})
    args = ["--mode", "predict", "--checkpoint", os.path.join(run, "checkpoint.pt"), "--no-progress"]
    capsys.readouterr()
    assert main([*args, "--run-dir", str(tmp_path / "p"), "--split", "val"]) == 0
    out = capsys.readouterr().out
    count = len(DATASETS.get("lmdb")({"src": s2ef_data["val"]}))
    assert f"predicting dataset.val: {count} structures from {s2ef_data['val']}" in out
    assert f"predictions for {count} structures of dataset.val written to" in out
    assert len(np.load(os.path.join(only_run_dir(tmp_path / "p"), "predictions.npz"))["ids"]) == count
    # the user's frames redirected on the command line, the test split still the checkpoint config's: said
    with pytest.warns(UserWarning, match=r"predicting dataset\.test .* while dataset\.train, dataset\.val came "
                      r"from the command line.*--dataset\.test\.src=PATH"):
        assert main([*args, "--run-dir", str(tmp_path / "q"), f"--dataset.train.src={s2ef_data['val']}",
                     f"--dataset.val.src={s2ef_data['val']}"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert main([*args, "--run-dir", str(tmp_path / "r"), f"--dataset.test.src={s2ef_data['val']}"]) == 0


def test_unlabelled_split_is_named_not_a_traceback(s2ef_data, tmp_path, capsys):
    run = _train(tmp_path, "run", {"train": s2ef_data["train"], "val": s2ef_data["val"], "test": s2ef_data["test"]})
    assert main(["--mode", "validate", "--checkpoint", os.path.join(run, "checkpoint.pt"), "--no-progress",
                 "--run-dir", str(tmp_path / "t"), "--split", "test"]) == 2
    err = capsys.readouterr().err
    assert "dataset.test" in err and "'y'" in err and "--mode predict" in err


def test_unlabelled_training_split_is_named(s2ef_data, tmp_path, capsys):
    config = tiny_config({"train": s2ef_data["test"]}, max_steps=1, max_epochs=None)
    path = write_config(tmp_path, config, "unlabelled.yml")
    assert main(["--mode", "train", "--config-yml", path, "--run-dir", str(tmp_path / "runs"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "dataset.train" in err and "'y'" in err
