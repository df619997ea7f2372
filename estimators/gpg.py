"""GPG: group policy gradient (Chu et al. 2025, arXiv 2504.02546, Sec. 2.2, Eq. 9-10).

    A_i = alpha * (r_i - mean_j r_j) / F_norm,   alpha = B / (B - M)

B the number of valid completions in the batch, M the number of them in groups whose rewards are
all equal (no signal): the valid groups' gradient is scaled up so that zero-signal groups do not
dilute it. F_norm is 1 in the paper (the std is dropped).

Note: verl's compute_gpg_outcome_advantage takes alpha = B / (number of nonzero rewards); we follow
the paper's definition.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from advbench.estimators.group_stats import group_mean
from advbench.estimators.registry import AdvantageBatch, TrainingSignals, register


@dataclass
class GPGParams:
    f_norm: float = 1.0

    def __post_init__(self) -> None:
        if not self.f_norm > 0:
            raise ValueError(f"gpg: f_norm must be > 0, got {self.f_norm}")


@register("gpg", params=GPGParams, source="arXiv 2504.02546")
def gpg(batch: AdvantageBatch, signals: TrainingSignals | None, params: GPGParams) -> torch.Tensor:
    """Group-centred reward scaled by B / (B - samples in zero-signal groups), over F_norm."""
    valid, rewards = batch.valid, batch.rewards
    big, small = float("inf"), float("-inf")
    spread = torch.where(valid, rewards, torch.full_like(rewards, small)).amax(1) - torch.where(
        valid, rewards, torch.full_like(rewards, big)
    ).amin(1)
    informative = valid & (spread > 0).unsqueeze(1)  # samples of groups with a reward spread
    alpha = valid.sum() / informative.sum().clamp(min=1)
    return alpha * (rewards - group_mean(rewards, valid)) / params.f_norm
