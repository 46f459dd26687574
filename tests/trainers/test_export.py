"""Exported models (trainers/export.py, scripts/export_model.py): weights, config and
normaliser only; the same predictions as the checkpoint they came from."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from models.spinconv_testkit import slab_with_adsorbate
from trainers.trainer_testing import load_script, only_run_dir, read_jsonl, tiny_config, write_config

from spinconv_train.calculators import ModelCalculator
from spinconv_train.checkpoints import store as ckpt
from spinconv_train.checkpoints.export import export_checkpoint
from spinconv_train.checkpoints.pretrained import pretrained_state
from spinconv_train.launch.cli import main


@pytest.fixture(scope="module")
def trained(s2ef_data, tmp_path_factory):
    """A short SchNet run with EMA (decay 0.5: EMA and raw weights differ clearly)."""
    root = tmp_path_factory.mktemp("export_source")
    config = tiny_config(s2ef_data, max_epochs=2, ema_decay=0.5)
    assert main(["--mode", "train", "--config-yml", write_config(root, config), "--run-dir", str(root / "runs"),
                 "--no-progress"]) == 0
    return os.path.join(only_run_dir(root / "runs"), "checkpoint.pt")


def _validate(checkpoint, val_src, run_dir, *extra):
    assert main(["--mode", "validate", "--checkpoint", checkpoint, "--run-dir", str(run_dir), "--no-progress",
                 f"--dataset.val.src={val_src}", *extra]) == 0
    return read_jsonl(only_run_dir(run_dir), "validate")[0]


def test_export_keeps_the_ema_weights_and_gives_the_same_validation(trained, s2ef_data, tmp_path):
    out = str(tmp_path / "model.pt")
    summary = export_checkpoint(trained, out)
    source, exported = ckpt.read(trained), ckpt.read(out)
    assert summary["weights"] == "ema"
    assert summary["exported_bytes"] < 0.6 * summary["source_bytes"]  # no optimiser moments, no EMA copy
    for key in ("optimizer", "ema", "scheduler", "rng", "sampler"):
        assert key not in exported
    ema_weights = pretrained_state(source, trained, "ema")
    assert exported["model"].keys() == ema_weights.keys()
    for name, tensor in ema_weights.items():
        assert torch.equal(exported["model"][name], tensor), name
    assert not all(torch.equal(exported["model"][n], source["model"][n]) for n in source["model"])
    assert exported["config"] == source["config"] and exported["targets"] == source["targets"]
    assert exported["exported"]["source"] == os.path.abspath(trained)
    # --mode validate evaluates the EMA weights of the checkpoint and the exported weights alike.
    a = _validate(trained, s2ef_data["val"], tmp_path / "v_source")
    b = _validate(out, s2ef_data["val"], tmp_path / "v_exported")
    assert a["forces_mae"] == b["forces_mae"] and a["energy_mae"] == b["energy_mae"]


def test_exported_raw_weights_equal_the_checkpoint_without_ema(trained, s2ef_data, tmp_path):
    out = str(tmp_path / "raw.pt")
    assert export_checkpoint(trained, out, weights="model")["weights"] == "model"
    a = _validate(trained, s2ef_data["val"], tmp_path / "v_raw", "--optim.ema_decay=null")
    b = _validate(out, s2ef_data["val"], tmp_path / "v_exported")
    assert a["forces_mae"] == b["forces_mae"]


def test_calculator_on_an_exported_model_equals_the_checkpoint(trained, tmp_path, torch_threads):
    out = str(tmp_path / "model.pt")
    export_checkpoint(trained, out)
    atoms = slab_with_adsorbate(0)
    results = []
    for path in (trained, out):
        copy = atoms.copy()
        copy.calc = ModelCalculator.from_checkpoint(path)
        results.append((copy.get_potential_energy(), copy.get_forces(apply_constraint=False)))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_resuming_from_an_exported_model_is_refused_before_any_run_folder(trained, tmp_path, capsys):
    out = str(tmp_path / "model.pt")
    export_checkpoint(trained, out)
    code = main(["--mode", "train", "--checkpoint", out, "--run-dir", str(tmp_path / "runs"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "exported model" in err and "--finetune.checkpoint" in err and out in err
    assert not os.path.exists(tmp_path / "runs") or not os.listdir(tmp_path / "runs")


def test_finetuning_starts_from_an_exported_model(trained, s2ef_data, tmp_path):
    out = str(tmp_path / "model.pt")
    export_checkpoint(trained, out)
    config = tiny_config({"train": s2ef_data["val"], "val": s2ef_data["val"]}, max_epochs=1)
    config["finetune"] = {"checkpoint": out}
    path = write_config(tmp_path, config, "finetune.yml")
    assert main(["--mode", "train", "--config-yml", path, "--run-dir", str(tmp_path / "runs"), "--no-progress"]) == 0
    start = read_jsonl(only_run_dir(tmp_path / "runs"), "val")[0]
    assert start["step"] == 0
    assert start["forces_mae"] == pytest.approx(_validate(out, s2ef_data["val"], tmp_path / "v")["forces_mae"],
                                                rel=1e-6)


def test_reexport_keeps_the_origin(trained, tmp_path):
    first, second = str(tmp_path / "a.pt"), str(tmp_path / "b.pt")
    export_checkpoint(trained, first)
    export_checkpoint(first, second)
    a, b = ckpt.read(first), ckpt.read(second)
    assert b["exported"]["source"] == os.path.abspath(trained) and b["exported"]["weights"] == "ema"
    assert export_checkpoint(first, str(tmp_path / "c.pt"), weights="ema")["weights"] == "ema"
    with pytest.raises(ckpt.CheckpointError, match="only its 'ema' weights"):
        export_checkpoint(first, str(tmp_path / "d.pt"), weights="model")
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name])


def test_export_errors_name_the_file_and_leave_outputs_alone(trained, s2ef_data, tmp_path, capsys):
    script = load_script("export_model")
    existing = tmp_path / "taken.pt"
    existing.write_bytes(b"keep me")
    assert script.main(["--checkpoint", trained, "--out", str(existing)]) == 2
    assert "exists" in capsys.readouterr().err and existing.read_bytes() == b"keep me"
    assert script.main(["--checkpoint", trained, "--out", trained]) == 2
    assert "is the source checkpoint" in capsys.readouterr().err
    missing = str(tmp_path / "nope.pt")
    assert script.main(["--checkpoint", missing, "--out", str(tmp_path / "x.pt")]) == 2
    assert missing in capsys.readouterr().err and not (tmp_path / "x.pt").exists()
    # A run without EMA has no EMA weights to export.
    root = tmp_path / "no_ema"
    cfg = tiny_config(s2ef_data, max_steps=1, max_epochs=None)
    assert main(["--mode", "train", "--config-yml", write_config(tmp_path, cfg, "no_ema.yml"), "--run-dir",
                 str(root), "--no-progress"]) == 0
    plain = os.path.join(only_run_dir(root), "checkpoint.pt")
    assert script.main(["--checkpoint", plain, "--out", str(tmp_path / "y.pt"), "--weights", "ema"]) == 2
    assert "no EMA weights" in capsys.readouterr().err and not (tmp_path / "y.pt").exists()
    # --overwrite replaces the file, and the summary line is JSON.
    assert script.main(["--checkpoint", trained, "--out", str(existing), "--overwrite"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["weights"] == "ema" and ckpt.read(str(existing))["exported"] is not None


def test_inspect_tells_checkpoints_and_exported_models_apart(trained, tmp_path, capsys):
    script = load_script("inspect_checkpoint")
    out = str(tmp_path / "model.pt")
    export_checkpoint(trained, out)
    assert script.main([trained, out]) == 0
    first, second = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    source = ckpt.read(trained)
    assert first["kind"] == "training checkpoint" and first["resumable"] and first["ema_weights"]
    assert first["step"] == source["step"] and first["last_validation"] == source["metrics"]
    assert first["parameters"] == sum(t.numel() for t in source["model"].values())
    assert first["model"] == "schnet" and first["datasets"]["train"] == source["config"]["dataset"]["train"]["src"]
    assert second["kind"] == "exported model" and not second["resumable"] and second["ema_weights"]
    assert second["exported_from"]["source"] == os.path.abspath(trained)
    assert second["parameters"] == first["parameters"] and second["normalizer"] == first["normalizer"]
    missing = str(tmp_path / "missing.pt")
    assert script.main([missing]) == 2 and missing in capsys.readouterr().err


def test_inspect_names_the_elements_with_references():
    from spinconv_train.commands.inspect_checkpoint import _nonzero_references

    references = [0.0] * 10
    references[1], references[8] = -13.6, -432.1
    assert _nonzero_references({"references": references}) == {"H": -13.6, "O": -432.1}
