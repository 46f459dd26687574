"""``attempts.jsonl``: one line per attempt of a run (a start, a requeue, a manual resume),
with its job id, world size, first and last step and why it ended."""
from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

from spinconv_train.atomic_files import write_text_atomic

ATTEMPTS = "attempts.jsonl"
# Recorded for an attempt that never reported its end (kill -9, node failure, out of memory).
KILLED = "killed without a signal (no end was recorded; work after its last checkpoint was redone)"


def job_id() -> str | None:
    """The SLURM job id (``<job>_<array task>`` for arrays), or submitit's local job id."""
    job = os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID")
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{job}_{task}" if job and task else job


def read_attempts(run_dir: str) -> list[dict[str, Any]]:
    path = os.path.join(run_dir, ATTEMPTS)
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _write(run_dir: str, records: list[dict[str, Any]]) -> None:
    write_text_atomic(os.path.join(run_dir, ATTEMPTS), "".join(json.dumps(r) + "\n" for r in records))


def begin_attempt(run_dir: str, start_step: int, world_size: int, resumed_from: str | None) -> int:
    """Append this attempt (closing an earlier one that never recorded its end); return its index."""
    records = read_attempts(run_dir)
    for record in records:
        if record.get("reason") is None:
            record["reason"] = KILLED
    records.append({"attempt": len(records), "job_id": job_id(),
                    "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
                    "host": socket.gethostname(), "world_size": int(world_size),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "start_step": int(start_step),
                    "resumed_from": resumed_from, "end_step": None, "ended": None, "reason": None})
    _write(run_dir, records)
    return len(records) - 1


def end_attempt(run_dir: str, end_step: int, reason: str) -> None:
    """Record the end of the newest attempt (unless already recorded): its last step and why it ended."""
    records = read_attempts(run_dir)
    if not records or records[-1].get("reason") is not None:
        return
    records[-1].update(end_step=int(end_step), ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"), reason=reason)
    _write(run_dir, records)
