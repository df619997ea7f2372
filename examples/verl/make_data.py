"""An advbench task's prompts as verl's parquet data (train.parquet, eval.parquet), scored by
examples/verl/reward.py with the task's own verifier.

    python examples/verl/make_data.py task=countdown --out data/countdown

Arguments are advbench config overrides (the task and its sizes); each row holds what verl reads
(data_source, prompt as chat messages, reward_model.ground_truth) and, in extra_info, the
verifier's item, so that reward.py scores exactly as `advbench run` does.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from advbench.harness import tasks
from advbench.harness.config import load


def rows(task, split: str) -> list[dict]:
    return [
        {
            "data_source": f"advbench/{task.name}",
            "prompt": [{"role": "user", "content": prompt.text}],
            "ability": task.name,
            "reward_model": {"style": "rule", "ground_truth": prompt.answer},
            "extra_info": {"index": i, "split": split, "entry": json.dumps(prompt.entry, default=str)},
        }
        for i, prompt in enumerate(task.prompts(split))
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", help="advbench config overrides, key=value (task=...)")
    parser.add_argument("--out", required=True, help="folder for train.parquet and eval.parquet")
    args = parser.parse_args()
    (cfg,) = load(args.overrides)
    task = tasks.build(cfg.task, cfg.cache_dir)
    import pandas as pd

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "eval"):
        pd.DataFrame(rows(task, split)).to_parquet(out / f"{split}.parquet")
        print(f"wrote {out / f'{split}.parquet'}")


if __name__ == "__main__":
    main()
