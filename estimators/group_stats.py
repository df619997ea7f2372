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


def group_median(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Median over the valid entries of each group (the mean of the two middle ones for an even
    count), [P, 1]; 0 for a group with none."""
    median = torch.nanquantile(
        torch.where(valid, values, torch.full_like(values, float("nan"))), 0.5, dim=1, keepdim=True
    )
    return torch.nan_to_num(median, nan=0.0)


def token_weights(batch_valid: torch.Tensor, response_mask: torch.Tensor | None) -> torch.Tensor:
    """[P, G, T] float weights of the tokens that count: the response mask of valid completions.

    Without token-level inputs each completion counts as one token ([P, G, 1]).
    """
    if response_mask is None:
        return batch_valid.unsqueeze(-1).to(torch.float32)
    return response_mask.to(torch.float32) * batch_valid.unsqueeze(-1)


def whiten_tokens(values: torch.Tensor, weights: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / (std + eps) over all weighted tokens of the batch; 0 where the weight is 0."""
    total = weights.sum().clamp(min=1.0)
    mean = (values * weights).sum() / total
    var = (((values - mean) ** 2) * weights).sum() / total
    return (values - mean) / (var.sqrt() + eps) * (weights > 0)


def shuffle_within_groups(
    values: torch.Tensor, valid: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """``values`` ([P, G] or [P, G, T]) with each group's valid entries permuted at random among the
    group's valid places; invalid places keep theirs. Each group keeps its multiset of values (mean,
    spread, signs), while which sample gets which value no longer depends on the sample."""
    keys = torch.rand(valid.shape, generator=generator).to(valid.device).masked_fill(~valid, 2.0)
    source = keys.argsort(dim=1)  # the valid places in random order, then the invalid ones
    target = (~valid).to(torch.int8).argsort(dim=1, stable=True)  # the valid places in order, then the rest
    index = source if values.dim() == 2 else source.unsqueeze(-1).expand_as(values)
    place = target if values.dim() == 2 else target.unsqueeze(-1).expand_as(values)
    return values.scatter(1, place, values.gather(1, index))
