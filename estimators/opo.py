"""OPO: on-policy RL with the optimal reward baseline (Hao et al. 2025, arXiv 2505.23585, Eq. 5).

    A_i = r_i - b,   b = sum_j ell_j r_j / sum_j ell_j

the length-weighted mean reward of the group: with sequence-level rewards and a token-sum loss,
the variance-minimising baseline weighs each completion by its length (its gradient norm proxy).
Without lengths every completion weighs 1 and this is r_i - group mean.
"""

from __future__ import annotations

import torch

from advbench.estimators.group_stats import group_mean
from advbench.estimators.registry import AdvantageBatch, NoParams, TrainingSignals, register


@register("opo", source="arXiv 2505.23585 [peer]")
def opo(batch: AdvantageBatch, signals: TrainingSignals | None, params: NoParams) -> torch.Tensor:
    """Length-weighted optimal baseline: r_i - sum_j ell_j r_j / sum_j ell_j over the group."""
    if batch.lengths is None:
        return batch.rewards - group_mean(batch.rewards, batch.valid)
    lengths = torch.where(batch.valid, batch.lengths.float(), torch.zeros_like(batch.rewards))
    baseline = (lengths * batch.rewards).sum(1, keepdim=True) / lengths.sum(1, keepdim=True).clamp(min=1e-8)
    return batch.rewards - baseline
