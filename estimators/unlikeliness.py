"""Unlikeliness reward (He, Fried, Welleck, "Rewarding the Unlikely", EMNLP 2025, arXiv
2506.02355, Sec. 4, Eq. 3) [primary].

GRPO sharpens toward the completions the policy already finds likely. The unlikeliness reward
lowers the reward of a correct completion the more likely it is within its group:

    r'_i = r_i (1 - rank_i / G x rank_penalty),   rank_i = number of valid samples of the group
           less likely than i (0 = the least likely), by per-token mean rollout log-prob

then A_i = GRPO(r'). Correct completions that the policy found unlikely keep their full reward and
so get the larger advantage. Ranking by the per-token mean (not the sequence sum) is the authors'
choice: a sum would rank long completions as unlikely for their length alone. Needs the rollout
log-probs (token level).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from advbench.estimators.grpo import group_normalised
from advbench.estimators.registry import AdvantageBatch, TrainingSignals, register


@dataclass
class UnlikelinessParams:
    rank_penalty: float = 0.25
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if not 0 <= self.rank_penalty <= 1:
            raise ValueError(f"unlikeliness: rank_penalty must be in [0, 1], got {self.rank_penalty}")


@register("unlikeliness", params=UnlikelinessParams, source="arXiv 2506.02355 [primary]")
def unlikeliness(
    batch: AdvantageBatch, signals: TrainingSignals | None, params: UnlikelinessParams
) -> torch.Tensor:
    """GRPO on rewards lowered by rank_penalty x the sample's likelihood rank in its group / G."""
    if batch.logprobs is None:
        raise ValueError("unlikeliness needs the rollout log-probs (AdvantageBatch.logprobs)")
    mask = batch.response_mask if batch.response_mask is not None else torch.ones_like(batch.logprobs)
    mask = mask.to(batch.logprobs.dtype)
    mean_logprob = (batch.logprobs * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    # rank_i: the valid samples j of i's group with a lower per-token mean log-prob
    pairwise_less = (mean_logprob.unsqueeze(1) < mean_logprob.unsqueeze(2)) & batch.valid.unsqueeze(1)
    rank = pairwise_less.sum(-1).float()
    shaped = batch.rewards * (1.0 - params.rank_penalty * rank / batch.group_size)
    return group_normalised(shaped, batch.valid, params.eps)
