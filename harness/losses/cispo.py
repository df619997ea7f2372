"""CISPO: a clipped, detached importance weight times A log pi."""

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
class CISPOParams(CommonLossParams):
    clip_high: float = 5.0  # cap on the IS weight (MiniMax-M1 clips only above)
    clip_low: float = 0.0  # floor 1 - clip_low on the IS weight; 0 = no floor

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (0 <= self.clip_low < 1 and self.clip_high > 0):
            raise ValueError(
                f"clip_low must be in [0, 1) and clip_high > 0, got {self.clip_low}, {self.clip_high}"
            )


@register("cispo", params=CISPOParams, source="arXiv 2506.13585")
def cispo(batch: LossBatch, params: CISPOParams) -> tuple[torch.Tensor, dict[str, float]]:
    """CISPO (MiniMax-M1, arXiv 2506.13585): -sg[clip(r)] A log pi, so every token keeps a gradient."""
    ratio = (batch.logprobs - batch.old_logprobs).exp().detach()
    low = 1.0 - params.clip_low if params.clip_low else 0.0
    weight = ratio.clamp(low, 1.0 + params.clip_high)
    token_losses = -weight * batch.advantages * batch.logprobs
    return token_losses, {"clip_fraction": masked_mean((weight != ratio).float(), batch.mask).item()}
