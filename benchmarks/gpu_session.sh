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
#   4. packs: benchmarks/packs.py, runs per hour of packs of 1, 4, 16 and 32 runs at 50m (and 1
#      and 16 at 10m and 200m), decode tokens/s, the packed update's MFU, peak memory (packs-*.md)
#   5. claims50: the seed papers' claims at 50M (suites/claims/seeds-50m.yaml: 8 seeds per arm,
#      every arm's lr from a grid on unscored seeds, packed); the page goes to OUTDIR/claims-50m
#      (commit it under leaderboards/claims-50m/ with the device, date and command)
# The default parts are what is still outstanding on a GPU: packs claims50.
#
# DRY_RUN=1 runs parts 4 and 5 on the CPU at the tiny scale in a few minutes, with the current
# environment (no wheels): the script's own test, where no GPU is lent.
set -uo pipefail
out=${1:?usage: gpu_session.sh OUTDIR [GPU_SECONDS] [SUITE_SECONDS] [SUITE_STEPS]}
gpu_s=${2:-200}
suite_s=${3:-200}
steps=${4:-20}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH

start=$SECONDS
dry=${DRY_RUN:-0}
if [ "$dry" = 1 ]; then
    unset PYTHONPATH
    echo "== dry run: the CPU, the tiny scale, this environment"
else
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
echo "== installed in $((SECONDS - start)) s"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
fi
python3 -c "import torch, transformers, mlflow, advbench.harness.runner as r; \
print('torch', torch.__version__, 'transformers', transformers.__version__, 'mlflow', mlflow.__version__)"

parts=${PARTS:-packs claims50}
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
if want packs; then
echo "== 4. packs against one run at a time (limit ${PACKS_SECONDS:-150} s)"
if [ "$dry" = 1 ]; then
    runs=("--sizes 1,2 --solo 1:model=tiny model.device=cpu trainer.steps=4 eval.every=2 task.eval_size=16")
else
    # one run per GPU (--solo 1) against packs; 10 steps and one eval each: a run per hour figure
    # for short runs, the decode and update rates for any length
    runs=("--sizes 1,4,16,32 --solo 1:model=50m trainer.steps=10 eval.every=10"
          "--sizes 1,16 --solo 0:model=10m trainer.steps=10 eval.every=10"
          "--sizes 1,16 --solo 0:model=200m trainer.steps=10 eval.every=10")
fi
for spec in "${runs[@]}"; do
    read -ra sizes <<< "${spec%%:*}"
    read -ra config <<< "${spec#*:}"
    name=$(printf '%s' "${config[0]}" | tr -c 'a-z0-9' '-')
    timeout "${PACKS_SECONDS:-150}" python3 benchmarks/packs.py "${sizes[@]}" \
        --json "$out/packs-$name.json" "${config[@]}" 2>&1 | tee "$out/packs-$name.md" | tail -12
done
echo "== 4 done at $((SECONDS - start)) s"
fi

if want claims50; then
echo "== 5. the seed papers' claims at 50M (limit ${CLAIMS_SECONDS:-420} s)"
work=/tmp/claims50 && mkdir -p "$work"
store=("tracking.uri=sqlite:///$work/advbench.db" "tracking.artifact_root=$work/artifacts")
if [ "$dry" = 1 ]; then
    store+=(model=tiny model.device=cpu model.autocast=none trainer.steps=4 eval.every=2 task.eval_size=16
            trainer.prompts_per_step=4 trainer.group_size=4 eval.n=4)
    claims_args=(--seeds 2)
else
    claims_args=()
fi
timeout "${CLAIMS_SECONDS:-420}" advbench claims seeds-50m "${claims_args[@]}" --out "$out/claims-50m" "${store[@]}" \
    2>&1 | grep -v "it/s\]" | grep -v "━" | tail -40
echo "== 5 ran until $((SECONDS - start)) s; the page from what finished:"
timeout 90 advbench claims seeds-50m "${claims_args[@]}" --no-run --out "$out/claims-50m" "${store[@]}" 2>&1 | tail -12
cp "$work/advbench.db" "$out/claims-50m.db"
echo "== 5 done at $((SECONDS - start)) s"
fi

ls -la "$out"
echo "== all done at $((SECONDS - start)) s"
