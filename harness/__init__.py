"""advbench's harness: config, tasks, models, rollout engines, losses, the loop, evaluation
metrics, tracking and the CLI. It reaches estimators only through the ``estimators`` registry."""
