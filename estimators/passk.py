"""Pass@k objectives: advantages whose expected gradient is that of pass@k (or max@k), not pass@1.

    passk_max    only the group's best completion gets (r_max - r_second) / (std + eps), others 0
                 (verl's grpo_passk; Tang et al., arXiv 2503.19595)
    passk_train  analytic pass@k advantage for binary rewards (Chen et al., arXiv 2508.10751, Eq. 13-15):
                 R = 1 - C(N_neg, k) / C(G, k),  sigma = sqrt(R (1 - R))
                 correct: (1 - R) / sigma
                 wrong:   (1 - R - C(N_neg - 1, k - 1) / C(G - 1, k - 1)) / sigma
    pkpo         Walder & Karkhanis (arXiv 2505.15201), the k-1 leave-one-out estimator s^(loo-1)
                 (Sec. 4, Eq. 33): with rewards sorted ascending g_(1) <= ... <= g_(n),
                 A_(i) = sum_{m < i} C(m - 1, k - 2) (g_(i) - g_(m)) / C(n, k)
                 i.e. the average, over the k-subsets containing i, of how much i raises their
                 maximum: an unbiased gradient of max@k with a variance-reducing baseline. k >= 2.

G or n is the number of valid completions of the group; groups with no spread get 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from advbench.estimators.group_stats import group_count, group_std
from advbench.estimators.registry import AdvantageBatch, TrainingSignals, register


def comb(n: torch.Tensor, k: torch.Tensor | int) -> torch.Tensor:
    """Binomial coefficient C(n, k) elementwise (float), 0 where k < 0 or k > n."""
    n = n.to(torch.float64)
    k = torch.as_tensor(k, dtype=torch.float64, device=n.device).expand_as(n)
    ok = (k >= 0) & (k <= n)
    n_safe, k_safe = torch.where(ok, n, k.abs()), torch.where(ok, k, torch.zeros_like(k))
    log_c = torch.lgamma(n_safe + 1) - torch.lgamma(k_safe + 1) - torch.lgamma(n_safe - k_safe + 1)
    return torch.where(ok, log_c.exp().round(), torch.zeros_like(n))


@dataclass
class PassKMaxParams:
    normalise: bool = True  # divide by the group's std
    eps: float = 1e-6


@register("passk_max", params=PassKMaxParams, source="arXiv 2503.19595 [peer: verl grpo_passk]")
def passk_max(batch: AdvantageBatch, signals: TrainingSignals | None, params: PassKMaxParams) -> torch.Tensor:
    """Only the best completion of a group gets (r_max - r_second) [/ (std + eps)]; the rest 0."""
    rewards = torch.where(batch.valid, batch.rewards, torch.full_like(batch.rewards, float("-inf")))
    top2 = rewards.topk(min(2, rewards.shape[1]), dim=1).values
    if top2.shape[1] < 2:
        return torch.zeros_like(batch.rewards)
    gap = torch.nan_to_num(top2[:, :1] - top2[:, 1:2], nan=0.0, posinf=0.0, neginf=0.0)
    if params.normalise:
        gap = gap / (group_std(batch.rewards, batch.valid) + params.eps)
    # A tie at the top gives a gap of 0, so which tied sample is "best" does not matter.
    is_best = torch.zeros_like(batch.valid).scatter(1, rewards.argmax(1, keepdim=True), True) & batch.valid
    return torch.where(is_best, gap.expand_as(batch.rewards), torch.zeros_like(batch.rewards))


@dataclass
class PassKParams:
    k: int = 4
    correct_at: float = 1.0

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")


@register("passk_train", params=PassKParams, source="arXiv 2508.10751 [primary]")
def passk_train(batch: AdvantageBatch, signals: TrainingSignals | None, params: PassKParams) -> torch.Tensor:
    """Analytic pass@k advantage (Pass@k Training): (1 - R) / sigma on correct, a miss term on wrong."""
    group = group_count(batch.valid).to(torch.float64)
    wrong = (batch.valid & (batch.rewards < params.correct_at)).sum(1, keepdim=True).to(torch.float64)
    k = min(params.k, batch.group_size)
    total = comb(group, k)
    pass_k = torch.where(total > 0, 1.0 - comb(wrong, k) / total.clamp(min=1.0), torch.zeros_like(group))
    sigma = (pass_k * (1.0 - pass_k)).sqrt()
    sub_total = comb(group - 1, k - 1)
    miss = torch.where(
        sub_total > 0, comb(wrong - 1, k - 1) / sub_total.clamp(min=1.0), torch.zeros_like(group)
    )
    correct = batch.rewards >= params.correct_at
    advantage = torch.where(correct, 1.0 - pass_k, 1.0 - pass_k - miss) / sigma.clamp(min=1e-12)
    return torch.where(sigma > 0, advantage, torch.zeros_like(advantage)).to(batch.rewards.dtype)


@dataclass
class PKPOParams:
    k: int = 4

    def __post_init__(self) -> None:
        if self.k < 2:
            raise ValueError(f"pkpo: k must be >= 2 (k = 1 is pass@1: use rloo), got {self.k}")


@register("pkpo", params=PKPOParams, source="arXiv 2505.15201 [peer]")
def pkpo(batch: AdvantageBatch, signals: TrainingSignals | None, params: PKPOParams) -> torch.Tensor:
    """PKPO's k-1 leave-one-out max@k weights: mean over k-subsets with i of i's gain in their max."""
    valid = batch.valid
    # Sort ascending with invalid samples first (they get rank 0 and no weight).
    keyed = torch.where(valid, batch.rewards, torch.full_like(batch.rewards, float("-inf")))
    order = keyed.argsort(dim=1, stable=True)
    g = batch.rewards.gather(1, order).to(torch.float64)
    v = valid.gather(1, order)
    rank = v.long().cumsum(1) * v  # 1-based rank among valid samples, 0 for invalid
    n = group_count(valid).to(torch.float64)
    # c_m = C(m - 1, k - 2) for each valid sample m as a "lower" element; prefix sums over m < i.
    c = comb((rank - 1).clamp(min=0).to(torch.float64), params.k - 2) * v
    below_weight = c.cumsum(1) - c
    below_sum = (c * g).cumsum(1) - c * g
    subsets = comb(n, params.k)
    sorted_adv = torch.where(subsets > 0, (g * below_weight - below_sum) / subsets.clamp(min=1.0) * v, 0.0)
    return torch.zeros_like(sorted_adv).scatter(1, order, sorted_adv).to(batch.rewards.dtype)
