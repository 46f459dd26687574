"""Two-process gloo runs under torchrun on CPU: metrics equal the single-process ones."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from trainers.trainer_testing import only_run_dir, tiny_config, write_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(args, nproc=None):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"] \
        if nproc else [sys.executable]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    # A session of its own, so that a timeout can end torchrun and its workers.
    proc = subprocess.Popen([*launcher, os.path.join(ROOT, "main.py"), *args, "--no-progress"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:  # SIGTERM first: torchrun forwards it to its workers
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.returncode == 0, err[-3000:]


@pytest.mark.slow  # three launches of torch: about 1.5 minutes on 2 busy cores
def test_two_process_train_and_validate_match_single_process(s2ef_data, tmp_path):
    config = write_config(tmp_path, tiny_config(s2ef_data, max_epochs=1))
    _run(["--mode", "train", "--config-yml", config, "--run-dir", str(tmp_path / "ddp_train"), "--distributed"],
         nproc=2)
    run = only_run_dir(tmp_path / "ddp_train")
    checkpoint = os.path.join(run, "checkpoint.pt")
    assert os.path.exists(checkpoint)  # rank 0 wrote it; no hang at the end

    metrics = {}
    for name, nproc in (("single", None), ("ddp", 2)):
        _run(["--mode", "validate", "--checkpoint", checkpoint, "--run-dir", str(tmp_path / name)], nproc=nproc)
        with open(os.path.join(only_run_dir(tmp_path / name), "validate_metrics.json")) as handle:
            metrics[name] = json.load(handle)
    assert metrics["ddp"].keys() == metrics["single"].keys()
    for key, value in metrics["single"].items():
        assert metrics["ddp"][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key


@pytest.mark.slow  # one launch of two torch processes
def test_two_process_gradient_accumulation_runs_to_the_expected_step(s2ef_data, tmp_path):
    """DDP with micro-batches (no_sync between them): 8 structures, 4 per rank, batch 1,
    accumulate 2 -> 2 optimiser steps per epoch, and no hang at the step boundaries."""
    from spinconv_train.checkpoints import store as ckpt

    config = write_config(tmp_path, tiny_config(s2ef_data, max_epochs=1, batch_size=1, accumulate_grad_batches=2))
    _run(["--mode", "train", "--config-yml", config, "--run-dir", str(tmp_path / "ddp"), "--distributed"], nproc=2)
    payload = ckpt.read(os.path.join(only_run_dir(tmp_path / "ddp"), "checkpoint.pt"))
    assert payload["step"] == 2 and payload["epoch"] == 1


@pytest.fixture(scope="module")
def uneven_data(tmp_path_factory):
    """Slabs whose free-atom counts differ (9, or 5 with the second layer fixed too), so that
    ranks of one global batch hold different numbers of free atoms."""
    from trainers.trainer_testing import emt_slabs, write_split

    records = emt_slabs(8, seed=1)
    for k, record in enumerate(records):
        if k % 3 == 0:
            record.fixed[4:8] = 1
    root = tmp_path_factory.mktemp("uneven")
    return {"train": write_split(str(root / "train"), records),
            "val": write_split(str(root / "val"), emt_slabs(4, seed=2))}


def _rows(run, split):
    from trainers.trainer_testing import read_jsonl

    return [{k: v for k, v in r.items() if k not in ("time", "split")} for r in read_jsonl(run, split)]


def _assert_same_metrics(got, expected, rel):
    assert [r["step"] for r in got] == [r["step"] for r in expected]
    for a, b in zip(got, expected):
        for key, value in b.items():
            assert a[key] == pytest.approx(value, rel=rel, abs=1e-6), (a["step"], key)


@pytest.mark.slow  # five launches of torch (two of them two-process): about 3 minutes on 2 busy cores
def test_ddp_matches_one_process_and_resumes_across_process_counts(uneven_data, tmp_path):
    """2 processes x batch 2 train like 1 process x batch 4 (to float round-off), and a run
    resumed 1 -> 2 -> 1 processes at the same global batch continues exactly."""
    from spinconv_train.training import attempts

    cfg = tiny_config(uneven_data, max_epochs=None, max_steps=6, batch_size=4, ema_decay=0.9, scheduler="step",
                      warmup_steps=2, lr_milestones=[4], lr_gamma=0.5)
    cfg["logger"]["print_every"] = 1
    config = write_config(tmp_path, cfg)
    runs = str(tmp_path / "runs")
    base = ["--mode", "train", "--config-yml", config, "--run-dir", runs]
    _run([*base, "--run-name", "one"])
    _run([*base, "--run-name", "ddp", "--optim.batch_size=2"], nproc=2)
    one, ddp = os.path.join(runs, "one"), os.path.join(runs, "ddp")
    for split in ("train", "val"):
        _assert_same_metrics(_rows(ddp, split), _rows(one, split), rel=2e-5)

    _run([*base, "--run-name", "moved", "--optim.max_steps=2"])
    _run([*base, "--run-name", "moved", "--optim.max_steps=4", "--optim.batch_size=2", "--resume"], nproc=2)
    _run([*base, "--run-name", "moved", "--resume"])
    moved = os.path.join(runs, "moved")
    for split in ("train", "val"):
        _assert_same_metrics(_rows(moved, split), _rows(one, split), rel=2e-5)
    records = attempts.read_attempts(moved)
    assert [(r["world_size"], r["start_step"], r["end_step"]) for r in records] == [(1, 0, 2), (2, 2, 4), (1, 4, 6)]
