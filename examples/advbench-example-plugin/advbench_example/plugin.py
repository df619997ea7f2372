"""An estimator and a policy loss registered from outside advbench.

Importing this module registers them: installed, through the ``advbench.plugins`` entry point;
not installed, with ``advbench run --plugin path/to/plugin.py``.
"""

from dataclasses import dataclass

import torch

from advbench.estimators import AdvantageBatch, TrainingSignals, register
from advbench.estimators.group_stats import group_median
from advbench.harness import losses


@dataclass
class MedianBaselineParams:
    scale: float = 1.0  # multiplies every advantage

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ValueError(f"median_baseline: scale must be > 0, got {self.scale}")


@register("median_baseline", params=MedianBaselineParams, source="advbench example plugin")
def median_baseline(
    batch: AdvantageBatch, signals: TrainingSignals | None, params: MedianBaselineParams
) -> torch.Tensor:
    """Reward minus the group's median reward (over its valid samples), times scale."""
    advantages = (batch.rewards - group_median(batch.rewards, batch.valid)) * params.scale
    return torch.where(batch.valid, advantages, torch.zeros_like(advantages))


@dataclass
class VanillaPGParams(losses.CommonLossParams):
    advantage_clip: float = 5.0  # |A| is clamped here before it weights log pi

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.advantage_clip > 0:
            raise ValueError(f"advantage_clip must be > 0, got {self.advantage_clip}")


@losses.register("vanilla_pg", params=VanillaPGParams, source="advbench example plugin")
def vanilla_pg(batch: losses.LossBatch, params: VanillaPGParams) -> tuple[torch.Tensor, dict[str, float]]:
    """Plain on-policy policy gradient: -A log pi, A clamped to +-advantage_clip, no ratio."""
    advantages = batch.advantages.clamp(-params.advantage_clip, params.advantage_clip)
    clipped = (advantages != batch.advantages) & batch.mask
    return -advantages * batch.logprobs, {"advantage_clip_fraction": float(clipped.float().mean())}
