#!/usr/bin/env bash
# Every GPU measurement as one script, for a short GPU window (docs/results/gpu.md, "GPU path").
#
# Run on the GPU machine from the repository root. That machine has its own python3 with
# torch and CUDA but no registry, so advbench and the dependencies its image lacks travel as wheels
# in .whl/ (docs/guides/gpu.md says how they are gathered); they install into /tmp/site.
#
#   bash benchmarks/gpu_session.sh OUTDIR [GPU_SECONDS] [SUITE_SECONDS] [SUITE_STEPS]
#   PARTS="tests suite" SUITE_OVERRIDES="eval.every=5" bash benchmarks/gpu_session.sh OUTDIR ...
#
# Parts, each bounded by its own timeout so that one overrunning part cannot take the others'
# time, each leaving its numbers in OUTDIR as it goes (PARTS names which run; default all):
#   0. tests: the tests that need CUDA (tests/harness/test_gpu_path.py's CUDA run, the axes)
#   1. benchmarks/gpu.py over the 10m, 50m and 200m scales with every engine (gpu.json, gpu.md)
#   2. the compiled decode against plain hf at 200m, the scale of the 5x target (gpu-compiled.*)
#   3. the gpu-50m suite cut to SUITE_STEPS steps (default 20): per-run step and eval times,
#      peak memory and the leaderboard of the cells that finished (suite.json, leaderboard.md)
set -uo pipefail
out=${1:?usage: gpu_session.sh OUTDIR [GPU_SECONDS] [SUITE_SECONDS] [SUITE_STEPS]}
gpu_s=${2:-200}
suite_s=${3:-200}
steps=${4:-20}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH

start=$SECONDS
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
echo "== installed in $((SECONDS - start)) s"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
python3 -c "import torch, transformers, mlflow, advbench.harness.runner as r; \
print('torch', torch.__version__, 'transformers', transformers.__version__, 'mlflow', mlflow.__version__)"

parts=${PARTS:-tests gpu compiled suite}
want() { [[ " $parts " == *" $1 "* ]]; }

if want tests; then
echo "== 0. the CUDA tests (limit 90 s)"
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/harness/test_gpu_path.py -k cuda 2>&1 | tail -15
echo "== 0 done at $((SECONDS - start)) s"
fi

if want gpu; then
echo "== 1. benchmarks/gpu.py, every engine, 10m/50m/200m (limit ${gpu_s} s)"
timeout "$gpu_s" python3 benchmarks/gpu.py --scales 10m,50m,200m --engines hf,hf-static,paged,vllm \
    --repeats 2 --json "$out/gpu.json" --results "$out/gpu.md" 2>&1 | grep -v "it/s\]" | tee "$out/gpu.log"
echo "== 1 done at $((SECONDS - start)) s"
fi

if want compiled; then
echo "== 2. compiled decode against hf at 200m (limit 120 s)"
timeout 120 python3 benchmarks/gpu.py --scales 200m --engines hf,hf-compiled --repeats 2 \
    --json "$out/gpu-compiled.json" --results "$out/gpu.md" 2>&1 | grep -v "it/s\]" | tail -20
echo "== 2 done at $((SECONDS - start)) s"
fi

if want suite; then
echo "== 3. gpu-50m suite at ${steps} steps (limit ${suite_s} s)"
work=/tmp/suite && mkdir -p "$work"
read -ra extra <<< "${SUITE_OVERRIDES:-}"
overrides=("trainer.steps=$steps" "tracking.uri=sqlite:///$work/advbench.db" "${extra[@]}")
timeout "$suite_s" advbench suite gpu-50m "${overrides[@]}" 2>&1 | grep -v "it/s\]" | tail -40
echo "== 3 done at $((SECONDS - start)) s"
python3 benchmarks/suite_times.py "sqlite:///$work/advbench.db" gpu-50m "$out/suite.json"
timeout 60 advbench leaderboard gpu-50m --tracking-uri "sqlite:///$work/advbench.db" --out "$work/lb" \
    && cp "$work/lb/leaderboard.md" "$work/lb/pass_at_1.png" "$out/"
cp "$work/advbench.db" "$out/"  # the runs themselves, for a page or curves made here afterwards
fi
ls -la "$out"
echo "== all done at $((SECONDS - start)) s"
