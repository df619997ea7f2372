"""Risk-sensitive advantage from an exponential utility (arXiv 2509.24261, Sec. 3).

The objective J_beta = (1 / beta) log E[exp(beta r)] has the per-sample gradient weight

    A_i = (exp(beta r_i) / mean_j exp(beta r_j) - 1) / beta  =  (G softmax(beta r)_i - 1) / beta

over the valid samples of the group. beta > 0 seeks risk (weighs the rare high rewards of hard
prompts up), beta < 0 avoids it, and beta -> 0 recovers r_i - mean_j r_j.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from advbench.estimators.group_stats import group_count
from advbench.estimators.registry import AdvantageBatch, TrainingSignals, register


@dataclass
class RiskParams:
    beta: float = 2.0

    def __post_init__(self) -> None:
        if self.beta == 0:
            raise ValueError("risk_seeking: beta must be nonzero (beta -> 0 is dr_grpo)")


@register("risk_seeking", params=RiskParams, source="arXiv 2509.24261 [primary]")
def risk_seeking(batch: AdvantageBatch, signals: TrainingSignals | None, params: RiskParams) -> torch.Tensor:
    """Exponential-utility advantage: (G softmax(beta r)_i - 1) / beta within each group."""
    logits = torch.where(
        batch.valid, params.beta * batch.rewards, torch.full_like(batch.rewards, float("-inf"))
    )
    weights = torch.nan_to_num(torch.softmax(logits, dim=1), nan=0.0)  # an all-invalid group gives NaN
    return (group_count(batch.valid) * weights - 1.0) / params.beta
