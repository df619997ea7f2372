"""PPO's clipped surrogate (clip-higher, dual clip); its clip is shared with clip_cov."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from advbench.harness.losses.base import (
    CommonLossParams,
    LossBatch,
    masked_mean,
    register,
)


@dataclass
class PPOClipParams(CommonLossParams):
    clip_low: float = 0.2  # ratio floor 1 - clip_low (PPO, arXiv 1707.06347)
    clip_high: float = 0.2  # ratio ceiling 1 + clip_high; > clip_low is DAPO's clip-higher (2503.14476)
    dual_clip: float = (
        0.0  # c > 1 bounds the loss of A < 0 tokens at -c A (Ye et al. 2020, arXiv 1912.09729); 0 = off
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.clip_low < 1:
            raise ValueError(f"clip_low must be in (0, 1), got {self.clip_low}")
        if not self.clip_high > 0:
            raise ValueError(f"clip_high must be > 0, got {self.clip_high}")
        if self.dual_clip and self.dual_clip <= 1:
            raise ValueError(f"dual_clip must be 0 (off) or > 1, got {self.dual_clip}")


def clipped_surrogate(
    batch: LossBatch, clip_low: float, clip_high: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high)), r = pi / pi_old: (token losses,
    where the clip is active)."""
    ratio = (batch.logprobs - batch.old_logprobs).exp()
    unclipped = -batch.advantages * ratio
    clipped = -batch.advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    return torch.maximum(unclipped, clipped), clipped > unclipped


@register("ppo_clip", params=PPOClipParams, source="arXiv 1707.06347; clip-higher arXiv 2503.14476")
def ppo_clip(batch: LossBatch, params: PPOClipParams) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clipped surrogate: max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high)), r = pi / pi_old; dual clip."""
    advantages = batch.advantages
    token_losses, clip_active = clipped_surrogate(batch, params.clip_low, params.clip_high)
    metrics = {"clip_fraction": masked_mean(clip_active.float(), batch.mask).item()}
    if params.dual_clip:
        bound = -advantages * params.dual_clip
        dual = (advantages < 0) & (token_losses > bound)
        token_losses = torch.where(dual, bound, token_losses)
        metrics["dual_clip_fraction"] = masked_mean(dual.float(), batch.mask).item()
    return token_losses, metrics
