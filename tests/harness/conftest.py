"""Fixtures shared by the harness tests."""

from __future__ import annotations

import pytest
import torch

from advbench.harness import rollout, tasks, warmstart
from advbench.harness.config import load
from advbench.harness.rollout import SamplingParams


@pytest.fixture(scope="module")
def setup(cache_dir):
    """The default config, its task and warm-started tiny policy, 8 training prompts and a rollout
    of 4 samples each (8 new tokens at most), drawn with seed 0."""
    (cfg,) = load([f"cache_dir={cache_dir}", "model.warmstart.steps=60", "task.train_size=400"])
    task = tasks.build(cfg.task, cfg.cache_dir)
    policy = warmstart.load_policy(cfg.model, task, cfg.cache_dir)
    prompts = [p.text for p in task.prompts("train")[:8]]
    torch.manual_seed(0)
    batch = rollout.HFEngine(policy).generate(prompts, 4, SamplingParams(max_new_tokens=8))
    return cfg, task, policy, prompts, batch
