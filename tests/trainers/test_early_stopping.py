"""Early stopping: optim.early_stopping_patience and optim.min_lr, checked at validations."""
from __future__ import annotations

import os

import pytest
from trainers.trainer_testing import only_run_dir, read_jsonl, tiny_config, write_config

from spinconv_train.checkpoints import store as ckpt
from spinconv_train.launch.cli import main
from spinconv_train.training import loop


def _train(config_path, run_dir, *extra):
    assert main(["--mode", "train", "--config-yml", config_path, "--run-dir", str(run_dir), "--no-progress",
                 *extra]) == 0
    return only_run_dir(run_dir)


@pytest.fixture
def scripted_validation(monkeypatch):
    """Replace evaluation by a scripted sequence of forces_mae values (first: the untrained model)."""
    values = []
    real = loop.evaluate

    def fake(session, loader, desc="validating"):
        metrics = real(session, loader, desc)
        metrics["forces_mae"] = values.pop(0)
        return metrics

    monkeypatch.setattr(loop, "evaluate", fake)
    return values


def test_patience_stops_after_that_many_validations_without_a_new_best(s2ef_data, tmp_path, scripted_validation):
    scripted_validation += [9.0, 0.5, 0.6, 0.55, 0.7, 0.1, 0.1]
    cfg = tiny_config(s2ef_data, max_epochs=None, max_steps=6, eval_every=1, early_stopping_patience=2)
    run = _train(write_config(tmp_path, cfg), tmp_path / "runs")
    payload = ckpt.read(os.path.join(run, "checkpoint.pt"))
    assert payload["step"] == 3  # best at step 1 (0.5), then 0.6 and 0.55: two without improvement
    assert payload["early_stopping"]["evals_since_best"] == 2
    assert "forces_mae has not improved on 0.5 for 2 validations" in payload["early_stopping"]["stop_reason"]
    assert ckpt.read(os.path.join(run, "best_checkpoint.pt"))["step"] == 1
    assert [r["step"] for r in read_jsonl(run, "val")] == [0, 1, 2, 3]
    assert scripted_validation == [0.7, 0.1, 0.1]  # no evaluation after the stop


def test_without_patience_the_same_run_goes_to_max_steps(s2ef_data, tmp_path, scripted_validation):
    scripted_validation += [9.0, 0.5, 0.6, 0.55, 0.7, 0.1, 0.1]
    cfg = tiny_config(s2ef_data, max_epochs=None, max_steps=6, eval_every=1)
    run = _train(write_config(tmp_path, cfg), tmp_path / "runs")
    assert ckpt.read(os.path.join(run, "checkpoint.pt"))["step"] == 6
    assert ckpt.read(os.path.join(run, "best_checkpoint.pt"))["step"] == 5


def test_resume_keeps_the_count_of_validations_without_improvement(s2ef_data, tmp_path, scripted_validation):
    scripted_validation += [9.0, 0.5, 0.6, 0.7, 0.1]
    cfg = tiny_config(s2ef_data, max_epochs=None, max_steps=6, eval_every=1, early_stopping_patience=2)
    path = write_config(tmp_path, cfg)
    first = _train(path, tmp_path / "first", "--optim.max_steps=2")
    assert ckpt.read(os.path.join(first, "checkpoint.pt"))["early_stopping"]["evals_since_best"] == 1
    resumed = _train(path, tmp_path / "resumed", "--checkpoint", os.path.join(first, "checkpoint.pt"))
    assert ckpt.read(os.path.join(resumed, "checkpoint.pt"))["step"] == 3


def test_min_lr_stops_once_the_schedule_goes_below_it(s2ef_data, tmp_path, capsys):
    cfg = tiny_config(s2ef_data, max_epochs=None, max_steps=8, eval_every=1, scheduler="step", lr_milestones=[2],
                      lr_gamma=0.1, min_lr=5e-4)
    run = _train(write_config(tmp_path, cfg), tmp_path / "runs")
    payload = ckpt.read(os.path.join(run, "checkpoint.pt"))
    assert payload["step"] == 2
    assert "fell below optim.min_lr" in payload["early_stopping"]["stop_reason"]
    assert "early stopping at step 2" in capsys.readouterr().out


@pytest.mark.parametrize("optim, drop_val, message", [
    ({"early_stopping_patience": 0}, False, "key 'optim.early_stopping_patience': must be >= 1"),
    ({"min_lr": -1.0}, False, "key 'optim.min_lr': must be > 0"),
    ({"min_lr": 1e-5}, True, "key 'optim.min_lr': early stopping is checked at validations"),
])
def test_early_stopping_config_errors(s2ef_data, tmp_path, capsys, optim, drop_val, message):
    data = {k: v for k, v in s2ef_data.items() if not (drop_val and k == "val")}
    path = write_config(tmp_path, tiny_config(data, **optim))
    assert main(["--mode", "train", "--config-yml", path, "--run-dir", str(tmp_path / "runs"), "--no-progress"]) == 2
    assert message in capsys.readouterr().err


def test_the_loop_runs_the_hooks_it_is_given(s2ef_data, tmp_path, monkeypatch):
    """Best checkpoint, early stopping, plateau schedule and EMA are hooks of the loop: a run
    without the best-checkpoint hook writes no best_checkpoint.pt, and a custom hook sees
    every optimiser step and validation in order."""
    from spinconv_train.training import hooks as hook_module

    calls = []

    class Recorder(hook_module.Hook):
        def after_optimizer_step(self, session):
            calls.append(("step", session.step))

        def after_validation(self, session, metrics):
            calls.append(("val", session.step, session.metric in metrics))

    kept = [h for h in hook_module.default_hooks() if not isinstance(h, hook_module.BestCheckpoint)]
    assert len(kept) == 3  # EMA, plateau schedule, early stopping
    monkeypatch.setattr(loop, "default_hooks", lambda: [*kept, Recorder()])
    cfg = tiny_config(s2ef_data, max_epochs=None, max_steps=2, eval_every=1)
    run = _train(write_config(tmp_path, cfg), tmp_path / "runs")
    assert calls == [("step", 0), ("val", 1, True), ("step", 1), ("val", 2, True)]
    assert os.path.exists(os.path.join(run, "checkpoint.pt"))
    assert not os.path.exists(os.path.join(run, "best_checkpoint.pt"))
