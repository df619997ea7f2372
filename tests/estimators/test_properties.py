"""Properties every registered estimator must have, and those of each kind of baseline."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advbench import estimators
from advbench.estimators import AdvantageBatch, TrainingSignals
from tests.estimators.properties import T, degenerate_batches, full_batch, group_batches


def signals() -> TrainingSignals:
    """Fresh signals for each call: a stateful estimator (FADE) keeps its state in them."""
    return TrainingSignals(step=3, total_steps=10, batch_pass_rate=0.4, entropy=0.5, initial_entropy=1.0)


# Subtract a per-group baseline that moves with the rewards: invariant to adding a constant.
SHIFT_INVARIANT = [
    "grpo",
    "rloo",
    "dr_grpo",
    "gpg",
    "mc_grpo",
    "opo",
    "risk_seeking",
    "reinforce_pp_baseline",
    "reinforce_batch",
]
# Advantages that sum to zero over each group's valid samples.
ZERO_SUM_PER_GROUP = ["grpo", "rloo", "dr_grpo", "gpg", "risk_seeking", "maxrl"]
GROUP_CENTRED = ZERO_SUM_PER_GROUP  # kept for the grpo/rloo relation test below


@pytest.mark.parametrize("name", estimators.names())
@settings(max_examples=60, deadline=None)
@given(data=degenerate_batches())
def test_finite_on_degenerate_groups(name, data):
    rewards, valid = data
    advantages = estimators.get(name)(full_batch(rewards, valid), signals())
    assert torch.isfinite(advantages).all()
    assert (advantages[~valid] == 0).all()


@pytest.mark.parametrize("name", estimators.names())
@settings(max_examples=40, deadline=None)
@given(data=group_batches(), seed=st.integers(0, 100))
def test_nan_reward_on_an_invalid_sample_never_reaches_the_valid_ones(name, data, seed):
    rewards, valid = data
    est = estimators.get(name)
    clean = est(full_batch(rewards, valid, seed), signals())
    poisoned = est(full_batch(rewards.masked_fill(~valid, float("nan")), valid, seed), signals())
    assert torch.isfinite(poisoned).all()
    torch.testing.assert_close(poisoned, clean)


@pytest.mark.parametrize("name", estimators.names())
@settings(max_examples=40, deadline=None)
@given(data=group_batches(), seed=st.integers(0, 100))
def test_samples_left_out_of_the_update_get_zero_advantage(name, data, seed):
    rewards, valid = data
    est = estimators.get(name)
    batch = full_batch(rewards, valid, seed)
    selected = est.selected(batch)
    assert not (selected & ~valid).any()
    advantages = est(batch, signals())
    assert (advantages[~selected] == 0).all()


@pytest.mark.parametrize("name", estimators.names())
@settings(max_examples=60, deadline=None)
@given(data=group_batches(), seed=st.integers(0, 1000))
def test_permutation_equivariant_within_groups(name, data, seed):
    rewards, valid = data
    est = estimators.get(name)
    perm = torch.randperm(rewards.shape[1], generator=torch.Generator().manual_seed(seed))
    base = est(full_batch(rewards, valid, seed), signals())
    permuted = est(full_batch(rewards, valid, seed, perm=perm), signals())
    assert torch.allclose(permuted, base[:, perm], atol=1e-5)


@pytest.mark.parametrize("name", estimators.names())
@settings(max_examples=60, deadline=None)
@given(rewards=st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=1, max_size=24))
def test_finite_on_arbitrary_real_rewards(name, rewards):
    group = len(rewards) if len(rewards) % 2 else len(rewards) // 2 or 1
    batch = torch.tensor(rewards[: (len(rewards) // group) * group]).view(-1, group)
    assert torch.isfinite(
        estimators.get(name)(full_batch(batch, torch.ones_like(batch, dtype=torch.bool)), signals())
    ).all()


@pytest.mark.parametrize("name", estimators.names())
@settings(max_examples=40, deadline=None)
@given(data=group_batches())
def test_shape_and_dtype(name, data):
    rewards, valid = data
    est = estimators.get(name)
    advantages = est(full_batch(rewards, valid), signals())
    expected = rewards.shape + ((T,) if est.token_level else ())
    assert advantages.shape == expected and advantages.dtype == torch.float32


@pytest.mark.parametrize("name", SHIFT_INVARIANT)
@settings(max_examples=80, deadline=None)
@given(data=group_batches(), shift=st.integers(-10, 10))
def test_baselined_estimators_are_shift_invariant(name, data, shift):
    rewards, valid = data
    est = estimators.get(name)
    base = est(full_batch(rewards, valid))
    shifted = est(full_batch(rewards + shift, valid))
    assert torch.allclose(base, shifted, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("name", ZERO_SUM_PER_GROUP)
@settings(max_examples=80, deadline=None)
@given(data=group_batches())
def test_sum_to_zero_per_group(name, data):
    rewards, valid = data
    if name == "maxrl":  # r / p - 1 needs rewards >= 0 (a pass rate), as maxrl's paper assumes
        rewards = rewards.abs()
    advantages = estimators.get(name)(full_batch(rewards, valid))
    assert torch.allclose(advantages.sum(dim=1), torch.zeros(rewards.shape[0]), atol=1e-3)


def test_at_least_twenty_estimators_are_registered():
    assert len(estimators.names()) >= 20


@settings(max_examples=80, deadline=None)
@given(data=group_batches(), shift=st.integers(-10, 10))
def test_reinforce_batch_is_shift_invariant_and_zero_sum_over_batch(data, shift):
    rewards, valid = data
    est = estimators.get("reinforce_batch")
    base = est(AdvantageBatch(rewards, valid=valid))
    assert torch.allclose(base, est(AdvantageBatch(rewards + shift, valid=valid)), atol=1e-3)
    assert abs(float(base[valid].sum())) < 1e-3 * max(1, int(valid.sum()))


@settings(max_examples=60, deadline=None)
@given(data=group_batches(min_group=2, binary=True))
def test_grpo_is_rloo_rescaled_on_full_groups(data):
    # With every sample valid: rloo = G/(G-1) (r - p) and grpo = (r - p) / (std + eps).
    rewards, _ = data
    batch = AdvantageBatch(rewards)
    rloo, grpo = estimators.get("rloo")(batch), estimators.get("grpo")(batch, eps=1e-6)
    group = rewards.shape[1]
    std = rewards.std(dim=1, keepdim=True)
    assert torch.allclose(rloo * (group - 1) / group, grpo * (std + 1e-6), atol=1e-4)
