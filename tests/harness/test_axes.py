import pytest
import torch

from advbench import estimators
from advbench.harness.axes import two_axes

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


def test_samples_left_out_of_the_update_keep_their_groups_pass_rate():
    batch = estimators.AdvantageBatch(REWARDS)
    psr = estimators.get("psr")
    axes = two_axes(psr(batch), REWARDS, REWARDS >= 1, MASK, trains=psr.selected(batch))
    # PSR's mass: group 0 (p = .5) 2 + 1 tokens, group 1 (p = 1) 2 + 1 + 2 + 1, group 2 (p = .25) 1
    assert axes["axes/mean_difficulty"] == pytest.approx((3 * 0.5 + 6 * 0.0 + 1 * 0.75) / 10)
    assert axes["axes/mass_frac_p1"] == pytest.approx(0.6)
    assert axes["axes/ess_fraction"] == pytest.approx(1.0)  # over the 7 samples that train, all A = 1


def test_token_level_advantages():
    advantages = torch.zeros(3, 4, 2)
    advantages[0, 0] = torch.tensor([1.0, -1.0])
    axes = two_axes(advantages, REWARDS, REWARDS >= 1, MASK)
    assert axes["axes/mass_pos"] == 1.0 and axes["axes/mass_neg"] == 1.0 and axes["axes/sign_balance"] == 0.0


# The FADE paper's decomposition ("where the gradient mass sits"): population masses m_S (positive, per
# sample) and m_F (negative) for binary rewards with pass rate p, q = 1 - p.
MASS_TABLE = {
    "reinforce": ({}, lambda p, q: (p, 0.0)),
    "dr_grpo": ({}, lambda p, q: (p * q, p * q)),
    "grpo": ({}, lambda p, q: ((p * q) ** 0.5, (p * q) ** 0.5)),
    "maxrl": ({}, lambda p, q: (q, q)),
    "power": ({"alpha": 3.0}, lambda p, q: (p * q**3, p * q**3)),
    "asym_grpo": ({"delta": 0.4}, lambda p, q: (p * q, p * q / 0.4)),
    "w_reinforce": ({"weight": 0.1}, lambda p, q: (0.1 * p, q)),
    "psr": ({}, lambda p, q: (p, 0.0)),
    "nsr": ({}, lambda p, q: (0.0, q)),
    "f_grpo": ({"gamma": 2.0}, lambda p, q: ((p * q) ** 0.5 * q**2, (p * q) ** 0.5 * q**2)),
}


@pytest.mark.parametrize("name", sorted(MASS_TABLE))
@pytest.mark.parametrize("p", [0.1, 0.25, 0.5, 0.8])
def test_two_axes_reproduce_the_catalogues_mass_table(name, p):
    size = 4000  # one large group: the sample std is the population one to 1e-4
    rewards = (torch.arange(size) < round(p * size)).float().unsqueeze(0)
    mask = torch.ones(1, size, 1, dtype=torch.bool)
    params, masses = MASS_TABLE[name]
    est = estimators.get(name)
    batch = estimators.AdvantageBatch(rewards, response_mask=mask)
    advantages = est(batch, **params)
    axes = two_axes(advantages, rewards, rewards >= 1, mask, trains=est.selected(batch, **params))
    m_s, m_f = masses(p, 1 - p)
    assert axes["axes/mass_pos"] / size == pytest.approx(m_s, rel=2e-3, abs=1e-6)
    assert axes["axes/mass_neg"] / size == pytest.approx(m_f, rel=2e-3, abs=1e-6)
    assert m_s - m_f == pytest.approx(float(advantages.mean()), abs=1e-3)  # m_S - m_F = E[A]
