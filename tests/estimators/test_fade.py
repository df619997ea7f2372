"""FADE and its probes against the formulas of the estimator catalogue (the FADE paper's, as read),
on hand-computed cases."""

import dataclasses
import math

import pytest
import torch

from advbench import estimators
from advbench.estimators.fade import FADEParams, FADEState, fade_alpha, fade_delta

# group 0: p = 1/4, group 1: p = 3/4, group 2: all wrong (no signal)
REWARDS = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])


def test_power_hand_computed():
    out = estimators.get("power")(estimators.AdvantageBatch(REWARDS), alpha=3.0)
    # group 0: (1 - 1/4)^2 (r - 1/4): correct .5625 * .75, wrong .5625 * -.25
    assert out[0].tolist() == pytest.approx([0.5625 * 0.75, -0.5625 * 0.25, -0.5625 * 0.25, -0.5625 * 0.25])
    # group 1: (1/4)^2 (r - 3/4)
    assert out[1].tolist() == pytest.approx([0.0625 * 0.25] * 3 + [-0.0625 * 0.75])
    assert out[2].abs().sum() == 0
    # alpha = 1 is Dr. GRPO's r - rbar
    torch.testing.assert_close(
        estimators.get("power")(estimators.AdvantageBatch(REWARDS), alpha=1.0),
        estimators.get("dr_grpo")(estimators.AdvantageBatch(REWARDS)),
    )


def test_asym_grpo_divides_negatives_only():
    out = estimators.get("asym_grpo")(estimators.AdvantageBatch(REWARDS), delta=0.5)
    assert out[0].tolist() == pytest.approx([0.75, -0.5, -0.5, -0.5])
    assert out[1].tolist() == pytest.approx([0.25, 0.25, 0.25, -1.5])


def test_alpha_and_delta_schedules():
    assert fade_alpha(0.5, 3.0) == pytest.approx(1.5)
    assert fade_alpha(1 / 3, 3.0) == pytest.approx(3.0)  # hard focus while p_hat <= 1/3
    assert fade_alpha(0.1, 3.0) == 3.0  # clipped at alpha_max
    assert fade_alpha(0.6, 3.0) == pytest.approx(1.0)  # medium focus once p_hat >= 0.6
    assert fade_alpha(0.9, 3.0) == 1.0
    assert fade_delta(1.0, 0.5, 0.3) == 1.0  # above target: balanced
    assert fade_delta(0.4, 0.5, 0.3) == pytest.approx(0.9)  # below target: negatives x 1/0.9
    assert fade_delta(0.0, 0.9, 0.3) == 0.3  # floored at delta_min
    assert fade_delta(None, None, 0.3) == 1.0


def test_fade_first_step_hand_computed_and_state_carried():
    fade = estimators.get("fade")
    signals = estimators.TrainingSignals(step=1, batch_pass_rate=0.25, entropy=2.0)
    out = fade(estimators.AdvantageBatch(REWARDS), signals)
    state = signals.state
    assert isinstance(state, FADEState)
    # p_hat = .98 * .5 + .02 * .25 = .495; H_hat = 2.0, H_target = .5 * 2.0 = 1.0 -> delta = 1
    assert state.p_hat == pytest.approx(0.495)
    assert (state.h_hat, state.h_target) == (2.0, 1.0)
    alpha = 1.5 * (1 - 0.495) / 0.495
    assert signals.diagnostics["fade_alpha"] == pytest.approx(alpha)
    assert signals.diagnostics["fade_delta"] == 1.0
    expected = estimators.get("power")(estimators.AdvantageBatch(REWARDS), alpha=alpha)
    torch.testing.assert_close(out, expected)

    # second step: entropy dropped far below target -> H_hat = .98 * 2 + .02 * 0 = 1.96: still above
    second = estimators.TrainingSignals(step=2, batch_pass_rate=0.25, entropy=0.0, state=state)
    fade(estimators.AdvantageBatch(REWARDS), second)
    assert state.h_hat == pytest.approx(1.96)
    assert second.diagnostics["fade_delta"] == 1.0


def test_fade_amplifies_negatives_below_the_entropy_target():
    fade = estimators.get("fade")
    state = FADEState(p_hat=0.6, h_hat=0.5, h_target=1.0)  # medium focus, entropy 0.5 under target
    signals = estimators.TrainingSignals(batch_pass_rate=0.6, entropy=0.5, state=state)
    out = fade(estimators.AdvantageBatch(REWARDS), signals, ema=0.0)
    # alpha = 1 (p_hat .6), delta = clip(1 + .5 - 1, .3, 1) = .5: negatives doubled
    assert signals.diagnostics["fade_delta"] == pytest.approx(0.5)
    assert out[0].tolist() == pytest.approx([0.75, -0.5, -0.5, -0.5])
    # the masses: M- = 2 M+ on every group (sign balance -1/3)
    assert (-out.clamp(max=0)).sum() == pytest.approx(2 * out.clamp(min=0).sum())


def test_absolute_target_wins_over_the_ratio():
    signals = estimators.TrainingSignals(batch_pass_rate=0.5, entropy=2.0)
    estimators.get("fade")(estimators.AdvantageBatch(REWARDS), signals, h_target=1.7, h_target_ratio=0.1)
    assert signals.state.h_target == 1.7
    assert signals.diagnostics["fade_delta"] == pytest.approx(1.0)


def test_without_loop_signals_fade_uses_the_batch_solve_rate():
    signals = estimators.TrainingSignals()
    estimators.get("fade")(estimators.AdvantageBatch(REWARDS), signals)
    assert signals.state.p_hat == pytest.approx(0.98 * 0.5 + 0.02 * (4 / 12))
    assert signals.state.h_hat is None and signals.diagnostics["fade_delta"] == 1.0


def test_state_round_trips_through_asdict():
    fade = estimators.get("fade")
    state = FADEState(p_hat=0.3, h_hat=1.2, h_target=0.8)
    assert fade.load_state(dataclasses.asdict(state)) == state
    assert estimators.get("grpo").new_state() is None


@pytest.mark.parametrize(
    "knob, value, message",
    [
        ("delta_min", 0.0, "delta_min must be in"),
        ("delta_min", 1.5, "delta_min must be in"),
        ("alpha_max", 0.5, "alpha_max must be >= 1"),
        ("h_target", 0.0, "h_target must be > 0"),
        ("h_target", -1.0, "h_target must be > 0"),
        ("h_target_ratio", 0.0, "h_target_ratio must be > 0"),
        ("ema", -0.1, "ema must be in"),
    ],
)
def test_knobs_out_of_domain_are_refused_by_name(knob, value, message):
    with pytest.raises(ValueError, match=message):
        FADEParams(**{knob: value})


def test_fade_stays_finite_with_rewards_above_one():
    rewards = torch.tensor([[2.0, 0.0, 1.0]])
    out = estimators.get("fade")(estimators.AdvantageBatch(rewards), estimators.TrainingSignals(entropy=1.0))
    assert torch.isfinite(out).all()
    assert not math.isnan(float(out.sum()))
