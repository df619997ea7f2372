import pytest
import torch

import estimators
from harness.axes import two_axes

REWARDS = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
# completions 0 and 2 have two tokens, 1 and 3 one
MASK = torch.tensor([[True, True], [True, False], [True, True], [True, False]]).expand(3, 4, 2)


def test_hand_computed_axes_of_dr_grpo():
    advantages = estimators.get("dr_grpo")(estimators.AdvantageBatch(REWARDS))
    axes = two_axes(advantages, REWARDS, REWARDS >= 1, MASK)
    # group 0: A = +-.5, token weights 2,1,2,1 -> M+ = 1.5, M- = 1.5
    # group 2: A = -.25 x3, +.75 -> M+ = .75, M- = .25 * (2 + 1 + 2) = 1.25
    assert axes["axes/mass_pos"] == pytest.approx(2.25)
    assert axes["axes/mass_neg"] == pytest.approx(2.75)
    assert axes["axes/sign_balance"] == pytest.approx(-0.1)
    # mass 3 at p = .5 and 2 at p = .25: mean 1 - p = (3 * .5 + 2 * .75) / 5
    assert axes["axes/mean_difficulty"] == pytest.approx(0.6)
    assert axes["axes/mass_frac_0_25"] == pytest.approx(0.4)
    assert axes["axes/mass_frac_25_50"] == pytest.approx(0.6)
    assert axes["axes/zero_signal_groups"] == pytest.approx(1 / 3)
    # ESS over completions: |A| = .5 x4, 0 x4, .25 x3, .75 -> (2 + 1.5)^2 / (1 + .1875 + .5625)
    assert axes["axes/ess"] == pytest.approx(3.5**2 / 1.75)


def test_sign_only_estimators_sit_at_the_ends_and_aggregation_changes_weights():
    psr = estimators.get("psr")(estimators.AdvantageBatch(REWARDS))
    nsr = estimators.get("nsr")(estimators.AdvantageBatch(REWARDS))
    assert two_axes(psr, REWARDS, REWARDS >= 1, MASK)["axes/sign_balance"] == 1.0
    assert two_axes(nsr, REWARDS, REWARDS >= 1, MASK)["axes/sign_balance"] == -1.0
    # PSR puts mass on the all-correct group (p = 1), which centred estimators never do
    assert two_axes(psr, REWARDS, REWARDS >= 1, MASK)["axes/mass_frac_p1"] > 0
    advantages = estimators.get("dr_grpo")(estimators.AdvantageBatch(REWARDS))
    per_sequence = two_axes(advantages, REWARDS, REWARDS >= 1, MASK, aggregation="seq_mean_token_mean")
    # each completion weighs 1: group 0 balanced, group 2: M+ .75, M- .75 -> balance 0
    assert per_sequence["axes/sign_balance"] == pytest.approx(0.0)


def test_token_level_advantages():
    advantages = torch.zeros(3, 4, 2)
    advantages[0, 0] = torch.tensor([1.0, -1.0])
    axes = two_axes(advantages, REWARDS, REWARDS >= 1, MASK)
    assert axes["axes/mass_pos"] == 1.0 and axes["axes/mass_neg"] == 1.0 and axes["axes/sign_balance"] == 0.0
