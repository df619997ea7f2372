"""REINFORCE (Williams 1992) with and without a baseline: the simplest outcome advantages.

reinforce:        A_i = r_i
reinforce_batch:  A_i = r_i - mean of r over every valid completion in the batch
"""

from __future__ import annotations

import torch

from advbench.estimators.registry import AdvantageBatch, NoParams, TrainingSignals, register


@register("reinforce", source="Williams 1992, doi:10.1007/BF00992696")
def reinforce(batch: AdvantageBatch, signals: TrainingSignals | None, params: NoParams) -> torch.Tensor:
    """REINFORCE without a baseline: A_i = r_i."""
    return batch.rewards.clone()


@register("reinforce_batch", source="Williams 1992, doi:10.1007/BF00992696")
def reinforce_batch(batch: AdvantageBatch, signals: TrainingSignals | None, params: NoParams) -> torch.Tensor:
    """REINFORCE with a batch-mean baseline: A_i = r_i - mean over the batch's valid completions."""
    valid = batch.valid
    baseline = batch.rewards[valid].mean() if valid.any() else batch.rewards.new_zeros(())
    return batch.rewards - baseline
