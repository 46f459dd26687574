"""scripts/benchmark_relax.py: batched against one-at-a-time relaxations, measured side by side."""
from __future__ import annotations

import json

from trainers.trainer_testing import emt_slabs, load_script, write_split


def test_benchmark_relax_reports_each_batch_size(force_checkpoint, tmp_path, capsys):
    data = write_split(str(tmp_path / "relax"), emt_slabs(3, seed=21, labelled=False))
    script = load_script("benchmark_relax")
    assert script.main(["--checkpoint", force_checkpoint, "--data", data, "--batch-sizes", "1", "3",
                        "--repeats", "2", "--steps", "4", "--fmax", "1e-4", "--threads", "1"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    single, batched, summary = lines
    assert single["batch_size"] == 1 and batched["batch_size"] == 3 and summary["summary"]
    assert single["speedup"] == 1.0 and len(batched["runs_s"]) == 2
    assert single["optimizer_steps"] == batched["optimizer_steps"] == 3 * 4  # fmax 1e-4: never converged
    assert single["model_calls"] == 3 * 5 and batched["model_calls"] == 5  # one call per lockstep round
    assert summary["max_position_difference_A"] < 1e-4
