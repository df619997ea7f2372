"""GSPO: the sequence-level (length-normalised) ratio, clipped."""

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
class GSPOParams(CommonLossParams):
    clip_low: float = 3e-4  # GSPO's sequence ratios stay near 1: the paper clips at 3e-4 / 4e-4
    clip_high: float = 4e-4
    aggregation: str = "seq_mean_token_mean"  # the paper's: each sequence's mean, then their mean

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (0 < self.clip_low < 1 and self.clip_high > 0):
            raise ValueError(
                f"clip_low must be in (0, 1) and clip_high > 0, got {self.clip_low}, {self.clip_high}"
            )


@register("gspo", params=GSPOParams, source="arXiv 2507.18071")
def gspo(batch: LossBatch, params: GSPOParams) -> tuple[torch.Tensor, dict[str, float]]:
    """GSPO (arXiv 2507.18071): PPO clipping of the sequence ratio exp(mean_t log r_t), per token."""
    mask = batch.mask.to(batch.logprobs.dtype)
    log_ratio = batch.logprobs - batch.old_logprobs
    sequence_log_ratio = (log_ratio * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1.0)
    # The token form of Eq. 10: s_t = sg[s] * pi_t / sg[pi_t], so each token carries the sequence ratio.
    ratio = (sequence_log_ratio.detach() + batch.logprobs - batch.logprobs.detach()).exp()
    unclipped = -batch.advantages * ratio
    clipped = -batch.advantages * ratio.clamp(1.0 - params.clip_low, 1.0 + params.clip_high)
    token_losses = torch.maximum(unclipped, clipped)
    return token_losses, {"clip_fraction": masked_mean((clipped > unclipped).float(), batch.mask).item()}
