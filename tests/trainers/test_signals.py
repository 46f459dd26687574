"""Every stop signal ends with a checkpoint at the step it arrived, and a rerun of the same
command continues the run in its folder with metrics identical to an uninterrupted run."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess

import pytest
import torch
from trainers.trainer_testing import read_jsonl, tiny_config, write_config

from spinconv_train.checkpoints import store as ckpt
from spinconv_train.launch.cli import main
from spinconv_train.tasks.forces import ForcesTask
from spinconv_train.training import attempts


def _cfg(s2ef_data):
    cfg = tiny_config(s2ef_data, max_epochs=None, max_steps=7, ema_decay=0.9, scheduler="step", warmup_steps=2,
                      lr_milestones=[5], lr_gamma=0.5, eval_every=4)
    cfg["logger"]["print_every"] = 3  # the signal arrives inside a logging window
    return cfg


def _signal_at_call(monkeypatch, signum, call):
    """Deliver ``signum`` to this process during the ``call``-th training loss (mid-step)."""
    original, calls = ForcesTask.loss, {"n": 0}

    def loss(self, out, batch):
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == call:
                os.kill(os.getpid(), signum)
        return original(self, out, batch)

    monkeypatch.setattr(ForcesTask, "loss", loss)


def _values(rows):
    return [{k: v for k, v in row.items() if k not in ("time", "split")} for row in rows]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_signal_checkpoints_and_rerun_continues_in_the_folder(s2ef_data, tmp_path, monkeypatch, caplog, capsys,
                                                               torch_threads, signum):
    path = write_config(tmp_path, _cfg(s2ef_data))
    command = ["--mode", "train", "--config-yml", path, "--run-dir", str(tmp_path / "runs"), "--no-progress"]
    assert main([*command, "--run-name", "straight"]) == 0
    straight = str(tmp_path / "runs" / "straight")

    with monkeypatch.context() as patch:
        _signal_at_call(patch, signum, 3)  # during step 3
        with caplog.at_level(logging.WARNING):
            assert main([*command, "--run-name", "cut"]) == 128 + signum
    run = str(tmp_path / "runs" / "cut")
    assert ckpt.read(os.path.join(run, "checkpoint.pt"))["step"] == 3  # the step it arrived in, finished
    lines = [r.getMessage() for r in caplog.records if "received" in r.getMessage()]
    assert len(lines) == 1 and signal.Signals(signum).name in lines[0] and "checkpoint written" in lines[0]
    assert "Traceback" not in capsys.readouterr().err
    (tmp_path / "runs" / "cut" / ".tmp-leftover.pt").write_bytes(b"partial write")

    assert main([*command, "--run-name", "cut"]) == 0  # the same command again continues the run
    assert sorted(os.listdir(tmp_path / "runs")) == ["cut", "straight"]
    assert not [n for n in os.listdir(run) if n.startswith(".tmp-")]
    for split in ("train", "val"):
        got, expected = _values(read_jsonl(run, split)), _values(read_jsonl(straight, split))
        assert [r["step"] for r in got] == [r["step"] for r in expected]
        for a, b in zip(got, expected):
            assert a == pytest.approx(b, rel=1e-6, abs=1e-7)
    records = attempts.read_attempts(run)
    assert [(r["start_step"], r["end_step"]) for r in records] == [(0, 3), (3, 7)]
    assert records[0]["reason"] == f"signal {signal.Signals(signum).name}: checkpoint written"
    assert records[1]["reason"] == "finished" and records[1]["resumed_from"].endswith("cut/checkpoint.pt")
    assert os.path.exists(os.path.join(run, "best_checkpoint.pt"))


def test_hard_kill_rows_are_redone_once(s2ef_data, tmp_path, torch_threads):
    """A killed attempt's rows after its checkpoint are dropped and logged again, and its
    attempt record says it was killed."""
    cfg = _cfg(s2ef_data)
    cfg["optim"]["checkpoint_every"] = 2
    path = write_config(tmp_path, cfg)
    command = ["--mode", "train", "--config-yml", path, "--run-dir", str(tmp_path / "runs"), "--no-progress"]
    assert main([*command, "--run-name", "straight", "--optim.max_steps=7"]) == 0
    straight = str(tmp_path / "runs" / "straight")
    assert main([*command, "--run-name", "cut", "--optim.max_steps=3"]) == 0
    run = str(tmp_path / "runs" / "cut")
    assert ckpt.read(os.path.join(run, "checkpoint.pt"))["step"] == 3
    # what a kill -9 at step 5 leaves: rows after the checkpoint and an attempt that never ended
    with open(os.path.join(run, "metrics.jsonl"), "a") as handle:
        handle.write(json.dumps({"time": 0, "step": 5, "epoch": 1.0, "split": "train", "loss": 9.0}) + "\n")
    attempts.begin_attempt(run, 3, 1, "x")
    code = main([*command, "--run-name", "cut"])
    assert code == 2  # max_steps differs from the saved config: refused without --resume
    assert main([*command, "--run-name", "cut", "--resume"]) == 0
    got, expected = _values(read_jsonl(run, "train")), _values(read_jsonl(straight, "train"))
    assert [r["step"] for r in got] == [r["step"] for r in expected]
    for a, b in zip(got, expected):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7)
    reasons = [r["reason"] for r in attempts.read_attempts(run)]
    assert reasons == ["finished", attempts.KILLED, "finished"]


def test_resume_under_another_global_batch_is_refused(s2ef_data, tmp_path, capsys):
    path = write_config(tmp_path, tiny_config(s2ef_data, max_epochs=None, max_steps=2))
    command = ["--mode", "train", "--config-yml", path, "--run-dir", str(tmp_path / "runs"), "--no-progress"]
    assert main([*command, "--run-name", "r"]) == 0
    checkpoint = os.path.join(str(tmp_path / "runs" / "r"), "checkpoint.pt")
    payload = ckpt.read(checkpoint)
    assert payload["sampler"] == {"epoch": 0, "batches_yielded": 2, "seed": 0, "world_size": 1, "batch_size": 2,
                                  "structures": 4}
    payload["sampler"].update(world_size=2, structures=8)  # as if written by 2 processes
    ckpt.save_atomic(payload, checkpoint)
    capsys.readouterr()
    assert main([*command, "--run-name", "r", "--optim.max_steps=3", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "2 process(es) x batch_size 2 = 4" in err and "1 process(es) x batch_size 2 = 2" in err
    assert "--allow-world-size-change" in err and "--optim.batch_size=4" in err
    assert main([*command, "--run-name", "r", "--optim.max_steps=3", "--resume", "--allow-world-size-change"]) == 0
    assert ckpt.read(checkpoint)["step"] == 3


@pytest.mark.skipif(shutil.which("ps") is None, reason="needs ps to find the loader's worker")
def test_signal_to_every_process_of_the_job_still_checkpoints(s2ef_data, tmp_path, monkeypatch):
    """SLURM signals all processes of a job, the loader's workers too: they must not die of it."""
    cfg = _cfg(s2ef_data)
    cfg["optim"].update(num_workers=1, accumulate_grad_batches=2)  # the step's 2nd micro-batch comes after the signal
    path = write_config(tmp_path, cfg)
    original, calls = ForcesTask.loss, {"n": 0}

    def loss(self, out, batch):
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 3:
                # the loader's workers, not services an earlier test left running (wandb's)
                listing = subprocess.run(["ps", "-o", "pid=,comm=", "--ppid", str(os.getpid())], capture_output=True,
                                         text=True).stdout.splitlines()
                children = [line.split()[0] for line in listing
                            if len(line.split()) == 2 and not line.split()[1].startswith(("wandb", "ps"))]
                assert children, "no loader worker found"
                for pid in map(int, children):
                    with contextlib.suppress(ProcessLookupError):  # the `ps` process itself has ended
                        os.kill(pid, signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGTERM)
        return original(self, out, batch)

    monkeypatch.setattr(ForcesTask, "loss", loss)
    command = ["--mode", "train", "--config-yml", path, "--run-dir", str(tmp_path / "runs"), "--no-progress"]
    assert main([*command, "--run-name", "r"]) == 128 + signal.SIGTERM
    assert ckpt.read(str(tmp_path / "runs" / "r" / "checkpoint.pt"))["step"] == 2  # 3rd micro-batch: in step 2
