"""REINFORCE++ (Hu et al. 2025, arXiv 2501.03262): advantages whitened over the batch's tokens.

    reinforce_pp:           G_t = sum_{s >= t} gamma^(s - t) r_s with the outcome reward r_i on
                            the last response token, then whitened over every response token
                            of the batch (token-level output [P, G, T])
    reinforce_pp_baseline:  (r_i - group mean), broadcast to the tokens, then whitened over the
                            batch's tokens (the variant with a group baseline, Sec. 3 of the paper)

Without token-level inputs each completion counts as a single token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from estimators.group_stats import group_mean, token_weights, whiten_tokens
from estimators.registry import AdvantageBatch, NoParams, TrainingSignals, register


@dataclass
class ReinforcePPParams:
    gamma: float = 1.0  # discount from the last token backwards

    def __post_init__(self) -> None:
        if not 0 < self.gamma <= 1:
            raise ValueError(f"reinforce_pp: gamma must be in (0, 1], got {self.gamma}")


@register("reinforce_pp", params=ReinforcePPParams, source="arXiv 2501.03262", token_level=True)
def reinforce_pp(
    batch: AdvantageBatch, signals: TrainingSignals | None, params: ReinforcePPParams
) -> torch.Tensor:
    """REINFORCE++: discounted returns of the outcome reward, whitened over the batch's tokens."""
    if params.gamma == 1.0:  # every token of a completion has the return r_i
        return whiten_completions(batch.rewards, batch.valid, batch.response_mask)
    weights = token_weights(batch.valid, batch.response_mask)
    # Tokens after position t in each response: the outcome reward sits on the last one.
    tokens_after = weights.flip(-1).cumsum(-1).flip(-1) - weights
    returns = batch.rewards.unsqueeze(-1) * params.gamma**tokens_after * (weights > 0)
    return whiten_tokens(returns, weights)


@register("reinforce_pp_baseline", source="arXiv 2501.03262", token_level=True)
def reinforce_pp_baseline(
    batch: AdvantageBatch, signals: TrainingSignals | None, params: NoParams
) -> torch.Tensor:
    """REINFORCE++ with a group baseline: (r_i - group mean), whitened over the batch's tokens."""
    centred = batch.rewards - group_mean(batch.rewards, batch.valid)
    return whiten_completions(centred, batch.valid, batch.response_mask)


def whiten_completions(
    values: torch.Tensor, valid: torch.Tensor, response_mask: torch.Tensor | None, eps: float = 1e-8
) -> torch.Tensor:
    """whiten_tokens for a value constant over each completion's tokens ([P, G]), in O(P G) work.

    The token statistics are those of the completion values weighted by their token counts; only
    the count and the final broadcast to [P, G, T] touch every token.
    """
    mask = valid.unsqueeze(-1) if response_mask is None else response_mask.bool() & valid.unsqueeze(-1)
    counts = mask.sum(-1, dtype=values.dtype)
    total = counts.sum().clamp(min=1.0)
    mean = (values * counts).sum() / total
    std = ((((values - mean) ** 2) * counts).sum() / total).sqrt()
    return torch.where(mask, ((values - mean) / (std + eps)).unsqueeze(-1), 0.0)
