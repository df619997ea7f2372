"""hf: transformers' generate on the policy module itself (CPU and GPU), recording each sampled
token's log-prob from the logits it samples with."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

from advbench.harness.config import RolloutConfig
from advbench.harness.models import Policy, autocast
from advbench.harness.rollout.base import (
    EngineUnavailable,
    Rollout,
    SamplingParams,
    decode,
    engine,
    response_mask_until_eos,
)


class _StepRecorder:
    """A logits processor that records, at each decoding step, the log-prob of the token sampled
    and the entropy under softmax(raw logits / temperature), and passes the logits on unchanged.

    It keeps one step's [B, V] log-probs until the next step shows which token was sampled, so a
    rollout costs O(B x V) memory beyond the cache, where keeping every step's logits
    (``output_logits``) costs B x T x V floats: for Qwen2.5's 152k vocabulary, 512 completions of
    512 tokens, 159 GB.
    """

    def __init__(self, temperature: float) -> None:
        self.temperature = temperature
        self.pending: torch.Tensor | None = None
        self.logprobs: list[torch.Tensor] = []
        self.entropy: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.pending is not None:  # input_ids now ends with the token sampled at the last step
            self._settle(input_ids[:, -1])
        logp = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        self.entropy.append(-(logp.exp() * logp).sum(-1))
        self.pending = logp
        return scores

    def _settle(self, tokens: torch.Tensor) -> None:
        self.logprobs.append(self.pending.gather(-1, tokens.unsqueeze(-1)).squeeze(-1))
        self.pending = None

    def finish(self, response_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, T] log-probs and entropies of the generated ``response_ids``."""
        self._settle(response_ids[:, len(self.logprobs)])
        return torch.stack(self.logprobs, dim=1), torch.stack(self.entropy, dim=1)


class _GumbelMax:
    """A logits processor that adds Gumbel noise to each block of rows from that block's own
    generator, after the warpers: the argmax generate then takes (greedy decoding) is a sample of
    softmax(warped logits), and block r's draws at decoding step t depend only on generator r and
    the block's size, never on the other blocks' rows (a pack's replicas sample independently)."""

    def __init__(self, generators: Sequence[torch.Generator]) -> None:
        self.generators = list(generators)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        blocks = scores.float().view(len(self.generators), -1, scores.shape[-1])
        uniform = torch.stack(
            [
                torch.rand(block.shape, generator=g, device=scores.device)
                for block, g in zip(blocks, self.generators, strict=True)
            ]
        )
        # -log(-log u): clamped so that u = 0 (possible) or u -> 1 stay finite
        gumbel = -torch.log((-torch.log(uniform.clamp_min(1e-30))).clamp_min(1e-30))
        return (blocks + gumbel).view_as(scores)


@engine("hf")
class HFEngine:
    """transformers ``generate`` on the policy module itself (colocated: no weights to copy),
    under autocast to ``precision`` ("none": the weights' dtype)."""

    name = "hf"

    def __init__(
        self,
        policy: Policy,
        cache: str = "dynamic",
        compile: bool = False,
        precision: str | None = None,
        share_prompts: bool = True,
    ) -> None:
        if compile and policy.device.type != "cuda":
            raise EngineUnavailable(
                "config key 'rollout.compile': compiling the decode step needs CUDA "
                f"(transformers compiles generate only on GPU); the policy is on {policy.device.type}"
            )
        self.policy = policy
        self.precision = policy.autocast if precision is None else precision
        self.cache_args: dict = {"disable_compile": not compile}
        # A prompt's n samples share its prefill (_prompt_cache); a static or compiled cache is
        # allocated by generate itself, so those prefill every row as before.
        self.share_prompts = share_prompts and cache == "dynamic" and not compile
        if cache == "static":
            self.cache_args["cache_implementation"] = "static"
        if compile:
            from transformers import CompileConfig

            self.cache_args["compile_config"] = CompileConfig()

    @classmethod
    def from_config(cls, cfg: RolloutConfig, policy: Policy, precision: str) -> HFEngine:
        return cls(policy, cache=cfg.cache, compile=cfg.compile, precision=precision)

    @torch.no_grad()
    def generate(
        self,
        prompts: list[str],
        n: int,
        sampling: SamplingParams,
        generators: Sequence[torch.Generator] | None = None,
    ) -> Rollout:
        """``n`` samples of each prompt. ``generators``: one per equal block of ``prompts`` (a pack's
        replicas, harness/pack.py); each block's samples then draw from its own generator (Gumbel-max)
        instead of torch's global stream, so they do not depend on the other blocks."""
        from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

        tokenizer, model, device = self.policy.tokenizer, self.policy.model, self.policy.device
        encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        prompt_ids = encoded["input_ids"].repeat_interleave(n, dim=0).to(device)
        prompt_mask = encoded["attention_mask"].repeat_interleave(n, dim=0).to(device)
        # The recorder must see the raw logits, so the warpers generate would add first (temperature,
        # top-p) come after it in our own list, in generate's order, and generate is asked for none.
        recorder = _StepRecorder(sampling.logprob_temperature)
        processors = [recorder]
        sample_args = sampling.transformers_args()
        if not sampling.greedy:
            if sampling.temperature != 1.0:
                processors.append(TemperatureLogitsWarper(sampling.temperature))
            if sampling.top_p < 1.0:
                processors.append(TopPLogitsWarper(sampling.top_p))
            if generators is not None:  # the draw itself: argmax over noised logits, block by block
                processors.append(_GumbelMax(generators))
                sample_args = {"do_sample": False}
            else:
                sample_args.update(temperature=1.0, top_p=1.0)
        was_training = model.training
        model.eval()
        with autocast(device, self.precision), warnings.catch_warnings():
            if self.share_prompts and n > 1 and encoded["input_ids"].shape[1] > 1:
                # generate's past_key_values is named cache from transformers 5.2x (the old name
                # warns, not yet removed); the project supports 4.56 on, which knows only the old
                warnings.filterwarnings("ignore", "`past_key_values` is deprecated", FutureWarning)
                sample_args["past_key_values"] = _prompt_cache(model, encoded, n, device)
            sequences = model.generate(
                input_ids=prompt_ids,
                attention_mask=prompt_mask,
                max_new_tokens=sampling.max_new_tokens,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                logits_processor=LogitsProcessorList(processors),
                **self.cache_args,
                **sample_args,
            )
        model.train(was_training)
        response_ids = sequences[:, prompt_ids.shape[1] :]
        logprobs, entropy = recorder.finish(response_ids)
        mask = response_mask_until_eos(response_ids, tokenizer.eos_token_id)
        ended = ((response_ids == tokenizer.eos_token_id) & mask).any(-1)
        return Rollout(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            response_ids=response_ids,
            response_mask=mask,
            logprobs=logprobs.masked_fill(~mask, 0.0),
            entropy=entropy.masked_fill(~mask, 0.0),
            texts=decode(tokenizer, response_ids, mask),
            truncated=~ended,
        )

    def sync(self, policy: Policy) -> None:
        """Nothing to copy: this engine samples from the module being trained."""
        self.policy = policy


def _prompt_cache(model: torch.nn.Module, encoded: dict, n: int, device: torch.device):
    """The KV cache of every prompt but its last token, computed once per prompt and repeated for
    its ``n`` samples: generate then starts from the last prompt token, so a prompt's prefill costs
    one row instead of n (one eval of 256 prompts x 8 samples sampled 2.0x faster on the tiny model,
    docs/results/performance.md). The same tokens are sampled: each row's keys and values are the ones
    its own prefill computes, up to float rounding of the smaller batch.

    Positions are counted from each row's first real token (prompts are left-padded), as generate
    counts them."""
    ids = encoded["input_ids"][:, :-1].to(device)
    mask = encoded["attention_mask"][:, :-1].to(device)
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
    cache = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True).past_key_values
    cache.batch_repeat_interleave(n)
    return cache


# -- paged (transformers continuous batching) ---------------------------------------------------
