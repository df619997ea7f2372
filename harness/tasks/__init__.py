"""Tasks: named sources of prompts with a verifier.

A task gives ``prompts(split, n, seed)`` and ``score(prompt, completion) -> float``; a completion
is correct (for pass@k) when its score is exactly 1.0, whatever partial credit the verifier gives.

reasoning-gym tasks generate their items from ``task.data_seed``: the eval split is generated
first and any training item whose prompt text also appears in it is dropped, so eval prompts
never overlap training prompts. Generated splits are cached on disk (countdown costs ~13 ms an item).
"""

from advbench.estimators.registry import import_folder
from advbench.harness.tasks.base import (
    CORRECT,
    SOURCES,
    Prompt,
    Score,
    Task,
    build,
    read_jsonl,
    resolve_data_path,
    seeded_split,
    source,
)

import_folder(__name__, __path__)  # importing a module registers what it holds

from advbench.harness.tasks.code import CodeTask, livecodebench_tests  # noqa: E402
from advbench.harness.tasks.jsonl import JsonlTask, reference_answer  # noqa: E402
from advbench.harness.tasks.reasoning_gym import ReasoningGymTask  # noqa: E402

__all__ = [
    "CORRECT",
    "SOURCES",
    "CodeTask",
    "JsonlTask",
    "Prompt",
    "ReasoningGymTask",
    "Score",
    "Task",
    "build",
    "livecodebench_tests",
    "read_jsonl",
    "reference_answer",
    "resolve_data_path",
    "seeded_split",
    "source",
]
