"""RLOO: REINFORCE with a leave-one-out baseline (Ahmadian et al. 2024, arXiv 2402.14740, Eq. 6).

    A_i = r_i - mean_{j != i} r_j = n / (n - 1) * (r_i - mean_j r_j)

with n the number of valid completions in the group. A group of one has no other sample to
compare with and gets A = 0.
"""

from __future__ import annotations

import torch

from advbench.estimators.group_stats import group_count, group_mean
from advbench.estimators.registry import AdvantageBatch, NoParams, TrainingSignals, register


@register("rloo", source="arXiv 2402.14740")
def rloo(batch: AdvantageBatch, signals: TrainingSignals | None, params: NoParams) -> torch.Tensor:
    """Leave-one-out baseline: r_i minus the mean of the other completions of its prompt."""
    count = group_count(batch.valid)
    scale = torch.where(count > 1, count / (count - 1).clamp(min=1.0), torch.zeros_like(count))
    return scale * (batch.rewards - group_mean(batch.rewards, batch.valid))
