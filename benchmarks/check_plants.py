"""Planted regressions for benchmarks/check_noise.py, as estimators of their own (a plugin module:
``--plugin benchmarks/check_plants.py``, so Ray workers load them too).

- ``grpo_scaled``: GRPO's advantages times 0.25. Under AdamW and gradient clipping a constant scale
  mostly cancels, so it may move learning little: the measured drop in gain says how much.
- ``grpo_half_shuffled``: GRPO's advantages, with every other group's rolled by one sample within
  the group (deterministic): half of the prompts credit the wrong completions.
"""

from __future__ import annotations

import torch

from advbench.estimators.grpo import GRPOParams, grpo
from advbench.estimators.registry import AdvantageBatch, TrainingSignals, register


@register("grpo_scaled", params=GRPOParams, source="planted regression (benchmarks/check_plants.py)")
def grpo_scaled(batch: AdvantageBatch, signals: TrainingSignals | None, params: GRPOParams) -> torch.Tensor:
    """GRPO's advantages times 0.25: a planted regression."""
    return 0.25 * grpo(batch, signals, params)


@register("grpo_half_shuffled", params=GRPOParams, source="planted regression (benchmarks/check_plants.py)")
def grpo_half_shuffled(
    batch: AdvantageBatch, signals: TrainingSignals | None, params: GRPOParams
) -> torch.Tensor:
    """GRPO's advantages, every other group's rolled by one sample: a planted regression."""
    advantages = grpo(batch, signals, params)
    rolled = advantages.roll(1, dims=1)
    every_other = (torch.arange(advantages.shape[0]) % 2 == 0).unsqueeze(1)
    return torch.where(every_other, rolled, advantages)
