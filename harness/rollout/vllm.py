"""vllm: vLLM colocated in this process (CUDA only; unverified on this project's machines)."""

from __future__ import annotations

import os

from advbench.harness.config import RolloutConfig
from advbench.harness.models import Policy
from advbench.harness.rollout.base import (
    EngineUnavailable,
    Rollout,
    SamplingParams,
    assemble,
    engine,
    prompt_token_lists,
    sample_seeds,
)


@engine("vllm")
class VLLMEngine:
    """vLLM colocated with the trainer on one GPU (optional extra; unverified here, see docs/guides/gpu.md).

    The engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so ``sync`` hands the
    trainer's tensors to the model's ``load_weights`` through ``LLM.apply_model`` without copying
    them across processes. Each completion is its own request with its own seed, drawn from
    torch's RNG: a seeded step asks vLLM for the same samples whatever the batch around it.
    """

    name = "vllm"

    @classmethod
    def from_config(cls, cfg: RolloutConfig, policy: Policy, precision: str) -> VLLMEngine:
        return cls(policy, gpu_memory_utilization=cfg.gpu_memory_utilization, precision=precision)

    def __init__(
        self, policy: Policy, gpu_memory_utilization: float = 0.3, precision: str | None = None
    ) -> None:
        if policy.device.type != "cuda":
            raise EngineUnavailable(
                f"config key 'rollout.engine': vllm needs CUDA; the policy is on {policy.device.type}"
            )
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        # apply_model ships a Python function to the worker; vLLM refuses that unless told the
        # caller is trusted (here: this process, which the worker is part of).
        os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        try:
            import vllm
        except ImportError as exc:
            raise EngineUnavailable(
                "config key 'rollout.engine': vllm is not installed; on a CUDA machine: "
                "pip install 'advbench[vllm]' (or use rollout.engine=paged or hf)"
            ) from exc
        self.vllm = vllm
        self.policy = policy
        precision = policy.autocast if precision is None else precision
        self.llm = vllm.LLM(
            model=str(policy.path),
            tokenizer=str(policy.path),
            dtype=precision if precision != "none" else str(policy.model.dtype).removeprefix("torch."),
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=policy.model.config.max_position_embeddings,
            logprobs_mode="processed_logprobs",
            enable_prefix_caching=True,  # the n requests of a prompt share its KV blocks
        )
        self.sync(policy)  # the trainer's weights, which may have moved on from the saved ones

    def generate(self, prompts: list[str], n: int, sampling: SamplingParams) -> Rollout:
        tokenizer = self.policy.tokenizer
        _, expected = prompt_token_lists(tokenizer, prompts, n)
        params = [
            self.vllm.SamplingParams(
                n=1,
                temperature=0.0 if sampling.greedy else sampling.temperature,
                top_p=1.0 if sampling.greedy else sampling.top_p,
                max_tokens=sampling.max_new_tokens,
                logprobs=None if sampling.greedy else 0,  # 0: the sampled token's own log-prob
                seed=seed,
            )
            for seed in sample_seeds(len(expected))
        ]
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in expected], params, use_tqdm=False)
        completions = [output.outputs[0] for output in outputs]
        responses = [list(c.token_ids) for c in completions]
        logprobs = None
        if not sampling.greedy:
            logprobs = [
                [position[token].logprob for token, position in zip(c.token_ids, c.logprobs, strict=True)]
                for c in completions
            ]
        return assemble(self.policy, expected, responses, logprobs, sampling)

    def sync(self, policy: Policy) -> None:
        """Load the trainer's current weights into vLLM's copy of the model."""
        self.policy = policy
        weights = policy.model.state_dict()
        self.llm.apply_model(lambda model: model.load_weights(weights=weights.items()))
