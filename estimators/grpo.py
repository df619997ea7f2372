"""The group-relative family: GRPO and the variants that change its centre, scale or weight.

    grpo     A_i = (r_i - mean_j r_j) / (std_j r_j + eps)            Shao et al. 2024, arXiv 2402.03300
    dr_grpo  A_i = r_i - mean_j r_j (no std; pair it with loss.aggregation=seq_sum_const, the
             constant-length token sum of the paper)                 Liu et al. 2025, arXiv 2503.20783
    mc_grpo  A_i = (r_i - median_j r_j) / (scale_j + eps), scale the std or the median absolute
             deviation                                               arXiv 2601.22582
    f_grpo   A_i = grpo_i * (1 - p)^gamma, p the group pass rate: focal down-weighting of easy
             prompts                                                 arXiv 2602.06717

over the valid completions j of the same prompt. std is unbiased by default, as torch.std and
verl compute it. A group whose rewards are all equal gets A = 0 (no signal, no NaN).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from estimators.group_stats import group_mean, group_median, group_std
from estimators.registry import AdvantageBatch, NoParams, TrainingSignals, register


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
    return group_normalised(batch.rewards, batch.valid, params.eps, params.unbiased_std)


def group_normalised(
    rewards: torch.Tensor, valid: torch.Tensor, eps: float, unbiased: bool = True
) -> torch.Tensor:
    """(r - group mean) / (group std + eps), the GRPO advantage."""
    return (rewards - group_mean(rewards, valid)) / (group_std(rewards, valid, unbiased=unbiased) + eps)


@register("dr_grpo", source="arXiv 2503.20783")
def dr_grpo(batch: AdvantageBatch, signals: TrainingSignals | None, params: NoParams) -> torch.Tensor:
    """Dr. GRPO: r_i - group mean, without the std that over-weights too easy and too hard prompts."""
    return batch.rewards - group_mean(batch.rewards, batch.valid)


@dataclass
class MCGRPOParams:
    scale: str = "std"  # std | mad (median absolute deviation)
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.scale not in ("std", "mad"):
            raise ValueError(f"mc_grpo: scale must be std or mad, got '{self.scale}'")
        if not self.eps > 0:
            raise ValueError(f"mc_grpo: eps must be > 0, got {self.eps}")


@register("mc_grpo", params=MCGRPOParams, source="arXiv 2601.22582")
def mc_grpo(batch: AdvantageBatch, signals: TrainingSignals | None, params: MCGRPOParams) -> torch.Tensor:
    """Median-centred GRPO: (r_i - group median) / (group std or MAD + eps)."""
    median = group_median(batch.rewards, batch.valid)
    if params.scale == "std":
        scale = group_std(batch.rewards, batch.valid)
    else:
        scale = group_median((batch.rewards - median).abs(), batch.valid)
    return (batch.rewards - median) / (scale + params.eps)


@dataclass
class FGRPOParams:
    gamma: float = 1.0  # focusing exponent; 0 is plain GRPO
    eps: float = 1e-6
    correct_at: float = 1.0  # a reward >= this counts as correct for the pass rate

    def __post_init__(self) -> None:
        if self.gamma < 0:
            raise ValueError(f"f_grpo: gamma must be >= 0, got {self.gamma}")
        if not self.eps > 0:
            raise ValueError(f"f_grpo: eps must be > 0, got {self.eps}")


@register("f_grpo", params=FGRPOParams, source="arXiv 2602.06717")
def f_grpo(batch: AdvantageBatch, signals: TrainingSignals | None, params: FGRPOParams) -> torch.Tensor:
    """Focal GRPO: the GRPO advantage times (1 - pass rate)^gamma, down-weighting easy prompts."""
    pass_rate = group_mean((batch.rewards >= params.correct_at).float(), batch.valid)
    return group_normalised(batch.rewards, batch.valid, params.eps) * (1.0 - pass_rate) ** params.gamma
