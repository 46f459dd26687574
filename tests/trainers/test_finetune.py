"""Fine-tuning (`finetune:` config section): a new run that starts from a checkpoint's weights."""
from __future__ import annotations

import os

import pytest
import torch
from trainers.trainer_testing import only_run_dir, read_jsonl, tiny_config, write_config

from spinconv_train.checkpoints import store as ckpt
from spinconv_train.launch.cli import main


def _train(config_path, run_dir, *extra):
    assert main(["--mode", "train", "--config-yml", config_path, "--run-dir", str(run_dir), "--no-progress",
                 *extra]) == 0
    return only_run_dir(run_dir)


@pytest.fixture(scope="module")
def pretrained(s2ef_data, tmp_path_factory):
    """A short SchNet run with EMA (decay 0.5, so EMA and raw weights differ clearly)."""
    root = tmp_path_factory.mktemp("pretrained")
    cfg = tiny_config(s2ef_data, max_epochs=2, ema_decay=0.5)
    run = _train(write_config(root, cfg), root / "runs")
    return {"run": run, "checkpoint": os.path.join(run, "checkpoint.pt"), "config": cfg}


def _finetune_config(tmp_path, s2ef_data, pretrained, **finetune):
    data = {"train": s2ef_data["val"], "val": s2ef_data["val"]}  # "new" data: the val split
    cfg = tiny_config(data, max_epochs=1)
    cfg["finetune"] = {"checkpoint": pretrained["checkpoint"], **finetune}
    return write_config(tmp_path, cfg, "finetune.yml")


def _first_val(run):
    return read_jsonl(run, "val")[0]


def test_finetune_starts_from_the_ema_weights_and_keeps_the_normaliser(s2ef_data, pretrained, tmp_path):
    run = _train(_finetune_config(tmp_path, s2ef_data, pretrained), tmp_path / "runs")
    source = ckpt.read(pretrained["checkpoint"])
    # The pre-training run evaluated its EMA weights on this same split at its last step.
    pre_final = read_jsonl(pretrained["run"], "val")[-1]
    start = _first_val(run)
    assert start["step"] == 0
    assert start["forces_mae"] == pytest.approx(pre_final["forces_mae"], rel=1e-6)
    assert start["energy_mae"] == pytest.approx(pre_final["energy_mae"], rel=1e-6)
    tuned = ckpt.read(os.path.join(run, "checkpoint.pt"))
    assert tuned["targets"] == source["targets"]
    assert tuned["step"] == 2  # a new run: 4 structures, batch 2, one epoch; its own optimiser and counter
    assert tuned["config"]["finetune"]["checkpoint"] == pretrained["checkpoint"]


def test_finetune_model_weights_differ_from_ema(s2ef_data, pretrained, tmp_path):
    run = _train(_finetune_config(tmp_path, s2ef_data, pretrained, weights="model"), tmp_path / "runs")
    pre_final = read_jsonl(pretrained["run"], "val")[-1]
    assert _first_val(run)["forces_mae"] != pytest.approx(pre_final["forces_mae"], rel=1e-6)
    # Evaluating the raw weights of the checkpoint directly gives the same start.
    code = main(["--mode", "validate", "--checkpoint", pretrained["checkpoint"], "--run-dir", str(tmp_path / "v"),
                 "--no-progress", "--optim.ema_decay=null", f"--dataset.val.src={s2ef_data['val']}"])
    assert code == 0
    raw = read_jsonl(only_run_dir(tmp_path / "v"), "validate")[0]
    assert _first_val(run)["forces_mae"] == pytest.approx(raw["forces_mae"], rel=1e-6)


def test_freeze_holds_parameters_fixed_also_after_resume(s2ef_data, pretrained, tmp_path):
    path = _finetune_config(tmp_path, s2ef_data, pretrained, freeze=["net.embedding", "net.interactions.0"])
    first = _train(path, tmp_path / "first", "--optim.max_epochs=null", "--optim.max_steps=1")
    resumed = _train(path, tmp_path / "resumed", "--optim.max_epochs=null", "--optim.max_steps=2",
                     "--checkpoint", os.path.join(first, "checkpoint.pt"))
    source = ckpt.read(pretrained["checkpoint"])
    start = {k[len("module."):]: v for k, v in source["ema"].items() if k.startswith("module.")}
    tuned = ckpt.read(os.path.join(resumed, "checkpoint.pt"))
    assert tuned["step"] == 2
    frozen = [k for k in tuned["model"] if k.startswith(("net.embedding.", "net.interactions.0."))]
    trained = [k for k in tuned["model"] if k.startswith("net.lin1.")]
    assert frozen and trained
    for key in frozen:
        torch.testing.assert_close(tuned["model"][key], start[key], rtol=0, atol=0)
    assert any(not torch.equal(tuned["model"][k], start[k]) for k in trained)
    assert len(tuned["optimizer"]["param_groups"][0]["params"]) < len(tuned["model"])


def test_targets_fit_refits_the_normaliser_on_the_new_data(s2ef_data, pretrained, tmp_path):
    run = _train(_finetune_config(tmp_path, s2ef_data, pretrained, targets="fit"), tmp_path / "runs")
    old = ckpt.read(pretrained["checkpoint"])["targets"]["normalizer"]["mean"]
    new = ckpt.read(os.path.join(run, "checkpoint.pt"))["targets"]["normalizer"]["mean"]
    assert new != pytest.approx(old)


@pytest.mark.parametrize("finetune, extra, message", [
    ({"freeze": ["no_such_block"]}, [], "key 'finetune.freeze': prefix 'no_such_block' matches no parameter"),
    ({"weights": "best"}, [], "key 'finetune.weights': must be one of auto, ema, model"),
    ({"targets": "checkpoint"}, ["--model.hidden_channels=8"], "weights do not fit the configured model"),
    ({"checkpoint": "missing.pt"}, [], "key 'finetune.checkpoint': checkpoint 'missing.pt' does not exist"),
    ({}, ["--trainer=energy", "--model.regress_forces=false"], "use finetune.targets: fit"),
])
def test_finetune_errors_name_the_key(s2ef_data, pretrained, tmp_path, capsys, finetune, extra, message):
    path = _finetune_config(tmp_path, s2ef_data, pretrained, **finetune)
    code = main(["--mode", "train", "--config-yml", path, "--run-dir", str(tmp_path / "runs"), "--no-progress",
                 *extra])
    assert code == 2
    assert message in capsys.readouterr().err


def test_weights_ema_needs_an_ema(s2ef_data, tmp_path, capsys):
    root = tmp_path / "noema"
    run = _train(write_config(tmp_path, tiny_config(s2ef_data, max_steps=1, max_epochs=None)), root)
    data = {"train": s2ef_data["val"], "val": s2ef_data["val"]}
    cfg = tiny_config(data)
    cfg["finetune"] = {"checkpoint": os.path.join(run, "checkpoint.pt"), "weights": "ema"}
    code = main(["--mode", "train", "--config-yml", write_config(tmp_path, cfg, "ft.yml"), "--run-dir",
                 str(tmp_path / "runs"), "--no-progress"])
    assert code == 2
    assert "has no EMA weights" in capsys.readouterr().err


def test_readme_pattern_run_config_plus_overrides(s2ef_data, pretrained, tmp_path):
    """The README's recipe: the pretrained run's own config.yml, new data and the checkpoint on the command line."""
    run = _train(os.path.join(pretrained["run"], "config.yml"), tmp_path / "runs",
                 f"--finetune.checkpoint={pretrained['checkpoint']}", f"--dataset.train.src={s2ef_data['val']}",
                 "--optim.lr_initial=1e-4", "--optim.max_epochs=1")
    assert _first_val(run)["forces_mae"] == pytest.approx(read_jsonl(pretrained["run"], "val")[-1]["forces_mae"],
                                                          rel=1e-6)
    assert ckpt.read(os.path.join(run, "checkpoint.pt"))["step"] == 2


def test_readme_freeze_prefixes_exist_in_spinconv():
    from spinconv_train.checkpoints import build_model
    from spinconv_train.checkpoints.pretrained import freeze
    from spinconv_train.config import load_config

    config = load_config(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "s2ef", "oc20_mini",
                                      "spinconv_energy.yml"))
    model = build_model(config)
    frozen = freeze(model, ["dist_block", "distfc1", "distfc2", "embeddingblock2", "message_blocks.0"], config)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert frozen > 0 and trainable
    assert all(n.startswith(("message_blocks.1.", "energy_head.")) for n in trainable)


def test_finetune_with_replay_of_the_pretraining_data(s2ef_data, pretrained, tmp_path, capsys):
    """A list of sources: the new data plus the pretraining data (replay against forgetting)."""
    path = _finetune_config(tmp_path, s2ef_data, pretrained)
    run = _train(path, tmp_path / "runs", f"--dataset.train.src=[{s2ef_data['val']}, {s2ef_data['train']}]")
    assert ckpt.read(os.path.join(run, "checkpoint.pt"))["step"] == (4 + 8) // 2  # one epoch over both
    missing = str(tmp_path / "missing")
    code = main(["--mode", "train", "--config-yml", path, "--run-dir", str(tmp_path / "bad"), "--no-progress",
                 f"--dataset.train.src=[{s2ef_data['val']}, {missing}]"])
    assert code == 2
    assert f"key 'dataset.train.src': path '{missing}' does not exist" in capsys.readouterr().err
