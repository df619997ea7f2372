"""Masked statistics over the G completions of each prompt's group ([P, G] tensors).

Every estimator reads its baselines from here, so that invalid completions are excluded the same
way everywhere and degenerate groups (one valid sample, none) give finite values.
"""

from __future__ import annotations

import torch


def group_count(valid: torch.Tensor) -> torch.Tensor:
    """Number of valid completions per group, [P, 1] float."""
    return valid.sum(dim=1, keepdim=True).to(torch.float32)


def group_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over the valid entries of each group, [P, 1]; 0 for a group with none."""
    total = torch.where(valid, values, torch.zeros_like(values)).sum(dim=1, keepdim=True)
    return total / group_count(valid).clamp(min=1.0)


def group_std(values: torch.Tensor, valid: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Standard deviation over the valid entries of each group, [P, 1].

    unbiased=True divides by (n - 1), as torch.std does; a group with fewer valid entries than
    that needs gets 0, never NaN.
    """
    count = group_count(valid)
    centred = torch.where(valid, values - group_mean(values, valid), torch.zeros_like(values))
    denominator = (count - 1.0) if unbiased else count
    variance = centred.pow(2).sum(dim=1, keepdim=True) / denominator.clamp(min=1.0)
    return variance.sqrt()
