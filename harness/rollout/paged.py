"""paged: transformers' continuous batching (generate_batch, a paged KV cache)."""

from __future__ import annotations

import copy
import inspect

import torch

from advbench.harness.config import RolloutConfig
from advbench.harness.models import DTYPES, Policy
from advbench.harness.rollout.base import (
    EngineUnavailable,
    Rollout,
    SamplingParams,
    assemble,
    engine,
    prompt_token_lists,
    sample_seeds,
)

CPU_PAGE_TOKENS = 32  # the paged engine's KV page on the CPU (on a GPU: transformers' default)


@engine("paged")
class PagedEngine:
    """transformers' continuous batching (``model.generate_batch``).

    It decodes on the policy module itself, except under ``model.autocast``: autocast is
    thread-local and continuous batching decodes in a thread of its own, where it would compute in
    the master weights' dtype; so it gets a copy of the model in the compute dtype, which ``sync``
    refreshes after every optimizer step (as vLLM's copy is). Sampling is seeded from torch's RNG
    at each call. Its log-probs are those of the processed (tempered) distribution it sampled
    from; for greedy decoding it reports no usable ones, so those are scored by the policy.
    """

    name = "paged"

    @classmethod
    def from_config(cls, cfg: RolloutConfig, policy: Policy, precision: str) -> PagedEngine:
        return cls(policy, precision=precision)

    def __init__(self, policy: Policy, precision: str | None = None) -> None:
        import transformers

        if not hasattr(policy.model, "generate_batch"):
            raise EngineUnavailable(
                "config key 'rollout.engine': paged needs transformers' continuous batching "
                f"(generate_batch, transformers 5), and transformers {transformers.__version__} has none"
            )
        self.policy = policy
        self.model = policy.model
        precision = policy.autocast if precision is None else precision
        if precision != "none":
            self.model = copy.deepcopy(policy.model).requires_grad_(False).to(DTYPES[precision])

    @torch.no_grad()
    def generate(self, prompts: list[str], n: int, sampling: SamplingParams) -> Rollout:
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        tokenizer, model = self.policy.tokenizer, self.model
        prompt_ids, expected = prompt_token_lists(tokenizer, prompts, n)
        generation = GenerationConfig(
            max_new_tokens=sampling.max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            num_return_sequences=n,
            **sampling.transformers_args(),
        )
        sizing = {}
        if self.policy.device.type == "cpu":
            # Sized from "free memory" the CPU cache takes ~10 GiB and seconds to set up; this
            # workload needs at most one run of pages per request.
            pages = -(-(max(map(len, prompt_ids)) + sampling.max_new_tokens) // CPU_PAGE_TOKENS)
            # transformers 5.17 named a page's size `block_size` (and deprecates it after).
            page = (
                "page_size"
                if "page_size" in inspect.signature(ContinuousBatchingConfig).parameters
                else "block_size"
            )
            sizing = {page: CPU_PAGE_TOKENS, "num_blocks": len(prompt_ids) * n * pages}
        batching = ContinuousBatchingConfig(
            return_logprobs=not sampling.greedy, seed=sample_seeds(1)[0], **sizing
        )
        was_training = model.training
        model.eval()
        results = model.generate_batch(
            prompt_ids, generation_config=generation, continuous_batching_config=batching
        )
        model.train(was_training)
        outputs = list(results.values())  # in input order, each prompt's n samples together
        if len(outputs) != len(expected) or any(o.error for o in outputs):
            errors = sorted({o.error for o in outputs if o.error})
            raise RuntimeError(
                f"paged engine: {len(outputs)} of {len(expected)} completions came back; errors: {errors}"
            )
        for output, ids in zip(outputs, expected, strict=True):
            if list(output.prompt_ids) != ids:
                raise RuntimeError("paged engine: completions came back out of prompt order")
        logprobs = None if sampling.greedy else [list(o.logprobs) for o in outputs]
        return assemble(
            self.policy, expected, [list(o.generated_tokens) for o in outputs], logprobs, sampling
        )

    def sync(self, policy: Policy) -> None:
        """Its own copy (under autocast) takes the trainer's weights; otherwise nothing to copy."""
        self.policy = policy
        if self.model is not policy.model:
            self.model.load_state_dict(policy.model.state_dict())  # cast to the copy's dtype


# -- vllm ---------------------------------------------------------------------------------------
