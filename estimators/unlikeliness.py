"""Unlikeliness reward (He, Fried, Welleck, "Rewarding the Unlikely", EMNLP 2025, Sec. 4, Eq. 3).

GRPO sharpens toward the completions the policy already finds likely. The unlikeliness reward
lowers the reward of a correct completion the more likely it is within its group:

    r'_i = r_i (1 - beta * q_i),   q_i = (number of valid samples of the group that are less likely
                                          than i) / G, by sequence log-prob under the rollout policy

then A_i = GRPO(r'). Correct completions that the policy found unlikely keep their full reward and
so get the larger advantage. Needs the rollout log-probs (token level).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from estimators.grpo import group_normalised
from estimators.registry import AdvantageBatch, TrainingSignals, register


@dataclass
class UnlikelinessParams:
    beta: float = 0.25
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if not 0 <= self.beta <= 1:
            raise ValueError(f"unlikeliness: beta must be in [0, 1], got {self.beta}")


@register(
    "unlikeliness", params=UnlikelinessParams, source="He, Fried, Welleck, EMNLP 2025 (arXiv 2506.02355)"
)
def unlikeliness(
    batch: AdvantageBatch, signals: TrainingSignals | None, params: UnlikelinessParams
) -> torch.Tensor:
    """GRPO on rewards lowered by beta times the fraction of the group less likely than the sample."""
    if batch.logprobs is None:
        raise ValueError("unlikeliness needs the rollout log-probs (AdvantageBatch.logprobs)")
    mask = batch.response_mask if batch.response_mask is not None else torch.ones_like(batch.logprobs)
    seq_logprob = (batch.logprobs * mask).sum(-1)
    pairwise_less = (seq_logprob.unsqueeze(1) < seq_logprob.unsqueeze(2)) & batch.valid.unsqueeze(1)
    fraction_less_likely = pairwise_less.sum(-1).float() / batch.group_size
    shaped = batch.rewards * (1.0 - params.beta * fraction_less_likely)
    return group_normalised(shaped, batch.valid, params.eps)
