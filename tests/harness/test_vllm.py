"""The vllm engine against the trainer, on a GPU with vLLM installed (``pip install 'advbench[vllm]'``).

Every test here skips where vllm or CUDA is absent, which is every machine this project is built
and tested on: the engine is written against vLLM's documented API (LLM, SamplingParams with
per-request seeds and ``logprobs=0``, ``logprobs_mode``, ``LLM.apply_model``) and is unverified
until these tests run on a GPU machine with vLLM.
"""

from __future__ import annotations

import pytest
import torch

vllm = pytest.importorskip("vllm", reason="vllm is an optional extra: pip install 'advbench[vllm]'")
if not torch.cuda.is_available():
    pytest.skip("vllm needs CUDA", allow_module_level=True)

from advbench.harness import rollout, tasks, warmstart  # noqa: E402
from advbench.harness.config import load  # noqa: E402
from advbench.harness.rollout import SamplingParams  # noqa: E402


@pytest.fixture(scope="module")
def policy(cache_dir):
    (cfg,) = load([f"cache_dir={cache_dir}", "model.device=cuda", "model.warmstart.steps=60"])
    task = tasks.build(cfg.task, cfg.cache_dir)
    return warmstart.load_policy(cfg.model, task, cfg.cache_dir), task


def test_vllm_samples_with_logprobs_matching_the_trainer_and_follows_sync(policy):
    policy, task = policy
    engine = rollout.VLLMEngine(policy, gpu_memory_utilization=0.2)
    prompts = [p.text for p in task.prompts("train")[:8]]
    sampling = SamplingParams(temperature=0.9, max_new_tokens=8)
    torch.manual_seed(0)
    first = engine.generate(prompts, 4, sampling)
    torch.manual_seed(0)
    assert engine.generate(prompts, 4, sampling).texts == first.texts  # per-request seeds from torch
    rows = torch.arange(first.response_ids.shape[0], device=policy.device)
    with torch.no_grad():
        trainer, _ = rollout.token_logprobs(policy.model, first, rows, 0.9)
    mask = first.response_mask
    assert (first.logprobs[mask] - trainer[mask]).abs().max() < 1e-2
    # move the trainer's weights; after sync vLLM samples from the new ones
    with torch.no_grad():
        for p in policy.model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    engine.sync(policy)
    moved = engine.generate(prompts, 4, sampling)
    with torch.no_grad():
        trainer, _ = rollout.token_logprobs(policy.model, moved, rows, 0.9)
    assert (moved.logprobs[moved.response_mask] - trainer[moved.response_mask]).abs().max() < 1e-2
