#!/usr/bin/env bash
# GPU checks in one go: the decisive side-by-side timing first (batch 8 against the
# reference, with op counts), then the CUDA tests (tests/gpu), then more timings (unchunked with TF32 matmuls;
# batch 32 with TF32 for both; energy-centric training; one ethanol molecule). Usage:
#   REFERENCE_ROOT=/path/to/ocp OUT=/tmp/gpu bash scripts/gpu_checks.sh
# Each step has its own time limit so one slow step cannot hide the others' results; the
# limits add up to under 10 minutes (one device call). RUN_GRAPHS=1 adds the CUDA-graph timing;
# RUN_SCALING=1 / RUN_PROFILE=1 add
# the 100 -> 2000 atom scaling and a profile; RUN_RELAX=1 batched against one-at-a-time
# relaxations (a 30-step force model, 30 L-BFGS steps per OC20-mini structure).
set -u -o pipefail
OUT=${OUT:-gpu_checks_out}
REFERENCE_ROOT=${REFERENCE_ROOT:-}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"

compare=()
if [ -n "$REFERENCE_ROOT" ]; then compare=(--compare reference --reference-root "$REFERENCE_ROOT"); fi
echo "== force-centric, batch 8: ours (fp32, bf16 autocast) vs reference"
timeout 130 python3 scripts/benchmark_model.py --device cuda "${compare[@]}" --autocast bf16 --census \
    --repeats 10 --warmup 3 --output "$OUT/bench_force.jsonl" | grep -E '"case": "(ratio|flops|census)"' | cut -c1-400
echo "== CUDA tests"
timeout 120 python3 -m pytest -q -s -p no:cacheprovider tests/gpu tests/models/test_spinconv_autocast.py 2>&1 \
    | tee "$OUT/gpu_tests.log" | grep -E "synchronising calls|passed|failed|Error|error" | tail -25

echo "== force-centric, batch 8: ours unchunked with TF32 matmuls (as cuDNN convolutions) vs reference"
timeout 100 python3 scripts/benchmark_model.py --device cuda "${compare[@]}" --chunk-elements none \
    --matmul-precision high --repeats 10 --warmup 3 --no-flops --output "$OUT/bench_force_tf32.jsonl" \
    | grep -E '"case": "ratio"' | cut -c1-400
echo "== force-centric, batch 32, TF32 matmuls for both: ours vs reference"
timeout 100 python3 scripts/benchmark_model.py --device cuda "${compare[@]}" --batch-size 32 \
    --matmul-precision high --repeats 5 --warmup 2 --no-flops --output "$OUT/bench_force_b32.jsonl" \
    | grep -E '"case": "ratio"' | cut -c1-400
echo "== energy-centric (forces = -dE/dx): ours vs reference, training step"
timeout 90 python3 scripts/benchmark_model.py --device cuda "${compare[@]}" --force-estimator grad \
    --mode forces train --repeats 6 --warmup 2 --no-flops --output "$OUT/bench_grad.jsonl" \
    | grep -E '"case": "ratio"' | cut -c1-400
echo "== one ethanol molecule (launch-bound latency): ours vs reference"
timeout 40 python3 scripts/benchmark_model.py --device cuda "${compare[@]}" --molecule CH3CH2OH --batch-size 1 \
    --mode forward train --repeats 20 --warmup 3 --no-flops --no-memory --output "$OUT/bench_molecule.jsonl" \
    | grep -E '"case": "ratio"' | cut -c1-300
if [ -n "${RUN_GRAPHS:-}" ]; then
    echo "== CUDA graphs (GraphedSpinConv) against plain calls: ethanol (MD17, OC20 configs), 8 slabs"
    timeout 90 python3 scripts/benchmark_cuda_graphs.py --repeats 30 | cut -c1-400
fi
if [ -n "${RUN_SCALING:-}" ]; then
    echo "== scaling 100 -> 2000 atoms (forward)"
    timeout 90 python3 scripts/benchmark_model.py --device cuda --scaling --mode forward --no-flops \
        --output "$OUT/scaling.jsonl" | grep -E '"case": "scaling"' | cut -c1-300
fi
if [ -n "${RUN_PROFILE:-}" ]; then
    echo "== profile (ours, forward and train)"
    timeout 80 python3 scripts/benchmark_model.py --device cuda --profile --mode forward train \
        --repeats 3 --output "$OUT/profile.jsonl" > "$OUT/profile.txt" 2>&1; tail -c 3000 "$OUT/profile.txt"
fi
if [ -n "${RUN_RELAX:-}" ]; then
    echo "== relaxations on CUDA: batch 8 vs one structure per model call"
    timeout 60 python3 main.py --mode train --config-yml configs/s2ef/oc20_mini/spinconv_force.yml \
        --optim.max_steps=30 --optim.max_epochs=null --optim.eval_every=1000 --run-dir "$OUT/relax_runs" \
        --run-name force30 --no-progress > "$OUT/relax_train.log" 2>&1
    timeout 90 python3 scripts/benchmark_relax.py --device cuda --checkpoint "$OUT/relax_runs/force30/checkpoint.pt" \
        --data data/oc20_mini/is2re/val_id --batch-sizes 1 8 --repeats 3 --steps 30 --fmax 1e-4 | cut -c1-300
fi
