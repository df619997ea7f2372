"""verl's custom reward function for data made by examples/verl/make_data.py: the advbench task's
own verifier (``Task.score``), so that a verl run is rewarded exactly as `advbench run` is.

    custom_reward_function.path=examples/verl/reward.py custom_reward_function.name=compute_score
"""

from __future__ import annotations

import functools
import json

from advbench.harness import tasks
from advbench.harness.config import load
from advbench.harness.tasks import Prompt


@functools.cache
def _task(name: str):
    (cfg,) = load([f"task={name}"])
    return tasks.build(cfg.task, cfg.cache_dir)


def compute_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None
) -> dict:
    """verl's signature; returns the reward as "score" and advbench's correctness as "acc" (which
    verl's validation reports as val-core/<data_source>/acc/mean@N)."""
    task = _task(data_source.removeprefix("advbench/"))
    entry = json.loads((extra_info or {}).get("entry", "{}"))
    score = task.score(Prompt(text="", answer=ground_truth, entry=entry), solution_str)
    return {"score": score.reward, "acc": float(score.correct)}
