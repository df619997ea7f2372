"""MaxRL: the gradient of the log pass rate (arXiv 2602.02710).

Maximising E_x[log p(x)] instead of E_x[p(x)] weighs each prompt's policy gradient by 1 / p(x):

    A_i = r_i / p - 1   on groups with p > 0 (p the group's mean reward), 0 otherwise

so hard prompts (small p) that were solved get a large push, and the advantage sums to zero in
every group. The paper's estimator carries an extra 1/N (N the group size), a constant scale that
the learning rate absorbs; it is left out here. Checked against the paper [primary].
"""

from __future__ import annotations

import torch

from advbench.estimators.group_stats import group_mean
from advbench.estimators.registry import AdvantageBatch, NoParams, TrainingSignals, register


@register("maxrl", source="arXiv 2602.02710 [primary]")
def maxrl(batch: AdvantageBatch, signals: TrainingSignals | None, params: NoParams) -> torch.Tensor:
    """Gradient of log pass rate: r_i / p - 1 where the group's mean reward p > 0, else 0."""
    p = group_mean(batch.rewards, batch.valid)
    return torch.where(p > 0, batch.rewards / p.clamp(min=1e-12) - 1.0, torch.zeros_like(batch.rewards))
