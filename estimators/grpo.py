"""The group-relative family: GRPO and the variants that change its centre, scale or weight.

    grpo     A_i = (r_i - mean_j r_j) / (std_j r_j + eps)            Shao et al. 2024, arXiv 2402.03300
    dr_grpo  A_i = r_i - mean_j r_j (no std; pair it with loss.aggregation=seq_sum_const, the
             constant-length token sum of the paper)                 Liu et al. 2025, arXiv 2503.20783
    mc_grpo  as released: G + 1 samples, A_i = (r_i - median) / (MAD + 1e-3), MAD = median_j
             |r_j - median|, and the median ("pivot") sample left out of the update
                                                                     arXiv 2601.22582 [primary]
    mc_grpo_std  the same with the group std in place of the MAD (eps 1e-6): our variant
    f_grpo   A_i = grpo_i * (1 - p)^gamma, p the group pass rate: focal down-weighting of easy
             prompts                                                 arXiv 2602.06717

over the valid completions j of the same prompt. std is unbiased by default, as torch.std and
verl compute it. A group whose rewards are all equal gets A = 0 (no signal, no NaN).

MC-GRPO with binary rewards: its G + 1 = 9 samples have a median of 0 or 1 that the majority
shares, so the MAD is 0 and the minority gets A = +-1 / 1e-3 = +-1000 (the majority 0). That is
the method as its authors released it; pair it with a loss whose scale tolerates it, or use
mc_grpo_std. The pivot is the median sample of the n = G + 1 valid samples (any of a tie: its
advantage is 0 either way); a group with invalid samples and an even n has no median sample and
leaves none out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from advbench.estimators.group_stats import group_mean, group_median, group_std
from advbench.estimators.registry import AdvantageBatch, NoParams, TrainingSignals, register


@dataclass
class GRPOParams:
    eps: float = 1e-6  # added to the std, so identical rewards divide 0 by eps
    unbiased_std: bool = True  # divide by G - 1, as torch.std

    def __post_init__(self) -> None:
        if not self.eps > 0:
            raise ValueError(f"grpo: eps must be > 0, got {self.eps}")


@register("grpo", params=GRPOParams, source="arXiv 2402.03300 [peer: verl]")
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
    eps: float = 1e-3  # the authors' constant added to the MAD

    def __post_init__(self) -> None:
        if not self.eps > 0:
            raise ValueError(f"mc_grpo: eps must be > 0, got {self.eps}")


@dataclass
class MCGRPOStdParams:
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if not self.eps > 0:
            raise ValueError(f"mc_grpo_std: eps must be > 0, got {self.eps}")


def not_pivot(batch: AdvantageBatch, params: object) -> torch.Tensor:
    """False on each group's pivot: with an odd number n of valid samples, the one at sorted
    position (n - 1) // 2, the median sample (its advantage is 0). An even n (some samples
    invalid) has no median sample, and nothing is left out."""
    key = torch.where(batch.valid, batch.rewards, torch.full_like(batch.rewards, float("inf")))
    order = torch.sort(key, dim=1, stable=True).indices
    count = batch.valid.sum(1, keepdim=True)
    pivot = order.gather(1, ((count - 1) // 2).clamp(min=0))
    keep = torch.ones_like(batch.valid)
    keep.scatter_(1, pivot, False)
    return keep | (count % 2 == 0)


@register(
    "mc_grpo", params=MCGRPOParams, source="arXiv 2601.22582 [primary]", trains=not_pivot, extra_samples=1
)
def mc_grpo(batch: AdvantageBatch, signals: TrainingSignals | None, params: MCGRPOParams) -> torch.Tensor:
    """MC-GRPO as released: G + 1 samples, (r_i - median) / (MAD + 1e-3), the pivot left out."""
    median = group_median(batch.rewards, batch.valid)
    mad = group_median((batch.rewards - median).abs(), batch.valid)
    return (batch.rewards - median) / (mad + params.eps)


@register(
    "mc_grpo_std",
    params=MCGRPOStdParams,
    source="arXiv 2601.22582 (std variant, ours)",
    trains=not_pivot,
    extra_samples=1,
)
def mc_grpo_std(
    batch: AdvantageBatch, signals: TrainingSignals | None, params: MCGRPOStdParams
) -> torch.Tensor:
    """MC-GRPO with the std in place of the MAD: (r_i - median) / (std + eps), the pivot left out."""
    median = group_median(batch.rewards, batch.valid)
    return (batch.rewards - median) / (group_std(batch.rewards, batch.valid) + params.eps)


@dataclass
class FGRPOParams:
    gamma: float = 1.0  # focusing exponent; 0 is plain GRPO. The paper's default was not found: 1.0
    eps: float = 1e-6
    correct_at: float = 1.0  # a reward >= this counts as correct for the pass rate

    def __post_init__(self) -> None:
        if self.gamma < 0:
            raise ValueError(f"f_grpo: gamma must be >= 0, got {self.gamma}")
        if not self.eps > 0:
            raise ValueError(f"f_grpo: eps must be > 0, got {self.eps}")


@register("f_grpo", params=FGRPOParams, source="arXiv 2602.06717 [secondary]")
def f_grpo(batch: AdvantageBatch, signals: TrainingSignals | None, params: FGRPOParams) -> torch.Tensor:
    """Focal GRPO: the GRPO advantage times (1 - pass rate)^gamma, down-weighting easy prompts."""
    pass_rate = group_mean((batch.rewards >= params.correct_at).float(), batch.valid)
    return group_normalised(batch.rewards, batch.valid, params.eps) * (1.0 - pass_rate) ** params.gamma
