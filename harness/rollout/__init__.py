"""Rollout engines: ``generate(prompts, n, sampling) -> Rollout`` and ``sync(policy)``.

Three engines sit behind this one interface (``rollout.engine``):

  hf     transformers ``generate`` on the policy module itself (CPU and GPU). ``rollout.cache=static``
         pre-allocates the KV cache, and ``rollout.compile=true`` (CUDA only) lets transformers
         compile the decode step over it.
  paged  transformers' continuous batching (``generate_batch``: a paged KV cache, requests
         scheduled token by token, finished ones replaced at once). Meant for the GPU; it runs on
         the CPU too, several times slower than hf there (docs/results/performance.md).
  vllm   vLLM (optional extra ``advbench[vllm]``, CUDA only), colocated in this process; the
         trainer's weights are loaded into it after every optimizer step. It cannot be installed
         on the machines this project is built on: written against vLLM's documented API and
         unverified here (docs/guides/gpu.md).

The log-prob recorded for each sampled token is log softmax(logits / temperature) over the full
vocabulary, the quantity the trainer recomputes, so the PPO ratio compares like with like. ``hf``
records it from the logits it samples with, step by step; ``paged`` and ``vllm`` report their own (vLLM with
``logprobs_mode=processed_logprobs``), so the rollout/trainer mismatch metrics measure the engine.
With top_p < 1 hf records the untruncated tempered log-prob (as verl and TRL do), paged and vllm
the truncated one. Every engine samples in the precision ``rollout.autocast`` names (default: the
trainer's own, ``model.autocast``); ``bfloat16`` over float32 weights makes a real rollout/trainer
mismatch, and the recorded log-probs are those of the precision sampled in (hf records them from
the bf16-computed logits it samples with). The token entropy of a ``paged`` or ``vllm`` rollout
(which neither engine returns) comes from one no-grad forward of the policy on the sampled tokens:
the trainer's entropy at the sampling weights.
"""

from advbench.estimators.registry import import_folder
from advbench.harness.rollout.base import (
    ENGINES,
    Engine,
    EngineUnavailable,
    Rollout,
    SamplingParams,
    assemble,
    build,
    engine,
    logprobs_and_entropy,
    response_mask_until_eos,
    sampling_precision,
    token_logprobs,
)

import_folder(__name__, __path__)  # importing a module registers its engine

from advbench.harness.rollout.hf import HFEngine, _StepRecorder  # noqa: E402
from advbench.harness.rollout.paged import PagedEngine  # noqa: E402
from advbench.harness.rollout.vllm import VLLMEngine  # noqa: E402

__all__ = [
    "ENGINES",
    "Engine",
    "EngineUnavailable",
    "HFEngine",
    "PagedEngine",
    "Rollout",
    "SamplingParams",
    "VLLMEngine",
    "_StepRecorder",
    "assemble",
    "build",
    "engine",
    "logprobs_and_entropy",
    "response_mask_until_eos",
    "sampling_precision",
    "token_logprobs",
]
