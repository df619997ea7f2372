"""Clip-Cov and KL-Cov: the entropy controls of arXiv 2505.22617 (covariance over the batch)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from advbench.harness.losses.base import (
    CommonLossParams,
    LossBatch,
    masked_mean,
    register,
)
from advbench.harness.losses.ppo_clip import clipped_surrogate


@dataclass
class ClipCovParams(CommonLossParams):
    clip_ratio: float = 2e-4  # fraction of tokens whose gradient is detached
    cov_low: float = 1.0  # only tokens with covariance in [cov_low, cov_high] are candidates
    cov_high: float = 5.0
    clip_low: float = 0.2  # PPO's ratio clip, which Clip-Cov keeps (as verl does)
    clip_high: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.clip_ratio <= 1:
            raise ValueError(f"clip_ratio must be in (0, 1], got {self.clip_ratio}")
        if not (0 < self.clip_low < 1 and self.clip_high > 0):
            raise ValueError(
                f"clip_low must be in (0, 1) and clip_high > 0, got {self.clip_low}, {self.clip_high}"
            )


def token_covariance(batch: LossBatch) -> torch.Tensor:
    """Cov_t = (log pi_t - mean log pi)(A_t - mean A) over the batch's response tokens (2505.22617 Eq. 11)."""
    mask = batch.mask.bool()
    logprobs = batch.logprobs.detach()
    centred_logp = logprobs - logprobs[mask].mean()
    centred_adv = batch.advantages - batch.advantages[mask].mean()
    return torch.where(mask, centred_logp * centred_adv, torch.zeros_like(logprobs))


# whole_batch: the covariance is taken over the batch
@register("clip_cov", params=ClipCovParams, source="arXiv 2505.22617 [peer: verl]", whole_batch=True)
def clip_cov(batch: LossBatch, params: ClipCovParams) -> tuple[torch.Tensor, dict[str, float]]:
    """Clip-Cov (arXiv 2505.22617): PPO's clipped surrogate, a few high-covariance tokens detached.

    As verl [peer]: the candidates are tokens the ratio clip has not already clipped, with
    covariance in [cov_low, cov_high]; the chosen ones get no gradient.
    """
    token_losses, clip_active = clipped_surrogate(batch, params.clip_low, params.clip_high)
    covariance = token_covariance(batch)
    mask = batch.mask.bool()
    candidates = mask & ~clip_active & (covariance >= params.cov_low) & (covariance <= params.cov_high)
    count = int(max(1, round(params.clip_ratio * int(mask.sum())))) if candidates.any() else 0
    # Deterministic choice of the candidates (the paper samples them at random): the largest ones.
    chosen = torch.zeros_like(mask)
    if count:
        flat = torch.where(candidates, covariance, torch.full_like(covariance, float("-inf"))).flatten()
        chosen.view(-1)[flat.topk(min(count, int(candidates.sum()))).indices] = True
    token_losses = torch.where(chosen, token_losses.detach(), token_losses)
    return token_losses, {
        "cov_clip_fraction": masked_mean(chosen.float(), mask).item(),
        "clip_fraction": masked_mean(clip_active.float(), mask).item(),
    }


@dataclass
class KLCovParams(CommonLossParams):
    kl_ratio: float = 2e-3  # fraction of tokens (the highest covariance) that get the KL penalty
    kl_cov_coef: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.kl_ratio <= 1:
            raise ValueError(f"kl_ratio must be in (0, 1], got {self.kl_ratio}")


@register("kl_cov", params=KLCovParams, source="arXiv 2505.22617 [peer: verl]", whole_batch=True)
def kl_cov(batch: LossBatch, params: KLCovParams) -> tuple[torch.Tensor, dict[str, float]]:
    """KL-Cov (arXiv 2505.22617): -A r plus coef |log r| on the top-k covariance tokens."""
    covariance = token_covariance(batch)
    mask = batch.mask.bool()
    count = max(1, round(params.kl_ratio * int(mask.sum())))
    flat = torch.where(mask, covariance, torch.full_like(covariance, float("-inf"))).flatten()
    chosen = torch.zeros_like(mask)
    chosen.view(-1)[flat.topk(min(count, int(mask.sum()))).indices] = True
    chosen &= mask
    log_ratio = batch.logprobs - batch.old_logprobs
    token_losses = -batch.advantages * log_ratio.exp() + params.kl_cov_coef * chosen * log_ratio.abs()
    return token_losses, {"kl_cov_fraction": masked_mean(chosen.float(), mask).item()}
