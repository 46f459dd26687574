"""``--submit``: submitit parameters from the flags, the job's command per attempt, and a
real (local-executor) submission that is preempted and resumes from its checkpoint."""
from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from trainers.trainer_testing import read_jsonl, tiny_config, write_config
from spinconv_train.launch.cli import build_parser, main, resolve_config
from spinconv_train.launch import slurm


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


def test_attempts_resume_from_the_newest_checkpoint(tmp_path):
    pytest.importorskip("submitit")
    job = slurm.TrainingJob(["--mode", "train", "--config-yml", "/abs/c.yml"], str(tmp_path), "run", main)
    assert job.command()[-4:] == ["--run-dir", str(tmp_path), "--run-name", "run"]
    first = job.checkpoint().function  # preempted before any checkpoint: start again from scratch
    assert (first.attempt, first.attempt_name, first.resume_from) == (1, "run-requeue1", None)
    os.makedirs(tmp_path / "run-requeue1")
    (tmp_path / "run-requeue1" / "checkpoint.pt").write_bytes(b"x")
    second = first.checkpoint().function
    assert second.attempt_name == "run-requeue2" and second.history == ["run", "run-requeue1"]
    assert second.command()[-2:] == ["--checkpoint", str(tmp_path / "run-requeue1" / "checkpoint.pt")]
    third = second.checkpoint().function  # nothing new written in requeue2: keep requeue1's
    assert third.resume_from == second.resume_from


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
    second = tmp_path / "runs" / "job-requeue1"
    assert (second / "checkpoint.pt").exists(), job.stdout()
    resumed = read_jsonl(str(second), "train")
    before = read_jsonl(str(first), "train")
    assert resumed[0]["step"] > 2 and resumed[0]["step"] > before[0]["step"]  # not from scratch
    assert resumed[-1]["step"] == 150 * 4  # trained to the end (8 structures, batch 2)
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
