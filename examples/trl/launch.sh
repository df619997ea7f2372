#!/usr/bin/env bash
# A multi-GPU TRL run of one advbench config (examples/trl/train.py), logging to the config's MLflow
# store. Needs `pip install 'advbench[trl]'` and CUDA; the CPU check of the same path is
# tests/harness/test_adapter_trl.py. Example:
#   bash examples/trl/launch.sh estimator=fade model=local model.path=/models/qwen2.5-1.5b \
#       model.device=cuda model.dtype=bfloat16 task=countdown trainer.prompts_per_step=64 \
#       tracking.uri=http://mlflow:5000 tracking.experiment=trl-runs
#   advbench leaderboard trl-runs --runs --tracking-uri http://mlflow:5000
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec accelerate launch --config_file "${ACCELERATE_CONFIG:-$here/accelerate.yaml}" "$here/train.py" "$@"
