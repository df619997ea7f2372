"""benchmarks/budget.py's study plans: the shipped suites as they are, with only the budget (and the
task or seeds when asked) replaced, and its tables. Its runs are the study's business
(docs/results/statistics.md)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

from advbench.harness.config import ConfigError

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def budget():
    sys.path.insert(0, str(BENCHMARKS))  # budget.py imports its sibling calibration.py
    try:
        spec = importlib.util.spec_from_file_location("budget_study", BENCHMARKS / "budget.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


def args(**given):
    base = {"suites": None, "seeds": None, "tasks": None, "steps": 250, "lr": 3e-4, "schedule": "constant"}
    return argparse.Namespace(**(base | given))


def test_a_suite_study_keeps_the_suite_and_replaces_only_the_budget(budget):
    trainer = {"steps": 250, "lr": 3e-4, "lr_schedule": "constant", "checkpoint_every": 0}
    (trust, smoke) = budget.suite_studies(args(suites=["trust-region", "smoke"]), trainer)
    name, description, matrix, overrides, reference = trust
    assert (name, reference) == ("budget-trust-region", "grpo+ppo_clip")
    assert matrix["seed"] == [0, 1, 2] and "task" not in matrix  # the suite's own
    assert overrides["rollout"] == {"autocast": "bfloat16"}  # the mismatch it studies stays
    assert overrides["trainer"] == {"update_epochs": 4, **trainer} and "tracking" not in overrides
    assert "4 estimators x 3 seeds" in description and "250 steps, lr 0.0003" in description
    name, _, matrix, overrides, reference = smoke
    assert overrides["trainer"]["steps"] == 250  # the suite's own 60 replaced
    assert matrix["task"] == ["arithmetic"] and reference == "grpo"


def test_seeds_and_tasks_replace_the_suites_own_when_given(budget):
    (study,) = budget.suite_studies(args(suites=["difficulty"], seeds=2, tasks=["arithmetic"]), {"steps": 9})
    assert study[2]["seed"] == [0, 1] and study[2]["task"] == ["arithmetic"]  # countdown in the file
    with pytest.raises(ConfigError, match="no suite file 'nope'.*suites: .*sign-axis"):
        budget.suite_studies(args(suites=["nope"]), {})


def test_the_table_gives_each_outcome_share_per_budget(budget):
    rows = budget.table({150: ["peak", "rising", "rising", "none"], 200: ["peak"] * 4})
    assert rows[2:] == ["| 150 | 25% | 50% | 25% |", "| 200 | 100% | 0% | 0% |"]
