"""scripts/benchmark_model.py on the tiny configuration: JSON lines, ratios, agreement."""
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "benchmark_model.py"


def _script():
    spec = importlib.util.spec_from_file_location("benchmark_model_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(tmp_path, *args):
    out = tmp_path / "bench.jsonl"
    # One thread: the test process cannot set OMP_WAIT_POLICY for itself, and spinning
    # OpenMP threads on a busy CI machine make a 2-thread run many times slower.
    rc = _script().main(["--config", "tiny", "--batch-size", "1", "--repeats", "2", "--warmup", "0",
                         "--threads", "1", "--no-memory", "--output", str(out), *args])
    assert rc == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_compare_impl_tiny(tmp_path):
    lines = _run(tmp_path, "--compare", "impl")
    timings = [r for r in lines if r["case"] == "timing"]
    assert {(r["model"], r["mode"]) for r in timings} == {
        (m, mode) for m in ("spinconv_fft", "spinconv_conv") for mode in ("forward", "forces", "train")
    }
    for r in timings:
        assert r["num_atoms"] == 38 and r["num_edges"] > 0 and r["threads"] == 1
        assert r["structures_per_s"] == pytest.approx(1.0 / r["median_s"], rel=1e-3)
        assert len(r["times_s"]) == 2
    ratios = [r for r in lines if r["case"] == "ratio"]
    assert len(ratios) == 3 and all(r["speedup"] > 0 for r in ratios)
    # The Fourier and the plain Conv1d spin convolutions compute the same function.
    (agree,) = [r for r in lines if r["case"] == "agreement"]
    assert agree["max_abs_diff_energy"] <= 1e-5 * max(1.0, agree["max_abs_energy"])
    assert agree["max_abs_diff_forces"] <= 1e-5 * max(1.0, agree["max_abs_forces"])
    flops = {r["model"]: r for r in lines if r["case"] == "flops"}
    assert flops["spinconv_fft"]["spin_conv_items"] == flops["spinconv_conv"]["spin_conv_items"] > 0
    assert flops["spinconv_fft"]["spin_conv_gflop"] < flops["spinconv_conv"]["spin_conv_gflop"]
    assert flops["spinconv_conv"]["matmul_gflops"] > 0
    assert lines[-1]["case"] == "summary" and "train_ms" in lines[-1]


def test_scaling_and_schnet_tiny(tmp_path):
    lines = _run(tmp_path, "--scaling", "--scaling-sizes", "100", "256", "--mode", "forward")
    scaling = [r for r in lines if r["case"] == "scaling"]
    assert [r["num_atoms"] for r in scaling] == [100, 256]
    assert scaling[1]["num_edges"] > scaling[0]["num_edges"]
    (fit,) = [r for r in lines if r["case"] == "scaling_fit"]
    assert fit["points"] == 2 and "loglog_slope" in fit
    lines = _run(tmp_path, "--compare", "schnet", "--mode", "train", "--no-flops", "--census")
    assert {r["model"] for r in lines if r["case"] == "timing"} == {"spinconv", "schnet"}
    census = {r["model"]: r for r in lines if r["case"] == "census"}
    assert set(census) == {"spinconv", "schnet"} and all(r["mode"] == "train" for r in census.values())
    assert all(0 < r["non_view_ops"] <= r["ops"] for r in census.values())


def test_linear_fit_exact():
    fit = _script().linear_fit([100.0, 200.0, 400.0], [0.1, 0.2, 0.4])
    assert fit["s_per_atom"] == pytest.approx(1e-3)
    assert fit["r2_linear"] == pytest.approx(1.0)
    assert fit["loglog_slope"] == pytest.approx(1.0)


def test_reference_needs_a_root(capsys, monkeypatch):
    monkeypatch.delenv("SPINCONV_REFERENCE_ROOT", raising=False)
    with pytest.raises(SystemExit):
        _script().main(["--compare", "reference"])
    assert "--reference-root" in capsys.readouterr().err


def test_memory_worker_tiny_subprocess():
    from spinconv_train.benchmarks.cases import TINY_CONFIG
    from spinconv_train.benchmarks.memory import measure_peak_memory

    spec = {"kind": "spinconv", "config": TINY_CONFIG, "mode": "train", "threads": 1, "warmup": 1,
            "batch": {"type": "benchmark", "num_structures": 1}}
    result = measure_peak_memory(spec, timeout=300)
    assert "error" not in result, result
    assert result["peak_rss_mib"] >= result["rss_before_mib"] > 50
    assert 0 <= result["peak_increase_mib"] < 500


def test_autocast_variant_tiny(tmp_path):
    lines = _run(tmp_path, "--autocast", "bf16", "--mode", "forward", "--no-flops")
    timings = {r["model"] for r in lines if r["case"] == "timing"}
    assert timings == {"spinconv", "spinconv_bf16"}
    assert [(r["ours"], r["baseline"]) for r in lines if r["case"] == "ratio"] == [("spinconv", "spinconv_bf16")]


def test_malloc_retain_restarts_the_script_with_glibc_settings(tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "retain.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    subprocess.run([sys.executable, str(SCRIPT), "--config", "tiny", "--batch-size", "1", "--repeats", "1",
                    "--warmup", "0", "--threads", "1", "--no-memory", "--no-flops", "--mode", "forward",
                    "--malloc", "retain", "--output", str(out)], check=True, env=env, capture_output=True)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines and all(r["malloc"] == "retain" for r in lines)
    assert all(r["omp_wait_policy"] == "PASSIVE" for r in lines)


def test_chunk_elements_option_reaches_our_model_only():
    script = _script()
    args = script.parse_args(["--compare", "reference", "--reference-root", "/nonexistent", "--chunk-elements", "4096"])
    variants = script.model_variants(args)
    assert variants["spinconv"]["config"]["spin_conv_chunk_elements"] == 4096
    assert "spin_conv_chunk_elements" not in variants["reference"]["config"]
    assert script.our_config(script.parse_args(["--chunk-elements", "none"]))["spin_conv_chunk_elements"] is None
    assert "spin_conv_chunk_elements" not in script.our_config(script.parse_args([]))
    with pytest.raises(SystemExit):
        script.parse_args(["--chunk-elements", "lots"])


def test_molecule_option_times_the_molecule(tmp_path):
    lines = _run(tmp_path, "--molecule", "CH3CH2OH", "--mode", "forward", "--no-flops")
    (timing,) = [r for r in lines if r["case"] == "timing"]
    assert timing["batch"] == "CH3CH2OH" and timing["num_atoms"] == 9 and timing["num_edges"] == 72
    assert lines[-1]["batch"] == {"type": "molecule", "name": "CH3CH2OH", "num_structures": 1}
