"""FADE: Focal Advantage with Dynamic Entropy ("Don't Let Gains FADE", arXiv 2607.01490).

THIS IS A RECONSTRUCTION. The paper's exact formula is not public in what we have; this follows
the reading in shared/ESTIMATORS.md of its abstract: any advantage splits into positive and
negative gradient mass (the sign axis) spread over prompts of different pass rates (the difficulty
axis); exploration wants balanced signs and a hard-prompt focus, exploitation wants negatives
suppressed and a medium-difficulty focus, and FADE moves between the two as the policy entropy
falls. Every knob below is a config key, and the schedule's state is logged every step
(estimator/fade_phase, fade_alpha, fade_beta, fade_lambda_neg), so the reconstruction can be
examined and changed.

For a group with pass rate p (fraction of correct samples) and mean reward rbar:
    a_i   = r_i - rbar                                        mean-centred group advantage
    w(p)  = p^alpha_t (1 - p)^beta_t, normalised to mean 1 over the batch's informative groups
    A_i   = w(p) * (lambda_pos * max(a_i, 0) - lambda_neg_t * max(-a_i, 0))
Schedule, from the rollout policy's entropy H against its value H_0 at step 0:
    x     = clip((1 - H / H_0) / (1 - rho), 0, 1)             0: explore ... 1: exploit
    (alpha_t, beta_t) = (1 - x) (alpha_hard, beta_hard) + x (alpha_medium, beta_medium)
    lambda_neg_t      = (1 - x) * 1 + x * lambda_min
Defaults: hard focus w = (1 - p), medium focus w = p (1 - p), lambda_min = 0.5, rho = 0.5
(exploitation is reached when the entropy has halved).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from estimators.group_stats import group_mean
from estimators.registry import AdvantageBatch, TrainingSignals, register


@dataclass
class FADEParams:
    rho: float = 0.5  # entropy ratio H / H_0 at which the schedule reaches exploitation
    alpha_hard: float = 0.0  # exploration: w = p^0 (1 - p)^1, hard prompts weigh most
    beta_hard: float = 1.0
    alpha_medium: float = 1.0  # exploitation: w = p (1 - p), medium prompts weigh most
    beta_medium: float = 1.0
    lambda_pos: float = 1.0
    lambda_min: float = 0.5  # weight of negative samples once exploiting (1 while exploring)
    correct_at: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.rho < 1:
            raise ValueError(f"fade: rho must be in [0, 1), got {self.rho}")
        for name in ("alpha_hard", "beta_hard", "alpha_medium", "beta_medium", "lambda_pos", "lambda_min"):
            if getattr(self, name) < 0:
                raise ValueError(f"fade: {name} must be >= 0, got {getattr(self, name)}")


def fade_phase(signals: TrainingSignals | None, rho: float) -> float:
    """x in [0, 1] from the entropy drop; 0 (explore) when the loop measured no entropy."""
    if signals is None or not signals.entropy or not signals.initial_entropy:
        return 0.0
    return min(1.0, max(0.0, (1.0 - signals.entropy / signals.initial_entropy) / (1.0 - rho)))


@register("fade", params=FADEParams, source="arXiv 2607.01490 (reconstruction, see docstring)")
def fade(batch: AdvantageBatch, signals: TrainingSignals | None, params: FADEParams) -> torch.Tensor:
    """FADE (reconstructed): sign- and difficulty-weighted group advantage on an entropy schedule."""
    x = fade_phase(signals, params.rho)
    alpha = (1 - x) * params.alpha_hard + x * params.alpha_medium
    beta = (1 - x) * params.beta_hard + x * params.beta_medium
    lambda_neg = (1 - x) * 1.0 + x * params.lambda_min

    centred = batch.rewards - group_mean(batch.rewards, batch.valid)
    pass_rate = group_mean((batch.rewards >= params.correct_at).float(), batch.valid)
    weight = pass_rate.pow(alpha) * (1.0 - pass_rate).pow(beta)
    informative = (centred.abs() * batch.valid).sum(1, keepdim=True) > 0
    mean_weight = (weight * informative).sum() / informative.sum().clamp(min=1)
    weight = torch.where(mean_weight > 0, weight / mean_weight.clamp(min=1e-12), torch.zeros_like(weight))
    advantages = weight * (params.lambda_pos * centred.clamp(min=0) - lambda_neg * (-centred).clamp(min=0))

    if signals is not None:
        signals.diagnostics.update(
            {"fade_phase": x, "fade_alpha": alpha, "fade_beta": beta, "fade_lambda_neg": lambda_neg}
        )
    return advantages
