"""DRPO and SPO: smooth quadratic regularisers toward the rollout policy mu."""

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


@dataclass
class DRPOParams(CommonLossParams):
    # The paper's and its code's value. The gradient weight 1 - sign(A) (pi - mu) / delta then moves
    # only within 1 +- 1/12.5 = 1 +- 0.08 (|pi - mu| <= 1): a light touch, far from DPPO's boundary.
    delta: float = 12.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.delta > 0:
            raise ValueError(f"delta must be > 0, got {self.delta}")


@dataclass
class SPOParams(DRPOParams):
    # SPO's epsilon: the ratio at which the weight 1 - sign(A) (r - 1) / eps reaches 0 (PPO's 0.2).
    delta: float = 0.2


def quadratic_regulariser(
    batch: LossBatch, delta: float, loss: str, scale_by_mu: bool
) -> tuple[torch.Tensor, dict[str, float]]:
    """-A r + |A| s (r - 1)^2 / (2 delta), r = pi / mu, s = mu (DRPO) or 1 (SPO), mu detached.

    The gradient with respect to log pi is -A r w with w = 1 - sign(A) s (r - 1) / delta (for DRPO
    s (r - 1) = pi - mu); w fades at the boundary in A's direction and turns corrective beyond it.
    """
    mu_logprobs = rollout_anchor(batch, loss)
    ratio = clamped_ratio(batch.logprobs, mu_logprobs)
    scale = mu_logprobs.exp() if scale_by_mu else 1.0
    penalty = batch.advantages.abs() * scale * (ratio - 1.0) ** 2 / (2.0 * delta)
    with torch.no_grad():
        weight = 1.0 - torch.sign(batch.advantages) * scale * (ratio - 1.0) / delta
    mask = batch.mask
    return -batch.advantages * ratio + penalty, {
        "trust_weight_mean": masked_mean(weight, mask).item(),
        "trust_weight_min": weight[mask.bool()].min().item() if mask.any() else 1.0,
        # beyond the boundary the weight turns negative: the token is pulled back toward mu
        "corrective_fraction": masked_mean((weight < 0).float(), mask).item(),
    }


@register("drpo", params=DRPOParams, source="arXiv 2606.09821 [primary]")
def drpo(batch: LossBatch, params: DRPOParams) -> tuple[torch.Tensor, dict[str, float]]:
    """DRPO (arXiv 2606.09821): -A r + |A| mu (r - 1)^2 / (2 delta), r = pi / mu, mu detached.

    A smooth quadratic regulariser with DPPO's geometry: the gradient with respect to log pi is
    -A r (1 - sign(A) (pi - mu) / delta), a weight that fades at DPPO's boundary |pi - mu| = delta
    in A's direction and turns corrective beyond it. Source: the paper and its code [primary].
    """
    return quadratic_regulariser(batch, params.delta, "drpo", scale_by_mu=True)


@register("spo", params=SPOParams, source="arXiv 2401.16025 [primary, via 2606.09821's code]")
def spo(batch: LossBatch, params: SPOParams) -> tuple[torch.Tensor, dict[str, float]]:
    """SPO (arXiv 2401.16025): -A r + |A| (r - 1)^2 / (2 delta), r = pi / mu: DRPO without the mu factor.

    An advantage-weighted chi-square penalty; the gradient weight is 1 - sign(A) (r - 1) / delta,
    zero at PPO's clip boundary r = 1 + delta for A > 0. The anchor is mu, as in DRPO (the
    divergence paper runs SPO through the same code) [primary, via arXiv 2606.09821's code].
    """
    return quadratic_regulariser(batch, params.delta, "spo", scale_by_mu=False)
