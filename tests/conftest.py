"""Shared fixtures: a small, fast run config and an isolated cache and tracking store."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# A model and budget small enough for tests (seconds), the same code path as the default.
# CI exports ADVBENCH_REQUIRE_ISOLATION=1 (it runs as root, with bubblewrap and cgroups): there a
# sandbox or reliability test that would skip for want of root or cgroups runs and fails instead,
# so none of them goes unseen.
REQUIRE_ISOLATION = os.environ.get("ADVBENCH_REQUIRE_ISOLATION") == "1"

FAST = [
    "model.hidden_size=64",
    "model.intermediate_size=128",
    "model.warmstart.steps=60",
    "task.train_size=400",
    "task.eval_size=16",
    "trainer.steps=4",
    "trainer.prompts_per_step=4",
    "trainer.group_size=4",
    "eval.every=2",
    "eval.n=4",
    "rollout.max_new_tokens=6",
]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> str:
    """One model/task cache for the whole session, so the warm start is built once."""
    return str(tmp_path_factory.mktemp("advbench-cache"))


@pytest.fixture
def fast_overrides(cache_dir, tmp_path) -> list[str]:
    return [
        *FAST,
        f"cache_dir={cache_dir}",
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        f"tracking.artifact_root={tmp_path}/artifacts",
    ]


@pytest.fixture(autouse=True)
def _no_terminal_width(monkeypatch):
    """A COLUMNS exported by the shell that runs the tests would size advbench's piped tables."""
    monkeypatch.delenv("COLUMNS", raising=False)
