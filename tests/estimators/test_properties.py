"""Properties every registered estimator must have, and those of each kind of baseline."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import estimators
from estimators import AdvantageBatch, TrainingSignals
from tests.estimators.properties import degenerate_batches, group_batches

SIGNALS = TrainingSignals(step=3, total_steps=10, batch_pass_rate=0.4, entropy=0.5, initial_entropy=1.0)
GROUP_CENTRED = ["grpo", "rloo"]  # subtract a per-group baseline: shift invariant, zero-sum per group


@pytest.mark.parametrize("name", estimators.names())
@settings(max_examples=60, deadline=None)
@given(data=degenerate_batches())
def test_finite_on_degenerate_groups(name, data):
    rewards, valid = data
    advantages = estimators.get(name)(AdvantageBatch(rewards, valid=valid), SIGNALS)
    assert torch.isfinite(advantages).all()
    assert (advantages[~valid] == 0).all()


@pytest.mark.parametrize("name", estimators.names())
@settings(max_examples=60, deadline=None)
@given(data=group_batches(), seed=st.integers(0, 1000))
def test_permutation_equivariant_within_groups(name, data, seed):
    rewards, valid = data
    est = estimators.get(name)
    perm = torch.randperm(rewards.shape[1], generator=torch.Generator().manual_seed(seed))
    base = est(AdvantageBatch(rewards, valid=valid), SIGNALS)
    permuted = est(AdvantageBatch(rewards[:, perm], valid=valid[:, perm]), SIGNALS)
    assert torch.allclose(permuted, base[:, perm], atol=1e-5)


@pytest.mark.parametrize("name", estimators.names())
@settings(max_examples=60, deadline=None)
@given(rewards=st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=1, max_size=24))
def test_finite_on_arbitrary_real_rewards(name, rewards):
    group = len(rewards) if len(rewards) % 2 else len(rewards) // 2 or 1
    batch = torch.tensor(rewards[: (len(rewards) // group) * group]).view(-1, group)
    assert torch.isfinite(estimators.get(name)(AdvantageBatch(batch), SIGNALS)).all()


@pytest.mark.parametrize("name", estimators.names())
@settings(max_examples=40, deadline=None)
@given(data=group_batches())
def test_shape_and_dtype(name, data):
    rewards, valid = data
    advantages = estimators.get(name)(AdvantageBatch(rewards, valid=valid))
    assert advantages.shape == rewards.shape and advantages.dtype == torch.float32


@pytest.mark.parametrize("name", GROUP_CENTRED)
@settings(max_examples=80, deadline=None)
@given(data=group_batches(), shift=st.integers(-10, 10))
def test_group_centred_are_shift_invariant(name, data, shift):
    rewards, valid = data
    est = estimators.get(name)
    base = est(AdvantageBatch(rewards, valid=valid))
    shifted = est(AdvantageBatch(rewards + shift, valid=valid))
    assert torch.allclose(base, shifted, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("name", GROUP_CENTRED)
@settings(max_examples=80, deadline=None)
@given(data=group_batches())
def test_group_centred_sum_to_zero_per_group(name, data):
    rewards, valid = data
    advantages = estimators.get(name)(AdvantageBatch(rewards, valid=valid))
    assert torch.allclose(advantages.sum(dim=1), torch.zeros(rewards.shape[0]), atol=1e-3)


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
