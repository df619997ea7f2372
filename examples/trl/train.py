"""An advbench run config trained by TRL's GRPOTrainer with an advbench estimator, logged to MLflow
where `advbench leaderboard EXPERIMENT --runs` ranks it (docs/guides/beyond-one-machine.md).

    # one process (here: the CPU, the tiny model), as `advbench run` takes its config:
    python examples/trl/train.py estimator=fade trainer.steps=20 tracking.experiment=trl-runs
    # several GPUs, one process each (accelerate):
    bash examples/trl/launch.sh estimator=fade model=local model.path=/models/qwen2.5-1.5b \
        model.device=cuda model.dtype=bfloat16 task=countdown seed=0 tracking.experiment=trl-runs

Arguments are advbench's config overrides (`advbench run --help`); the output folder (TRL's
checkpoints, with the estimator's state) is --output-dir, default trl-out/<estimator>-<seed>.
"""

from __future__ import annotations

import argparse
import os

from advbench.harness.adapters.trl import build_trainer
from advbench.harness.config import load


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", help="advbench config overrides, key=value")
    parser.add_argument("--output-dir", help="TRL's output folder (default trl-out/<estimator>-<seed>)")
    parser.add_argument(
        "--resume", action="store_true", help="resume from the output folder's last checkpoint"
    )
    args = parser.parse_args()
    runs = load(args.overrides)
    if len(runs) != 1:
        parser.error(f"one run per launch; the overrides sweep {len(runs)} (give one value per key)")
    (cfg,) = runs
    output = args.output_dir or os.path.join("trl-out", f"{cfg.label or cfg.estimator}-{cfg.seed}")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))  # set by accelerate launch
    trainer = build_trainer(cfg, output, world_size=world_size)
    trainer.train(resume_from_checkpoint=True if args.resume else None)


if __name__ == "__main__":
    main()
