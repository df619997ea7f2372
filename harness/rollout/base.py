"""What every rollout engine shares: sampling parameters, the Rollout it returns, the trainer's
log-prob recomputation, assembling a Rollout from token lists, the sampling precision, and the
registry of engines."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from advbench.estimators.registry import Registry
from advbench.harness.config import ConfigError, RolloutConfig
from advbench.harness.models import Policy


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 16
    greedy: bool = False

    def transformers_args(self) -> dict:
        """These settings as transformers generation arguments (top_k off: sampling is top-p only)."""
        if self.greedy:
            return {"do_sample": False}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": 0}

    @property
    def logprob_temperature(self) -> float:
        """The temperature of the recorded log-probs: greedy ones are of the untempered distribution."""
        return 1.0 if self.greedy else self.temperature


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


class Engine(Protocol):
    name: str
    policy: Policy  # the policy it samples from (its weights after the last sync)

    def generate(self, prompts: list[str], n: int, sampling: SamplingParams) -> Rollout: ...

    def sync(self, policy: Policy) -> None: ...


class EngineUnavailable(ConfigError):
    """The configured engine cannot run here (no CUDA, or its optional package is not installed)."""


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


def token_logprobs(
    model: torch.nn.Module, batch: Rollout, rows: torch.Tensor, temperature: float, trim: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``model``'s log-prob and entropy of the sampled response tokens of ``rows``, [rows, T].

    ``trim`` drops the columns that are padding for every one of these rows (left of the longest
    prompt, right of the longest response) before the forward, and pads the result back with zeros:
    the same numbers up to float rounding, on fewer tokens.
    """
    prompt_ids, prompt_mask = batch.prompt_ids[rows], batch.prompt_mask[rows]
    response_ids, response_mask = batch.response_ids[rows], batch.response_mask[rows]
    width = response_ids.shape[1]
    if trim:
        first = int(prompt_mask.any(0).long().argmax())
        last = max(1, int(response_mask.sum(-1).max()))
        prompt_ids, prompt_mask = prompt_ids[:, first:], prompt_mask[:, first:]
        response_ids, response_mask = response_ids[:, :last], response_mask[:, :last]
    attention = torch.cat([prompt_mask, response_mask.long()], dim=1)
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)  # as generate numbers left-padded rows
    logits = model(
        input_ids=torch.cat([prompt_ids, response_ids], dim=1),
        attention_mask=attention,
        position_ids=position_ids,
    ).logits
    response_logits = logits[:, prompt_ids.shape[1] - 1 : -1]  # position t predicts response token t
    logprobs, entropy = logprobs_and_entropy(response_logits, response_ids, temperature)
    if logprobs.shape[1] < width:
        pad = (0, width - logprobs.shape[1])
        logprobs, entropy = torch.nn.functional.pad(logprobs, pad), torch.nn.functional.pad(entropy, pad)
    return logprobs, entropy


# Logit elements (tokens x vocabulary) per forward when a rollout is scored by the policy: 4 GiB of
# float32 logits, so a 152k vocabulary scores ~7k tokens at a time and the tiny model everything.
SCORE_LOGITS = 1 << 30


def assemble(
    policy: Policy,
    prompt_ids: list[list[int]],
    responses: list[list[int]],
    logprobs: list[list[float]] | None,
    sampling: SamplingParams,
) -> Rollout:
    """A Rollout from token lists (row i*n+j: sample j of prompt i, ``prompt_ids`` already repeated).

    The entropy (and the log-probs when the engine gave none) come from no-grad forwards of the
    policy on the sampled tokens, as many rows at a time as keep the logits within ``SCORE_LOGITS``.
    """
    tokenizer, device = policy.tokenizer, policy.device
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    rows, prompt_width = len(responses), max(map(len, prompt_ids))
    width = max(1, *map(len, responses))
    prompt = torch.full((rows, prompt_width), pad, dtype=torch.long)
    prompt_mask = torch.zeros((rows, prompt_width), dtype=torch.long)
    response = torch.full((rows, width), pad, dtype=torch.long)
    recorded = torch.zeros((rows, width))
    for i, (p, r) in enumerate(zip(prompt_ids, responses, strict=True)):
        prompt[i, prompt_width - len(p) :], prompt_mask[i, prompt_width - len(p) :] = torch.tensor(p), 1
        response[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        if logprobs is not None:
            recorded[i, : len(r)] = torch.tensor(logprobs[i][: len(r)])
    lengths = torch.tensor([len(r) for r in responses])
    mask = response_mask_until_eos(response, eos) & (torch.arange(width) < lengths.unsqueeze(1))
    batch = Rollout(
        prompt_ids=prompt.to(device),
        prompt_mask=prompt_mask.to(device),
        response_ids=response.to(device),
        response_mask=mask.to(device),
        logprobs=recorded.to(device),
        entropy=torch.zeros((rows, width), device=device),
        texts=decode(tokenizer, response, mask),
        truncated=~((response == eos) & mask).any(-1).to(device),
    )
    scored_logprobs, entropy = [], []
    chunk = max(1, SCORE_LOGITS // ((prompt_width + width) * policy.model.config.vocab_size))
    was_training = policy.model.training
    policy.model.eval()
    with torch.no_grad(), policy.compute():
        for part in torch.arange(rows, device=device).split(chunk):
            lp, ent = token_logprobs(policy.model, batch, part, sampling.logprob_temperature, trim=True)
            scored_logprobs.append(lp)
            entropy.append(ent)
    policy.model.train(was_training)
    batch.entropy = torch.cat(entropy).masked_fill(~batch.response_mask, 0.0)
    if logprobs is None:
        batch.logprobs = torch.cat(scored_logprobs)
    batch.logprobs = batch.logprobs.masked_fill(~batch.response_mask, 0.0)
    return batch


def decode(tokenizer, response_ids: torch.Tensor, mask: torch.Tensor) -> list[str]:
    """The responses' texts: the masked tokens without EOS."""
    eos = tokenizer.eos_token_id
    text_ids = [row[m & (row != eos)] for row, m in zip(response_ids, mask, strict=True)]
    return tokenizer.batch_decode(text_ids, skip_special_tokens=True)


def prompt_token_lists(tokenizer, prompts: list[str], n: int) -> tuple[list[list[int]], list[list[int]]]:
    """Each prompt's token ids, and the same list with each prompt repeated n times (row i*n+j)."""
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    return prompt_ids, [ids for ids in prompt_ids for _ in range(n)]


def sample_seeds(count: int) -> list[int]:
    """Per-request seeds drawn from torch's RNG, so a seeded step samples the same with any engine."""
    return torch.randint(0, 2**31 - 1, (count,)).tolist()


# -- hf -----------------------------------------------------------------------------------------


def sampling_precision(cfg: RolloutConfig, policy: Policy) -> str:
    """The autocast dtype the engine samples in, from ``rollout.autocast`` ("none": the weights')."""
    if cfg.autocast == "model":
        return policy.autocast
    if cfg.autocast == "float32":
        if policy.model.dtype != torch.float32:
            raise ConfigError(
                "config key 'rollout.autocast': float32 sampling needs float32 weights, and "
                f"model.dtype is {str(policy.model.dtype).removeprefix('torch.')}"
            )
        return "none"
    return cfg.autocast


ENGINES = Registry("rollout engine", "rollout engines")  # rollout.engine -> its Engine class


def engine(name: str):
    """Register an Engine class as ``rollout.engine=name``; it builds itself with
    ``from_config(cfg, policy, precision)``."""

    def decorator(cls: type) -> type:
        ENGINES.add(name, cls)
        return cls

    return decorator


def build(cfg: RolloutConfig, policy: Policy) -> Engine:
    """The configured engine around ``policy``; EngineUnavailable when it cannot run here."""
    return ENGINES.entry(cfg.engine).from_config(cfg, policy, sampling_precision(cfg, policy))
