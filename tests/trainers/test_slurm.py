"""``--submit``: submitit parameters from the flags, the job's command per attempt, and a
real (local-executor) submission that is preempted and resumes from its checkpoint."""
from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
from trainers.trainer_testing import read_jsonl, tiny_config, write_config

from spinconv_train.launch import slurm
from spinconv_train.launch.cli import build_parser, main, resolve_config
from spinconv_train.training import attempts


def _args(*flags):
    args, _ = build_parser().parse_known_args(["--mode", "train", "--config-yml", "c.yml", *flags])
    return args


def test_strip_flags_removes_both_forms_and_keeps_overrides():
    argv = ["--mode", "train", "--submit", "--num-gpus", "4", "--slurm-mem=32", "--config-yml", "c.yml",
            "--optim.lr_initial=1e-4", "--slurm-partition", "gpu"]
    assert slurm.strip_flags(argv, slurm.SUBMIT_FLAGS) == ["--mode", "train", "--config-yml", "c.yml",
                                                            "--optim.lr_initial=1e-4"]


def test_executor_parameters_follow_the_flags():
    config = {"optim": {"num_workers": 3}}
    params = slurm.executor_parameters(_args("--submit", "--num-gpus", "4", "--num-nodes", "2", "--slurm-mem", "64",
                                             "--slurm-timeout", "1.5", "--slurm-partition", "gpu"), config, "run")
    assert params == {"name": "run", "nodes": 2, "tasks_per_node": 4, "gpus_per_node": 4, "cpus_per_task": 4,
                      "mem_gb": 64, "timeout_min": 90, "slurm_partition": "gpu",
                      "slurm_signal_delay_s": slurm.SIGNAL_DELAY_S}
    cpu_only = slurm.executor_parameters(_args("--submit"), {"optim": {"num_workers": 0}}, "run")
    assert cpu_only["tasks_per_node"] == 1 and "gpus_per_node" not in cpu_only and "timeout_min" not in cpu_only
    with pytest.raises(ValueError, match="--slurm-timeout"):
        slurm.executor_parameters(_args("--submit", "--slurm-timeout", "0"), config, "run")


def test_distributed_environment_is_torchruns():
    env = slurm.distributed_environment(5, 1, 8, "node07", "123456")
    assert env == {"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "MASTER_ADDR": "node07",
                   "MASTER_PORT": str(20000 + 123456 % 20000)}
    assert slurm.distributed_environment(0, 0, 2, "n", "77_3")["MASTER_PORT"] == str(20000 + 773)


def test_every_attempt_continues_the_one_run_folder(tmp_path):
    pytest.importorskip("submitit")
    job = slurm.TrainingJob(["--mode", "train", "--config-yml", "/abs/c.yml"], str(tmp_path), "run", main)
    assert job.command()[-5:] == ["--run-dir", str(tmp_path), "--run-name", "run", "--resume"]
    first = job.checkpoint().function  # preempted before any checkpoint
    assert first.attempt == 1 and first.command() == job.command() and first.latest_checkpoint() is None
    os.makedirs(tmp_path / "run")
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"x")
    assert first.checkpoint().function.latest_checkpoint() == str(tmp_path / "run" / "checkpoint.pt")


class _FakeExecutor:
    """Records submissions instead of running them (or fails, as a full disk would)."""

    submitted: list = []
    fail = False

    def __init__(self, folder, cluster=None, slurm_max_num_timeout=None):
        self.folder = folder

    def update_parameters(self, **params):
        self.params = params

    def submit(self, job):
        if _FakeExecutor.fail:
            raise OSError("No space left on device")
        _FakeExecutor.submitted.append(job)
        return type("Job", (), {"job_id": str(len(_FakeExecutor.submitted))})()


def test_same_second_submissions_get_their_own_folders(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    monkeypatch.setattr(submitit, "AutoExecutor", _FakeExecutor)
    monkeypatch.setattr(slurm, "default_run_name", lambda identifier, mode: f"2026-01-01-00-00-00-{identifier}")
    _FakeExecutor.submitted = []
    argv = ["--mode", "train", "--config-yml", "c.yml", "--run-dir", str(tmp_path), "--identifier", "x", "--submit"]
    config = {"optim": {"num_workers": 0}}
    for _ in range(2):
        slurm.submit(_args("--run-dir", str(tmp_path), "--identifier", "x", "--submit"), argv, config, main)
    names = [job.run_name for job in _FakeExecutor.submitted]
    assert names == ["2026-01-01-00-00-00-x", "2026-01-01-00-00-00-x-2"]
    assert sorted(os.listdir(tmp_path)) == names  # both folders claimed at submission
    _FakeExecutor.fail = True
    try:
        with pytest.raises(OSError):
            slurm.submit(_args("--run-dir", str(tmp_path), "--identifier", "x", "--submit"), argv, config, main)
    finally:
        _FakeExecutor.fail = False
    assert sorted(os.listdir(tmp_path)) == names  # the failed submission left no folder


def test_submit_flags_need_submit(capsys):
    assert main(["--mode", "train", "--config-yml", "x.yml", "--slurm-partition", "gpu"]) == 2
    assert "need --submit" in capsys.readouterr().err


HANG_GUARD_S = 1800.0


def _task_pids(controller_pid: int):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(controller_pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


@pytest.mark.skipif(shutil.which("ps") is None, reason="needs ps to find the job's task")
def test_local_submission_is_preempted_and_resumes(s2ef_data, tmp_path, monkeypatch):
    """submitit's local executor runs the job like SLURM would: we send the job's task the
    preemption signal once it has saved a checkpoint; it must requeue itself and the next
    attempt must continue from that checkpoint to the end of training."""
    submitit = pytest.importorskip("submitit")
    monkeypatch.setenv(slurm.CLUSTER_ENV, "local")
    config = tiny_config(s2ef_data, max_epochs=150, checkpoint_every=2, eval_every=100000)
    path = write_config(tmp_path, config)
    argv = ["--mode", "train", "--config-yml", path, "--run-dir", str(tmp_path / "runs"), "--run-name", "job",
            "--submit", "--slurm-timeout", "0.5", "--no-progress"]
    args, overrides = build_parser().parse_known_args(argv)
    job = slurm.submit(args, argv, resolve_config(args, overrides), entry=main)
    first = tmp_path / "runs" / "job"
    # Event-driven: wait for the checkpoint file and for the job's end. The bound only keeps a
    # broken job from hanging the suite; it is no speed requirement (a loaded machine may be slow).
    hang_guard = time.monotonic() + HANG_GUARD_S
    while not (first / "checkpoint.pt").exists():
        assert time.monotonic() < hang_guard and not job.done(), job.stderr()
        time.sleep(0.2)
    tasks = _task_pids(job._process.pid)
    assert tasks, "no task process under the local controller"
    for pid in tasks:
        os.kill(pid, submitit.local.local.LocalJobEnvironment._usr_sig())
    while not job.done():
        assert time.monotonic() < hang_guard + HANG_GUARD_S, job.stderr()
        time.sleep(0.5)
    assert job.result() == 0, job.stderr()
    assert sorted(os.listdir(tmp_path / "runs")) == ["job", "slurm"]  # one run folder for both attempts
    rows = read_jsonl(str(first), "train")
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps)) and steps[-1] == 150 * 4  # continuous, no step twice, to the end
    records = attempts.read_attempts(str(first))
    assert len(records) == 2, records
    assert records[0]["reason"] == "signal SIGUSR2: checkpoint written" and records[0]["start_step"] == 0
    assert records[1]["start_step"] == records[0]["end_step"] > 0  # the second continued where the first stopped
    assert records[1]["reason"] == "finished" and records[1]["end_step"] == 600
    assert "Requeued" in (job.stderr() or "") + (job.stdout() or "")


def test_two_task_job_trains_with_ddp(s2ef_data, tmp_path):
    """A job of two tasks (what --num-gpus 2 asks SLURM for) sets up torch.distributed from
    submitit's environment: each rank sees half of every epoch's batches (about 10 s: two
    task processes each importing torch)."""
    submitit = pytest.importorskip("submitit")
    config = write_config(tmp_path, tiny_config(s2ef_data, max_epochs=2))
    runs = str(tmp_path / "runs")
    job = slurm.TrainingJob(["--mode", "train", "--config-yml", config, "--no-progress"], runs, "ddp", main)
    executor = submitit.AutoExecutor(folder=str(tmp_path / "logs"), cluster="local")
    executor.update_parameters(tasks_per_node=2, timeout_min=10)
    submitted = executor.submit(job)
    assert submitted.results() == [0, 0], submitted.stderr()
    rows = read_jsonl(os.path.join(runs, "ddp"), "train")
    assert rows[-1]["step"] == 2 * 2  # 8 structures, batch 2 per rank, 2 ranks: 2 steps per epoch
