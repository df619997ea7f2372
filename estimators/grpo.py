"""GRPO: the group-normalised advantage (Shao et al. 2024, arXiv 2402.03300, Sec. 4.1.2).

    A_i = (r_i - mean_j r_j) / (std_j r_j + eps)

over the valid completions j of the same prompt. std is unbiased by default, as torch.std and
verl compute it. A group whose rewards are all equal gets A = 0 (no signal, no NaN).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from estimators.group_stats import group_mean, group_std
from estimators.registry import AdvantageBatch, TrainingSignals, register


@dataclass
class GRPOParams:
    eps: float = 1e-6  # added to the std, so identical rewards divide 0 by eps
    unbiased_std: bool = True  # divide by G - 1, as torch.std

    def __post_init__(self) -> None:
        if not self.eps > 0:
            raise ValueError(f"grpo: eps must be > 0, got {self.eps}")


@register("grpo", params=GRPOParams, source="arXiv 2402.03300")
def grpo(batch: AdvantageBatch, signals: TrainingSignals | None, params: GRPOParams) -> torch.Tensor:
    """Group-normalised advantage: (r_i - group mean) / (group std + eps)."""
    mean = group_mean(batch.rewards, batch.valid)
    std = group_std(batch.rewards, batch.valid, unbiased=params.unbiased_std)
    return (batch.rewards - mean) / (std + params.eps)
