"""FADE and its two probes ("Don't Let Gains FADE", arXiv 2607.01490).

SOURCE: [secondary]. No code of the paper is public; the formulas below follow a detailed reading
note of its v1 HTML, not checked against
a second source. The paper splits any advantage into positive and negative gradient mass (the
sign axis) spread over prompts of different pass rates (the difficulty axis), and probes each axis
with one knob on the mean-centred group advantage r_i - rbar, rbar the group's mean reward (its
pass rate p for binary rewards):

    power      A_i = (1 - rbar)^(alpha - 1) (r_i - rbar)           difficulty axis: alpha > 1 moves
               the mass toward hard prompts; masses m_S = m_F = p q^alpha (alpha = 1: Dr. GRPO)
    asym_grpo  A_i = r_i - rbar on correct samples (r_i >= rbar), (r_i - rbar) / delta on wrong
               ones: sign axis, m_F = m_S / delta; delta = 1 is mean-centred GRPO. Not the
               unrelated AsymGRPO of arXiv 2604.04894.

FADE is their product, with both knobs driven by training statistics:

    A_i   = (1 - rbar)^(alpha - 1) (r_i - rbar)            if r_i >= rbar
          = (1 - rbar)^(alpha - 1) (r_i - rbar) / delta    if r_i <  rbar
    alpha = clip(3 (1 - p_hat) / (2 p_hat), 1, alpha_max)     alpha_max = 3
    delta = clip(1 + H_hat - H_target, delta_min, 1)          delta_min = 0.3

p_hat is an exponential moving average of the batch solve rate (start 0.5), H_hat one of the
rollouts' mean token entropy (start: the entropy at the first step), both with coefficient
``ema`` = 0.02 (x_hat <- (1 - ema) x_hat + ema x). H_target is ``h_target`` nats when set, else
``h_target_ratio`` (0.5: "half the initial entropy works best") times the first step's entropy.
While the entropy stays above target delta = 1 (sign-balanced); below it negatives are amplified,
up to 1 / delta_min = 3.3x, which pushes entropy back up. The solve rate moves the difficulty
focus from hard (alpha = 3 while p_hat <= 1/3) to medium (alpha = 1 once p_hat >= 0.6).

Choices made where the reading is silent (each can be changed by whoever finds the paper's text):
  - the EMAs are updated with this step's batch before alpha and delta are computed, so the step's
    own statistics count (with 0.02 this moves them by 2% of the step's deviation);
  - the note's own update line keeps only 2% of the history; we use the conventional form above;
  - the solve rate is the loop's batch pass rate (``signals.batch_pass_rate``: correct = full
    score), or, without it, the fraction of valid rewards >= ``correct_at``;
  - without an entropy signal delta stays 1; a reward above 1 makes 1 - rbar negative: it is
    clamped at 0 (such a group gets no difficulty weight), so that no power of a negative is taken;
  - H_target is fixed at the first step (ratio x that step's entropy) and kept in the state.

The moving averages are the estimator's state (``FADEState``): kept across steps in
``signals.state``, saved in checkpoints, and logged every step as estimator/fade_alpha, fade_delta,
fade_p_hat, fade_h_hat and fade_h_target.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from advbench.estimators.group_stats import group_mean
from advbench.estimators.registry import AdvantageBatch, TrainingSignals, register

SOURCE = "arXiv 2607.01490 [secondary]"


def focal_asymmetric(rewards: torch.Tensor, valid: torch.Tensor, alpha: float, delta: float) -> torch.Tensor:
    """(1 - rbar)^(alpha - 1) (r - rbar), divided by delta where r < rbar: both FADE axes at once."""
    mean = group_mean(rewards, valid)
    centred = rewards - mean
    focus = (1.0 - mean).clamp(min=0.0).pow(alpha - 1.0)
    return focus * torch.where(centred < 0, centred / delta, centred)


@dataclass
class PowerParams:
    alpha: float = 2.0  # difficulty exponent: masses p q^alpha; 1 is Dr. GRPO's r - rbar

    def __post_init__(self) -> None:
        if not self.alpha >= 1:
            raise ValueError(f"power: alpha must be >= 1, got {self.alpha}")


@register("power", params=PowerParams, source=SOURCE)
def power(batch: AdvantageBatch, signals: TrainingSignals | None, params: PowerParams) -> torch.Tensor:
    """FADE's difficulty probe: (1 - rbar)^(alpha - 1) (r_i - rbar); alpha > 1 focuses hard prompts."""
    return focal_asymmetric(batch.rewards, batch.valid, params.alpha, 1.0)


@dataclass
class AsymGRPOParams:
    delta: float = 1.0  # negatives are divided by delta: < 1 amplifies them, 1 is mean-centred GRPO

    def __post_init__(self) -> None:
        if not self.delta > 0:
            raise ValueError(f"asym_grpo: delta must be > 0, got {self.delta}")


@register("asym_grpo", params=AsymGRPOParams, source=SOURCE)
def asym_grpo(batch: AdvantageBatch, signals: TrainingSignals | None, params: AsymGRPOParams) -> torch.Tensor:
    """FADE's sign probe: r_i - rbar on correct samples, (r_i - rbar) / delta on wrong ones."""
    return focal_asymmetric(batch.rewards, batch.valid, 1.0, params.delta)


@dataclass
class FADEParams:
    h_target_ratio: float = 0.5  # H_target = ratio x the first step's entropy ...
    h_target: float | None = None  # ... unless an absolute target in nats is set (it wins)
    alpha_max: float = 3.0
    delta_min: float = 0.3
    ema: float = 0.02  # coefficient of both moving averages
    p_start: float = 0.5  # p_hat before the first step
    correct_at: float = 1.0  # a reward >= this counts as solved when the loop gives no pass rate

    def __post_init__(self) -> None:
        if not self.h_target_ratio > 0:
            raise ValueError(f"fade: h_target_ratio must be > 0, got {self.h_target_ratio}")
        if self.h_target is not None and not self.h_target > 0:
            raise ValueError(f"fade: h_target must be > 0 (nats) or unset, got {self.h_target}")
        if not self.alpha_max >= 1:
            raise ValueError(f"fade: alpha_max must be >= 1, got {self.alpha_max}")
        if not 0 < self.delta_min <= 1:
            raise ValueError(f"fade: delta_min must be in (0, 1], got {self.delta_min}")
        if not 0 <= self.ema <= 1:
            raise ValueError(f"fade: ema must be in [0, 1], got {self.ema}")
        if not 0 < self.p_start <= 1:
            raise ValueError(f"fade: p_start must be in (0, 1], got {self.p_start}")


@dataclass
class FADEState:
    """FADE's moving averages; None until the first step has been seen."""

    p_hat: float | None = None
    h_hat: float | None = None
    h_target: float | None = None


def fade_alpha(p_hat: float, alpha_max: float) -> float:
    """clip(3 (1 - p_hat) / (2 p_hat), 1, alpha_max): hard focus at low solve rates."""
    raw = 3.0 * (1.0 - p_hat) / (2.0 * p_hat) if p_hat > 0 else alpha_max
    return min(alpha_max, max(1.0, raw))


def fade_delta(h_hat: float | None, h_target: float | None, delta_min: float) -> float:
    """clip(1 + H_hat - H_target, delta_min, 1): < 1 (negatives amplified) once below target."""
    if h_hat is None or h_target is None:
        return 1.0
    return min(1.0, max(delta_min, 1.0 + h_hat - h_target))


def _update(state: FADEState, batch: AdvantageBatch, signals: TrainingSignals, params: FADEParams) -> None:
    """Fold this step's solve rate and entropy into the moving averages."""
    solve = signals.batch_pass_rate
    if solve is None:
        solved = (batch.rewards >= params.correct_at) & batch.valid
        solve = float(solved.sum() / batch.valid.sum().clamp(min=1))
    p_hat = params.p_start if state.p_hat is None else state.p_hat
    state.p_hat = (1.0 - params.ema) * p_hat + params.ema * solve
    if signals.entropy is not None:
        if state.h_hat is None:  # the first step: H_hat starts at the entropy, H_target from it
            state.h_hat = signals.entropy
            state.h_target = params.h_target or params.h_target_ratio * signals.entropy
        else:
            state.h_hat = (1.0 - params.ema) * state.h_hat + params.ema * signals.entropy


@register("fade", params=FADEParams, source=SOURCE, state=FADEState)
def fade(batch: AdvantageBatch, signals: TrainingSignals | None, params: FADEParams) -> torch.Tensor:
    """FADE: power x asym_grpo, alpha from the solve rate's EMA, delta from the entropy's EMA."""
    assert signals is not None and signals.state is not None  # the registry gives a stateful one both
    state: FADEState = signals.state
    _update(state, batch, signals, params)
    alpha = fade_alpha(state.p_hat, params.alpha_max)
    delta = fade_delta(state.h_hat, state.h_target, params.delta_min)
    signals.diagnostics.update({"fade_alpha": alpha, "fade_delta": delta, "fade_p_hat": state.p_hat})
    if state.h_hat is not None:
        signals.diagnostics.update({"fade_h_hat": state.h_hat, "fade_h_target": state.h_target})
    return focal_asymmetric(batch.rewards, batch.valid, alpha, delta)
