"""One run, one folder: atomic folder claims, failed starts, metrics trimming, the attempts
log, temporary-file cleanup, and the sampler position across process counts."""
from __future__ import annotations

import json
import os
import threading

import pytest

from spinconv_train import rundir
from spinconv_train.checkpoints import store
from spinconv_train.datasets.sampler import BalancedBatchSampler, WorldSizeChangeError, resume_position
from spinconv_train.training import attempts


def test_300_simultaneous_claims_get_300_folders(tmp_path):
    count = 300
    barrier = threading.Barrier(count)
    made: list[str] = []
    errors: list[BaseException] = []

    def start():
        barrier.wait()  # all threads call mkdir at once, with the same base name
        try:
            made.append(rundir.create_run_dir(str(tmp_path / "runs"), "2026-01-01-00-00-00-same"))
        except BaseException as err:  # noqa: BLE001 - collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=start) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(set(made)) == count and len(os.listdir(tmp_path / "runs")) == count


def test_run_name_claims_and_continues(tmp_path):
    options = rundir.RunOptions(run_dir=str(tmp_path), run_name="r")
    first = rundir.claim_run_dir(options, "train")
    assert first.created and os.path.isdir(first.path)
    again = rundir.claim_run_dir(options, "train")  # the same command again: continue the folder
    assert again.path == first.path and not again.created
    with pytest.raises(rundir.RunDirectoryExistsError, match="--mode validate writes a new folder"):
        rundir.claim_run_dir(options, "validate")


def test_resume_picks_the_newest_folder_of_the_identifier(tmp_path):
    for name in ("2026-01-01-00-00-00-a", "2026-01-02-00-00-00-a", "2026-01-02-00-00-00-a-2",
                 "2026-01-03-00-00-00-b", "2026-01-04-00-00-00-a-validate"):
        os.mkdir(tmp_path / name)
    assert rundir.newest_run(str(tmp_path), "a") == str(tmp_path / "2026-01-02-00-00-00-a-2")
    found = rundir.claim_run_dir(rundir.RunOptions(run_dir=str(tmp_path), identifier="b", resume=True), "train")
    assert found.path == str(tmp_path / "2026-01-03-00-00-00-b") and not found.created
    fresh = rundir.claim_run_dir(rundir.RunOptions(run_dir=str(tmp_path), identifier="c", resume=True), "train")
    assert fresh.created  # nothing to resume: a new run


def test_failed_start_leaves_no_folder(tmp_path, monkeypatch):
    def broken(run_dir, config):
        raise OSError("No space left on device")

    monkeypatch.setattr(rundir, "build_loggers", broken)
    options = rundir.RunOptions(run_dir=str(tmp_path), run_name="r")
    with pytest.raises(OSError, match="No space"):
        rundir.open_run_dir({"seed": 0}, options, "train")
    assert os.listdir(tmp_path) == []
    os.mkdir(tmp_path / "r")  # an existing run is never removed by a failed continuation
    with pytest.raises(OSError):
        rundir.open_run_dir({"seed": 0}, options, "train")
    assert os.path.isdir(tmp_path / "r")


def test_trim_metrics_drops_rows_after_the_step(tmp_path):
    rows = [{"time": 0, "step": s, "epoch": 0, "split": "train", "loss": float(s)} for s in (2, 4, 6)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "metrics.csv").write_text("time,step,epoch,split,metric,value\n"
                                          + "".join(f"0,{s},0,train,loss,{s}\n" for s in (2, 4, 6)))
    assert rundir.trim_metrics(str(tmp_path), 4) == 1
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [2, 4]
    assert (tmp_path / "metrics.csv").read_text().splitlines()[1:] == ["0,2,0,train,loss,2", "0,4,0,train,loss,4"]
    rundir.trim_metrics(str(tmp_path), -1)  # a restart from scratch logs everything again
    assert (tmp_path / "metrics.jsonl").read_text() == ""


def test_attempts_log_records_ends_and_hard_kills(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    assert attempts.begin_attempt(str(tmp_path), 0, 1, None) == 0
    attempts.end_attempt(str(tmp_path), 30, "signal SIGTERM: checkpoint written")
    attempts.end_attempt(str(tmp_path), 99, "finished")  # the first reason stands
    attempts.begin_attempt(str(tmp_path), 30, 2, "ck.pt")  # killed -9: never ends
    attempts.begin_attempt(str(tmp_path), 30, 2, "ck.pt")
    records = attempts.read_attempts(str(tmp_path))
    assert [r["attempt"] for r in records] == [0, 1, 2]
    assert records[0]["job_id"] == "4242" and records[0]["end_step"] == 30
    assert records[0]["reason"].startswith("signal SIGTERM")
    assert records[1]["reason"] == attempts.KILLED and records[1]["end_step"] is None
    assert records[2]["reason"] is None and records[2]["world_size"] == 2


def test_leftover_temporaries_are_removed(tmp_path):
    (tmp_path / ".tmp-abc.pt").write_bytes(b"partial")
    (tmp_path / "checkpoint.pt").write_bytes(b"x")
    assert store.remove_temporaries(str(tmp_path)) == [".tmp-abc.pt"]
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt"]


def _global_batches(natoms, batch_size, world, start=0):
    """Each global batch of an epoch (the union of the ranks' batches), from batch ``start``."""
    samplers = [BalancedBatchSampler(natoms=natoms, batch_size=batch_size, num_replicas=world, rank=r, seed=3)
                for r in range(world)]
    for sampler in samplers:
        sampler.load_state_dict({"epoch": 0, "batches_yielded": start, "seed": 3})
    return [sorted(sum(parts, [])) for parts in zip(*samplers)]


def test_same_global_batch_continues_exactly_under_another_process_count():
    natoms = [5 + (7 * i) % 11 for i in range(24)]
    one = _global_batches(natoms, 4, 1)
    # a 1-process checkpoint after 2 batches of 4, resumed by 2 processes of 2, then back to 1
    state = {"epoch": 0, "batches_yielded": 2, "seed": 3, "world_size": 1, "batch_size": 4, "structures": 8}
    batches, replayed = resume_position(state, world_size=2, batch_size=2, allow_change=False)
    assert (batches, replayed) == (2, 0)
    two = _global_batches(natoms, 2, 2, start=batches)
    assert two == one[2:]
    state = {"epoch": 0, "batches_yielded": 4, "seed": 3, "world_size": 2, "batch_size": 2, "structures": 16}
    assert resume_position(state, 1, 4, False) == (4, 0)


def test_another_global_batch_is_refused_or_replayed():
    state = {"epoch": 0, "batches_yielded": 3, "seed": 0, "world_size": 1, "batch_size": 4, "structures": 12}
    with pytest.raises(WorldSizeChangeError) as err:
        resume_position(state, world_size=2, batch_size=4, allow_change=False)
    message = str(err.value)
    assert "1 process(es) x batch_size 4 = 4" in message and "2 process(es) x batch_size 4 = 8" in message
    assert "--allow-world-size-change" in message and "--optim.batch_size=2" in message
    assert resume_position(state, 2, 4, allow_change=True) == (1, 4)  # restart at 8: 4 structures again
    old = {"epoch": 0, "batches_yielded": 3, "seed": 0}  # before the process count was recorded
    assert resume_position(old, 2, 4, False) == (3, 0)
