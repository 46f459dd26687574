#!/usr/bin/env bash
# End-to-end check of what a cluster does to a training run, on a real one-node SLURM
# (scripts/slurm_localhost.sh: munge, slurmctld, slurmd from Debian's packages; needs root).
#
#   bash scripts/check_slurm.sh          # about 10 minutes on 2 cores
#
# 1. A --submit training job is requeued twice with `scontrol requeue` (SIGTERM) and once by
#    its time limit (SIGUSR2 + submitit's requeue); it must finish in its one run folder with
#    every logged value equal to an uninterrupted run, each attempt starting at the step the
#    previous one checkpointed.
# 2. A 1-process run is resumed by a 2-process job (torchrun in sbatch) at the same global
#    batch and finished by 1 process again: values equal to the uninterrupted run (to float
#    round-off); with the per-process batch unchanged the resume is refused.
# 3. SIGTERM (scancel) leaves a checkpoint at the step it arrived.
# The daemons are stopped at the end, also on failure. Prints PASS/FAIL lines; exit code 0
# only if every check passed.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
WORK=${CHECK_SLURM_DIR:-$(mktemp -d /tmp/spinconv-check-slurm.XXXXXX)}
export SLURM_LOCAL_DIR=${SLURM_LOCAL_DIR:-/tmp/spinconv-slurm}

cleanup() { bash "$ROOT/scripts/slurm_localhost.sh" stop >/dev/null 2>&1 || true; }
trap cleanup EXIT
trap "exit 130" INT TERM
bash "$ROOT/scripts/slurm_localhost.sh" start
export SLURM_CONF="$SLURM_LOCAL_DIR/slurm.conf"
export OMP_NUM_THREADS=1 PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# a short time limit (2 minutes) with the requeue signal 60 s before it
export SPINCONV_SLURM_SIGNAL_DELAY_S=60

cd "$ROOT"
"$PYTHON" - "$WORK" <<'EOF'
import json
import os
import shlex
import subprocess
import sys
import time

sys.path.insert(0, "tests")
from trainers.trainer_testing import emt_slabs, tiny_config, write_config, write_split  # noqa: E402

work = sys.argv[1]
python = sys.executable
runs = os.path.join(work, "runs")
HANG_GUARD_S = 1800  # only ends a hung check; no speed requirement
failures = []


def report(ok, text):
    print(("PASS " if ok else "FAIL ") + text, flush=True)
    if not ok:
        failures.append(text)


def sh(*cmd, check=True):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {out.stderr}")
    return out.stdout.strip()


def wait_for(what, test, job=None):
    start = time.monotonic()
    while True:
        value = test()
        if value:
            return value
        if time.monotonic() - start > HANG_GUARD_S:
            raise RuntimeError(f"waited {HANG_GUARD_S} s for {what}")
        if job is not None and job_state(job) in {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}:
            raise RuntimeError(f"job {job} ended ({job_state(job)}) while waiting for {what}")
        time.sleep(1)


def job_state(job):
    out = sh("scontrol", "show", "job", str(job), check=False)
    for field in out.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    return "UNKNOWN"


def attempts(run):
    path = os.path.join(run, "attempts.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def rows(run):
    with open(os.path.join(run, "metrics.jsonl")) as handle:
        return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in handle if line.strip()]


def last_step(run):
    got = [r["step"] for r in rows(run) if r["split"] == "train"] if os.path.exists(os.path.join(run, "metrics.jsonl")) else []
    return got[-1] if got else 0


def compare(run, reference, exact):
    a, b = rows(run), rows(reference)
    if [(r["step"], r["split"]) for r in a] != [(r["step"], r["split"]) for r in b]:
        return False, f"rows differ: {len(a)} vs {len(b)}"
    worst, where = 0.0, ""
    for x, y in zip(a, b):
        for key, value in y.items():
            if isinstance(value, float):
                diff = abs(x[key] - value) / max(abs(value), 1e-12)
                if diff > worst:
                    worst, where = diff, f" ({key} at step {y['step']})"
    count = sum(len([v for v in r.values() if isinstance(v, float)]) for r in a)
    # 2 processes sum in another order: float32 round-off, grown by 200 steps of training
    ok = worst == 0.0 if exact else worst < 1e-4
    return ok, f"{count} logged values, largest relative difference {worst:.2e}{where}"


data = {"train": write_split(os.path.join(work, "train"), emt_slabs(8, seed=1)),
        "val": write_split(os.path.join(work, "val"), emt_slabs(4, seed=2))}
cfg = tiny_config(data, max_epochs=None, max_steps=3000, batch_size=4, eval_every=300, checkpoint_every=50,
                  ema_decay=0.99, scheduler="step", warmup_steps=100, lr_milestones=[1500], lr_gamma=0.5)
cfg["logger"]["print_every"] = 20
config = write_config(work, cfg)
base = [python, "main.py", "--mode", "train", "--config-yml", config, "--run-dir", runs, "--no-progress"]

# --- 1. requeues: scontrol requeue twice, then the time limit ------------------------------
print("reference run (uninterrupted, no SLURM) ...", flush=True)
started = time.monotonic()
subprocess.run([*base, "--run-name", "reference"], check=True, capture_output=True)
print(f"  {time.monotonic() - started:.0f} s", flush=True)
reference = os.path.join(runs, "reference")

out = subprocess.run([*base, "--run-name", "requeued", "--submit", "--slurm-timeout", str(2 / 60)],
                     capture_output=True, text=True, check=True)
job = out.stderr.split("submitted job ")[1].split(":")[0]
run = os.path.join(runs, "requeued")
print(f"job {job}: {run}", flush=True)
for k in range(2):
    # requeue once this attempt has trained and checkpointed past where it started
    wait_for(f"attempt {k} training", lambda: len(attempts(run)) == k + 1 and last_step(run) >= attempts(run)[-1]["start_step"] + 100, job)
    sh("scontrol", "requeue", job)
    print(f"  scontrol requeue {job} at step ~{last_step(run)}", flush=True)
wait_for("the job's end", lambda: job_state(job) in {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"})
records = attempts(run)
print("  attempts.jsonl:", flush=True)
for r in records:
    print("   ", json.dumps({k: r[k] for k in ("attempt", "job_id", "start_step", "end_step", "reason")}), flush=True)
reasons = [r["reason"] for r in records]
report(job_state(job) == "COMPLETED", f"job {job} completed (state {job_state(job)})")
report(sorted(os.listdir(runs)) == ["reference", "requeued", "slurm"], f"one run folder: {sorted(os.listdir(runs))}")
report(reasons.count("signal SIGTERM: checkpoint written") >= 2, "two attempts ended by scontrol requeue (SIGTERM) with a checkpoint")
report(reasons.count("signal SIGUSR2: checkpoint written") >= 1, "an attempt ended by the time limit (SIGUSR2) with a checkpoint")
report(reasons[-1] == "finished" and records[-1]["end_step"] == 3000, "the last attempt finished the run")
report(all(b["start_step"] == a["end_step"] for a, b in zip(records, records[1:])),
       "every attempt started at the step the previous one checkpointed")
report(all(r["job_id"] == job for r in records), "every attempt ran under the one job id")
ok, text = compare(run, reference, exact=True)
report(ok, f"metrics identical to the uninterrupted run ({text})")
report(os.path.exists(os.path.join(run, "best_checkpoint.pt")), "best_checkpoint.pt in the run folder")

# --- 2. 1 process -> 2 processes -> 1 process ------------------------------------------------
small = tiny_config(data, max_epochs=None, max_steps=300, batch_size=4, eval_every=50, ema_decay=0.9)
small["logger"]["print_every"] = 10
small_config = write_config(work, small, "small.yml")
small_base = [python, "main.py", "--mode", "train", "--config-yml", small_config, "--run-dir", runs, "--no-progress"]
subprocess.run([*small_base, "--run-name", "one"], check=True, capture_output=True)


def sbatch(command, tasks_cpus):
    out = sh("sbatch", "--parsable", "-N", "1", "-n", "1", "-c", str(tasks_cpus), "-o", os.path.join(work, "%j.out"),
             "--wrap", " ".join(shlex.quote(c) for c in command))
    job = out.split(";")[0]
    wait_for(f"job {job}", lambda: job_state(job) in {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"})
    with open(os.path.join(work, f"{job}.out")) as handle:
        return job_state(job), handle.read()


torchrun = [python, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
state, _ = sbatch([*small_base, "--run-name", "moved", "--optim.max_steps=100"], 1)
refused_state, refused = sbatch([*torchrun, *small_base[1:], "--run-name", "moved", "--optim.max_steps=200",
                                 "--resume"], 2)
report(refused_state == "FAILED" and "1 process(es) x batch_size 4 = 4" in refused
       and "2 process(es) x batch_size 4 = 8" in refused and "--allow-world-size-change" in refused,
       "2 processes with the same per-process batch: refused, naming both counts and the flag")
state2, log2 = sbatch([*torchrun, *small_base[1:], "--run-name", "moved", "--optim.max_steps=200",
                       "--optim.batch_size=2", "--resume"], 2)
state3, _ = sbatch([*small_base, "--run-name", "moved", "--resume"], 1)
moved = os.path.join(runs, "moved")
worlds = [(r["world_size"], r["start_step"], r["end_step"]) for r in attempts(moved)]
report(state == state2 == state3 == "COMPLETED" and worlds == [(1, 0, 100), (2, 100, 200), (1, 200, 300)],
       f"1 -> 2 -> 1 processes in one folder: {worlds}")
ok, text = compare(moved, os.path.join(runs, "one"), exact=False)
report(ok, f"1 -> 2 -> 1 processes match the 1-process run ({text})")

# --- 3. SIGTERM leaves a checkpoint at the step it arrived ----------------------------------
out = subprocess.run([*base, "--run-name", "termed", "--submit", "--logger.print_every=1"], capture_output=True,
                     text=True, check=True)
job = out.stderr.split("submitted job ")[1].split(":")[0]
term = os.path.join(runs, "termed")
wait_for("training", lambda: last_step(term) >= 200, job)
sh("scancel", job)  # SIGTERM to the job's processes, SIGKILL after KillWait (30 s)
wait_for("the job's end", lambda: job_state(job) in {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"})
import torch  # noqa: E402

payload = torch.load(os.path.join(term, "checkpoint.pt"), map_location="cpu", weights_only=False)
record = attempts(term)[-1]
logged = max(r["step"] for r in rows(term))
report(record["reason"] == "signal SIGTERM: checkpoint written" and payload["step"] == record["end_step"] == logged,
       f"SIGTERM: checkpoint at step {payload['step']}, attempt ended at {record['end_step']}, last logged step {logged}")

print(f"{len(failures)} check(s) failed" if failures else "all checks passed", flush=True)
sys.exit(1 if failures else 0)
EOF
