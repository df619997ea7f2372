#!/usr/bin/env bash
# A verl PPO run with an advbench estimator and loss (harness/adapters/verl.py), logging to MLflow.
# Needs `pip install 'advbench[verl]'` and GPUs (verl's FSDP workers and its vLLM/SGLang rollout);
# not run on this project's CPU machines, where tests/harness/test_adapter_verl.py checks the
# registered functions against verl's own. Usage:
#   python examples/verl/make_data.py task=countdown --out data/countdown
#   MODEL=/models/qwen2.5-1.5b ESTIMATOR=fade LOSS=drpo bash examples/verl/run.sh trainer.n_gpus_per_node=8
# Hyperparameters: ADVBENCH_VERL_PARAMS='{"estimator": {"fade": {"ema": 0.05}}}' (verl's processes
# inherit it). Then: advbench leaderboard verl-runs --runs --tracking-uri "$MLFLOW_TRACKING_URI".
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="${DATA:-data/countdown}"
export MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI:-sqlite:///advbench.db}"
exec python -m verl.trainer.main_ppo \
    algorithm.adv_estimator="advbench_${ESTIMATOR:-fade}" \
    actor_rollout_ref.actor.policy_loss.loss_mode="advbench_${LOSS:-drpo}" \
    data.train_files="$data/train.parquet" data.val_files="$data/eval.parquet" \
    data.train_batch_size=64 data.max_prompt_length=256 data.max_response_length=512 \
    actor_rollout_ref.model.path="${MODEL:?set MODEL to a local HF checkpoint}" \
    actor_rollout_ref.rollout.n=8 actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.actor.ppo_mini_batch_size=64 \
    custom_reward_function.path="$here/reward.py" custom_reward_function.name=compute_score \
    trainer.logger='["console","mlflow"]' trainer.project_name="${EXPERIMENT:-verl-runs}" \
    trainer.experiment_name="${ESTIMATOR:-fade}-${LOSS:-drpo}" trainer.val_before_train=true \
    trainer.test_freq=10 trainer.total_training_steps="${STEPS:-150}" data.seed="${SEED:-0}" \
    "$@"
