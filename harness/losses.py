"""Policy losses: a registry of surrogate objectives, each with its hyperparameters and metrics.

A loss takes the current log-probs of the sampled tokens, the rollout (behaviour) log-probs,
the advantages broadcast to tokens, and the response mask, all [B, T]; it returns a scalar loss
and a dict of metrics (clip fraction, ratio statistics, rollout/trainer mismatch).

Aggregation (how token losses become one number) is a knob of every loss:
  token_mean            sum over all response tokens / number of response tokens (DAPO, verl default)
  seq_mean_token_mean   mean over sequences of each sequence's token mean (original GRPO)
  seq_sum_const         sum over tokens / (B * max_new_tokens), a constant length (Dr.GRPO, 2503.20783)
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_sum_const")

LossFn = Callable[..., tuple[torch.Tensor, dict[str, float]]]


@dataclass(frozen=True)
class PolicyLoss:
    name: str
    fn: LossFn
    params: type
    description: str


_REGISTRY: dict[str, PolicyLoss] = {}


def register(name: str, *, params: type) -> Callable[[LossFn], LossFn]:
    def decorator(fn: LossFn) -> LossFn:
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = PolicyLoss(name=name, fn=fn, params=params, description=doc[0] if doc else "")
        return fn

    return decorator


def names() -> list[str]:
    """The registered policy losses, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> PolicyLoss:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), names(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise KeyError(f"unknown loss '{name}'{hint}; registered losses: {', '.join(names())}") from None


def resolve(node: Mapping[str, Any]) -> dict[str, Any]:
    """Check a ``loss`` config node ({name, **params}) and fill in the defaults."""
    node = dict(node)
    loss = get(node.pop("name", None))
    known = [f.name for f in dataclasses.fields(loss.params)]
    unknown = sorted(set(node) - set(known))
    if unknown:
        raise ValueError(
            f"loss '{loss.name}' has no hyperparameter {', '.join(map(repr, unknown))}; "
            f"its hyperparameters are: {', '.join(known)}"
        )
    return {"name": loss.name, **dataclasses.asdict(loss.params(**node))}


def aggregate(token_losses: torch.Tensor, mask: torch.Tensor, mode: str, max_len: int) -> torch.Tensor:
    """Reduce [B, T] token losses over the response mask to a scalar, by ``mode``."""
    mask = mask.to(token_losses.dtype)
    masked = token_losses * mask
    if mode == "token_mean":
        return masked.sum() / mask.sum().clamp(min=1.0)
    if mode == "seq_mean_token_mean":
        return (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if mode == "seq_sum_const":
        return masked.sum() / (token_losses.shape[0] * max_len)
    raise ValueError(f"unknown aggregation '{mode}'; choices: {', '.join(AGGREGATIONS)}")


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


@dataclass
class PPOClipParams:
    clip_low: float = 0.2  # ratio floor 1 - clip_low (PPO, arXiv 1707.06347)
    clip_high: float = 0.2  # ratio ceiling 1 + clip_high; > clip_low is DAPO's clip-higher (2503.14476)
    aggregation: str = "token_mean"

    def __post_init__(self) -> None:
        if not 0 < self.clip_low < 1:
            raise ValueError(f"ppo_clip: clip_low must be in (0, 1), got {self.clip_low}")
        if not self.clip_high > 0:
            raise ValueError(f"ppo_clip: clip_high must be > 0, got {self.clip_high}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(
                f"ppo_clip: aggregation must be one of {', '.join(AGGREGATIONS)}, got '{self.aggregation}'"
            )


@register("ppo_clip", params=PPOClipParams)
def ppo_clip(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    params: PPOClipParams,
    max_len: int,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clipped surrogate: max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high)), r = pi / pi_rollout."""
    log_ratio = logprobs - old_logprobs
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - params.clip_low, 1.0 + params.clip_high)
    token_losses = torch.maximum(unclipped, clipped)
    loss = aggregate(token_losses, mask, params.aggregation, max_len)
    with torch.no_grad():
        real = mask.bool()
        metrics = {
            "clip_fraction": masked_mean((clipped > unclipped).float(), mask).item(),
            "ratio_mean": masked_mean(ratio, mask).item(),
            "ratio_max": ratio[real].max().item() if real.any() else 1.0,
            # k3 estimator of KL(rollout || current), Schulman 2020: E[(r - 1) - log r]
            "kl_k3": masked_mean(ratio - 1.0 - log_ratio, mask).item(),
        }
    return loss, metrics
