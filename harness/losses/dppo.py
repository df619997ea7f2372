"""DPPO: a directional Binary-TV / Binary-KL mask against the rollout policy mu, with truncated IS."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from advbench.harness.losses.base import (
    CommonLossParams,
    LossBatch,
    clamped_ratio,
    masked_mean,
    register,
    rollout_anchor,
)

DIVERGENCES = ("tv", "kl")
DPPO_DELTA = {"tv": 0.15, "kl": 0.05}  # the authors' thresholds per divergence


@dataclass
class DPPOParams(CommonLossParams):
    divergence: str = "tv"  # tv: Binary-TV |pi - mu|; kl: Binary-KL KL(Bern(mu) || Bern(pi))
    delta_low: float | None = None  # threshold for A <= 0 tokens; default 0.15 (tv) or 0.05 (kl)
    delta_high: float | None = None  # threshold for A > 0 tokens; same defaults
    is_cap: float = 20.0  # C: the detached IS weight pi / mu is truncated at C

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.divergence not in DIVERGENCES:
            raise ValueError(f"divergence must be one of {', '.join(DIVERGENCES)}, got '{self.divergence}'")
        for name in ("delta_low", "delta_high"):
            if getattr(self, name) is None:
                setattr(self, name, DPPO_DELTA[self.divergence])
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.is_cap > 0:
            raise ValueError(f"is_cap must be > 0, got {self.is_cap}")


def binary_kl(mu_logprobs: torch.Tensor, logprobs: torch.Tensor) -> torch.Tensor:
    """KL(Bern(mu) || Bern(pi)) of the sampled token's probability: the token vs everything else."""
    mu, pi = mu_logprobs.exp(), logprobs.exp()
    return mu * (mu_logprobs - logprobs) + (1 - mu) * torch.log((1 - mu + 1e-8) / (1 - pi + 1e-8))


@register("dppo", params=DPPOParams, source="arXiv 2602.04879 [primary]")
def dppo(batch: LossBatch, params: DPPOParams) -> tuple[torch.Tensor, dict[str, float]]:
    """DPPO (arXiv 2602.04879): drop tokens that moved past delta from mu in A's direction; IS-weighted PG.

    Binary-TV drops a token with A > 0 when pi - mu > delta_high and one with A <= 0 when
    pi - mu < -delta_low; Binary-KL drops it when KL(Bern(mu) || Bern(pi)) exceeds the threshold
    and pi moved in A's direction. A token moving back toward mu is never dropped. The kept tokens
    get -A min(pi / mu, C) log pi with the weight detached: truncated IS, whose gradient is
    -A min(r, C) grad log pi. mu is the rollout engine's policy (the authors' choice; a pi_old
    anchor is their ablation). Source: the authors' verl implementation [primary].
    """
    mu_logprobs = rollout_anchor(batch, "dppo")
    with torch.no_grad():
        logprobs = batch.logprobs.detach()
        ratio = clamped_ratio(logprobs, mu_logprobs)
        moved = logprobs.exp() - mu_logprobs.exp()  # pi - mu
        positive = batch.advantages > 0
        if params.divergence == "tv":
            divergence = moved.abs()
            dropped = torch.where(positive, moved > params.delta_high, moved < -params.delta_low)
        else:
            divergence = binary_kl(mu_logprobs, logprobs)
            dropped = torch.where(
                positive,
                (divergence > params.delta_high) & (moved > 0),
                (divergence > params.delta_low) & (moved < 0),
            )
        weight = ratio.clamp(max=params.is_cap) * ~dropped
    token_losses = -batch.advantages * weight * batch.logprobs
    return token_losses, {
        "mask_fraction": masked_mean(dropped.float(), batch.mask).item(),
        "divergence_mean": masked_mean(divergence, batch.mask).item(),
        "is_capped_fraction": masked_mean((ratio > params.is_cap).float(), batch.mask).item(),
    }
