"""Rollout engines: ``generate(prompts, n, sampling) -> Rollout`` and ``sync(policy)``.

``hf`` samples with transformers' ``generate``. The log-prob recorded for each sampled token is
log softmax(logits / temperature) of the full vocabulary, the same quantity the trainer
recomputes, so the PPO ratio compares like with like. (With top_p < 1 the sampling distribution is
the truncated one; the recorded log-prob is still of the untruncated tempered distribution, as in
verl and TRL.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.models import Policy


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 16
    greedy: bool = False


@dataclass
class Rollout:
    """B = len(prompts) * n completions; completion j of prompt i is row i * n + j."""

    prompt_ids: torch.Tensor  # [B, Lp] left-padded
    prompt_mask: torch.Tensor  # [B, Lp] 1 on prompt tokens
    response_ids: torch.Tensor  # [B, T] sampled tokens, padded after EOS
    response_mask: torch.Tensor  # [B, T] bool: the response's tokens, EOS included
    logprobs: torch.Tensor  # [B, T] rollout log-probs of the sampled tokens (0 off the mask)
    entropy: torch.Tensor  # [B, T] entropy of the rollout distribution at each position
    texts: list[str]  # decoded responses, without EOS
    truncated: torch.Tensor  # [B] bool: hit max_new_tokens before EOS

    @property
    def lengths(self) -> torch.Tensor:
        return self.response_mask.sum(-1)


def response_mask_until_eos(response_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """True up to and including the first EOS of each row (all True for a row without EOS)."""
    is_eos = response_ids == eos_token_id
    eos_before = is_eos.cumsum(-1) - is_eos.long()  # EOS tokens strictly before each position
    return eos_before == 0


def logprobs_and_entropy(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of ``tokens`` and entropy under softmax(logits / temperature); [B, T, V] -> [B, T]."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    token_logp = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return token_logp, entropy


class HFEngine:
    """transformers ``generate`` on the policy module itself (colocated: no weights to copy)."""

    name = "hf"

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    @torch.no_grad()
    def generate(self, prompts: list[str], n: int, sampling: SamplingParams) -> Rollout:
        tokenizer, model, device = self.policy.tokenizer, self.policy.model, self.policy.device
        encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        prompt_ids = encoded["input_ids"].repeat_interleave(n, dim=0).to(device)
        prompt_mask = encoded["attention_mask"].repeat_interleave(n, dim=0).to(device)
        sample_args = (
            {"do_sample": False}
            if sampling.greedy
            else {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0}
        )
        was_training = model.training
        model.eval()
        out = model.generate(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            max_new_tokens=sampling.max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            return_dict_in_generate=True,
            output_logits=True,
            **sample_args,
        )
        model.train(was_training)
        response_ids = out.sequences[:, prompt_ids.shape[1] :]
        logits = torch.stack(out.logits, dim=1)  # [B, T, V], raw (before temperature and top-p)
        temperature = 1.0 if sampling.greedy else sampling.temperature
        logprobs, entropy = logprobs_and_entropy(logits, response_ids, temperature)
        mask = response_mask_until_eos(response_ids, tokenizer.eos_token_id)
        ended = ((response_ids == tokenizer.eos_token_id) & mask).any(-1)
        text_ids = [
            row[m & (row != tokenizer.eos_token_id)] for row, m in zip(response_ids, mask, strict=True)
        ]
        return Rollout(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            response_ids=response_ids,
            response_mask=mask,
            logprobs=logprobs.masked_fill(~mask, 0.0),
            entropy=entropy.masked_fill(~mask, 0.0),
            texts=tokenizer.batch_decode(text_ids, skip_special_tokens=True),
            truncated=~ended,
        )

    def sync(self, policy: Policy) -> None:
        """Nothing to copy: this engine samples from the module being trained."""
        self.policy = policy


ENGINES = {"hf": HFEngine}


def build(name: str, policy: Policy) -> HFEngine:
    return ENGINES[name](policy)
