"""The two axes of the FADE paper (arXiv 2607.01490), for any estimator's advantages of one batch.

Sign axis: positive gradient mass M+ = sum of A > 0 times the weight the loss aggregation gives
the tokens, negative mass M- the same for A < 0, and the balance (M+ - M-) / (M+ + M-).
Difficulty axis: the mass (M+ + M-) spread over the groups' pass rates p, in bins, and its
mass-weighted mean of 1 - p (1: all mass on prompts nobody solved).
Also the effective sample size (sum |A_i|)^2 / sum A_i^2 over completions and the fraction of
groups with zero signal (all rewards equal).

Token weights by aggregation (docs/concepts/estimators.md): token_mean and seq_sum_const weigh every
response token alike, so completion i weighs its length; seq_mean_token_mean weighs each
completion 1, its tokens 1 / length.
"""

from __future__ import annotations

import torch

# Pass-rate bins: the two extremes on their own (only sign-only estimators put mass there).
BINS = (
    ("p0", 0.0, 0.0),
    ("0_25", 0.0, 0.25),
    ("25_50", 0.25, 0.5),
    ("50_75", 0.5, 0.75),
    ("75_100", 0.75, 1.0),
    ("p1", 1.0, 1.0),
)


def token_weights(response_mask: torch.Tensor, aggregation: str) -> torch.Tensor:
    """[P, G, T] weight of each token in the loss, up to a constant."""
    mask = response_mask.float()
    if aggregation == "seq_mean_token_mean":
        return mask / mask.sum(-1, keepdim=True).clamp(min=1.0)
    return mask


def two_axes(
    advantages: torch.Tensor,
    rewards: torch.Tensor,
    correct: torch.Tensor,
    response_mask: torch.Tensor,
    aggregation: str = "token_mean",
    valid: torch.Tensor | None = None,
    trains: torch.Tensor | None = None,
) -> dict[str, float]:
    """Sign and difficulty axes of one batch. advantages [P, G] or [P, G, T]; the rest [P, G] / [P, G, T].

    ``valid`` marks the samples that exist (the pass rates are theirs); ``trains`` those of them that
    enter the update (the estimator's ``selected``: PSR leaves the wrong ones out), over which the
    masses and the effective sample size are taken. Both default to every sample.

    The inputs may live on different devices (in the loop the masks are the policy's, on the GPU,
    and the advantages the estimator's, on the CPU): everything is taken to the advantages' device.
    """
    device = advantages.device
    rewards, correct, response_mask = (t.to(device) for t in (rewards, correct, response_mask))
    valid = torch.ones_like(rewards, dtype=torch.bool) if valid is None else valid.to(device)
    trains = valid if trains is None else trains.to(device) & valid
    weights = token_weights(response_mask, aggregation) * trains.unsqueeze(-1)
    token_adv = advantages.unsqueeze(-1) if advantages.dim() == 2 else advantages
    contribution = token_adv * weights  # [P, G, T]
    per_group_pos = contribution.clamp(min=0).sum((1, 2))
    per_group_neg = (-contribution).clamp(min=0).sum((1, 2))
    pos, neg = float(per_group_pos.sum()), float(per_group_neg.sum())
    total = pos + neg

    count = valid.sum(1).clamp(min=1)
    pass_rate = (correct & valid).sum(1) / count
    group_mass = per_group_pos + per_group_neg
    out = {
        "axes/mass_pos": pos,
        "axes/mass_neg": neg,
        "axes/sign_balance": (pos - neg) / total if total > 0 else 0.0,
        "axes/mean_difficulty": float((group_mass * (1 - pass_rate)).sum() / total) if total > 0 else 0.0,
    }
    for name, low, high in BINS:
        if low == high:
            in_bin = pass_rate == low
        else:
            in_bin = (pass_rate > low) & (pass_rate <= high) & (pass_rate < 1)
        out[f"axes/mass_frac_{name}"] = float(group_mass[in_bin].sum() / total) if total > 0 else 0.0

    # Completion-level advantage (the token mean for token-level estimators) for the ESS.
    mask = response_mask.float()
    completion = (
        advantages if advantages.dim() == 2 else (advantages * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    )
    completion = completion[trains]
    square = float((completion**2).sum())
    out["axes/ess"] = float(completion.abs().sum() ** 2 / square) if square > 0 else 0.0
    out["axes/ess_fraction"] = out["axes/ess"] / max(1, int(trains.sum()))
    masked = torch.where(valid, rewards, torch.nan)
    spread = torch.nan_to_num(
        masked.nan_to_num(-torch.inf).amax(1) - masked.nan_to_num(torch.inf).amin(1), nan=0.0
    )
    out["axes/zero_signal_groups"] = float((spread <= 0).float().mean())
    return out
