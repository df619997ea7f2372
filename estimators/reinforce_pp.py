"""REINFORCE++ (Hu et al. 2025, arXiv 2501.03262) [peer: OpenRLHF, verl]: advantages whitened
over the batch's tokens.

    reinforce_pp:           G_t = sum_{s >= t} gamma^(s - t) r_s with the outcome reward r_i on
                            the last response token, then whitened over every response token
                            of the batch (token-level output [P, G, T]). With ``kl_coef`` > 0 the
                            per-token KL penalty to the reference policy is folded into the token
                            rewards first, r_s -= kl_coef (log mu_s - log pi_ref_s) (k1 on the
                            sampled token, mu the rollout policy): the paper's and OpenRLHF's form;
                            verl leaves it out, which is our default (kl_coef = 0)
    reinforce_pp_baseline:  (r_i - group mean), broadcast to the tokens, then whitened over the
                            batch's tokens (the variant with a group baseline, Sec. 3 of the paper)

Without token-level inputs each completion counts as a single token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from advbench.estimators.group_stats import group_mean, token_weights, whiten_tokens
from advbench.estimators.registry import AdvantageBatch, NoParams, TrainingSignals, register


@dataclass
class ReinforcePPParams:
    gamma: float = 1.0  # discount from the last token backwards
    kl_coef: float = 0.0  # KL to the reference folded into the token rewards; 0 = off (verl's form)
    # the whitening's variance over N response tokens divides by N; True: by N - 1 (verl's masked_whiten)
    unbiased: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.gamma <= 1:
            raise ValueError(f"reinforce_pp: gamma must be in (0, 1], got {self.gamma}")
        if self.kl_coef < 0:
            raise ValueError(f"reinforce_pp: kl_coef must be >= 0, got {self.kl_coef}")


def _needs(params: ReinforcePPParams) -> tuple[str, ...]:
    return ("ref_logprobs",) if params.kl_coef > 0 else ()


@register(
    "reinforce_pp", params=ReinforcePPParams, source="arXiv 2501.03262 [peer]", token_level=True, needs=_needs
)
def reinforce_pp(
    batch: AdvantageBatch, signals: TrainingSignals | None, params: ReinforcePPParams
) -> torch.Tensor:
    """REINFORCE++: discounted returns of the outcome reward (and KL), whitened over the batch's tokens."""
    if params.gamma == 1.0 and params.kl_coef == 0:  # every token of a completion has the return r_i
        return _bessel(whiten_completions(batch.rewards, batch.valid, batch.response_mask), batch, params)
    weights = token_weights(batch.valid, batch.response_mask)
    # The outcome reward sits on each response's last token.
    tokens_after = weights.flip(-1).cumsum(-1).flip(-1) - weights
    token_rewards = batch.rewards.unsqueeze(-1) * ((tokens_after == 0) & (weights > 0))
    if params.kl_coef > 0:
        if batch.ref_logprobs is None or batch.logprobs is None:
            raise ValueError("reinforce_pp with kl_coef > 0 needs the rollout and reference log-probs")
        token_rewards = token_rewards - params.kl_coef * (batch.logprobs - batch.ref_logprobs) * weights
    returns = torch.zeros_like(token_rewards)
    running = torch.zeros_like(token_rewards[..., 0])
    for t in reversed(range(token_rewards.shape[-1])):  # G_t = r_t + gamma G_{t+1}
        running = token_rewards[..., t] + params.gamma * running
        returns[..., t] = running
    return _bessel(whiten_tokens(returns * (weights > 0), weights), batch, params)


def _bessel(whitened: torch.Tensor, batch: AdvantageBatch, params: ReinforcePPParams) -> torch.Tensor:
    """The whitening as verl's masked_whiten when ``unbiased``: variance over N - 1 tokens, not N
    (both whitenings here divide by N, the N tokens that count: ``token_weights``)."""
    if not params.unbiased:
        return whitened
    count = token_weights(batch.valid, batch.response_mask).sum()
    if count <= 1:
        return whitened
    return whitened * torch.sqrt((count - 1) / count)


@register("reinforce_pp_baseline", source="arXiv 2501.03262 [peer]", token_level=True)
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
