"""gpg, opo, maxrl, risk_seeking, remax: hand-computed cases."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advbench import estimators
from advbench.estimators import AdvantageBatch
from tests.estimators.properties import group_batches


def test_gpg_scales_by_batch_over_informative_samples():
    # B = 4 samples, 2 of them in the all-equal group: alpha = 4 / 2
    rewards = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert torch.allclose(
        estimators.get("gpg")(AdvantageBatch(rewards)), torch.tensor([[1.0, -1.0], [0.0, 0.0]])
    )
    assert torch.allclose(
        estimators.get("gpg")(AdvantageBatch(rewards), f_norm=2.0), torch.tensor([[0.5, -0.5], [0.0, 0.0]])
    )


def test_opo_length_weighted_baseline():
    rewards = torch.tensor([[1.0, 0.0, 1.0]])
    # b = (3*1 + 1*0 + 1*1) / 5 = 0.8
    out = estimators.get("opo")(AdvantageBatch(rewards, lengths=torch.tensor([[3, 1, 1]])))
    assert torch.allclose(out, torch.tensor([[0.2, -0.8, 0.2]]))
    # without lengths: the plain group mean 2/3
    assert torch.allclose(
        estimators.get("opo")(AdvantageBatch(rewards)), torch.tensor([[1 / 3, -2 / 3, 1 / 3]])
    )


def test_maxrl_gradient_of_log_pass_rate():
    maxrl = estimators.get("maxrl")
    assert torch.allclose(
        maxrl(AdvantageBatch(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))), torch.tensor([[3.0, -1, -1, -1]])
    )
    assert torch.allclose(
        maxrl(AdvantageBatch(torch.tensor([[1.0, 1.0, 1.0, 0.0]]))),
        torch.tensor([[1 / 3, 1 / 3, 1 / 3, -1.0]]),
    )
    assert torch.equal(maxrl(AdvantageBatch(torch.zeros(1, 3))), torch.zeros(1, 3))


def test_risk_seeking_exponential_utility():
    risk = estimators.get("risk_seeking")
    # beta=1: softmax(1, 0) = e/(e+1), 1/(e+1); A = (2 w - 1) / 1
    w = math.e / (math.e + 1)
    assert torch.allclose(
        risk(AdvantageBatch(torch.tensor([[1.0, 0.0]])), beta=1.0),
        torch.tensor([[2 * w - 1, 2 * (1 - w) - 1]]),
        atol=1e-6,
    )
    w2 = math.exp(2) / (math.exp(2) + 1)
    assert torch.allclose(
        risk(AdvantageBatch(torch.tensor([[1.0, 0.0]])), beta=2.0),
        torch.tensor([[(2 * w2 - 1) / 2, (2 * (1 - w2) - 1) / 2]]),
        atol=1e-6,
    )
    # a small beta approaches r - mean
    assert torch.allclose(
        risk(AdvantageBatch(torch.tensor([[1.0, 0.0, 0.0]])), beta=1e-4),
        torch.tensor([[2 / 3, -1 / 3, -1 / 3]]),
        atol=1e-3,
    )
    with pytest.raises(ValueError, match="beta must be nonzero"):
        risk(AdvantageBatch(torch.zeros(1, 2)), beta=0.0)


def test_remax_greedy_baseline():
    batch = AdvantageBatch(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), greedy_rewards=torch.tensor([1.0, 0.0]))
    assert torch.equal(estimators.get("remax")(batch), torch.tensor([[0.0, -1.0], [0.0, 0.0]]))
    assert estimators.get("remax").needs == ("greedy_rewards",)
    with pytest.raises(ValueError, match="greedy_rewards"):
        estimators.get("remax")(AdvantageBatch(torch.zeros(1, 2)))


@settings(max_examples=60, deadline=None)
@given(data=group_batches(), seed=st.integers(0, 1000), token_level=st.booleans())
def test_shuffle_within_groups_keeps_each_groups_values_and_the_invalid_places(data, seed, token_level):
    from advbench.estimators.group_stats import shuffle_within_groups

    rewards, valid = data
    values = torch.arange(rewards.numel(), dtype=torch.float32).view_as(rewards) * valid
    if token_level:
        values = values.unsqueeze(-1).expand(*values.shape, 3).clone()
    out = shuffle_within_groups(values, valid, torch.Generator().manual_seed(seed))
    assert torch.equal(out[~valid], values[~valid])
    for row in range(values.shape[0]):
        keep = valid[row]
        assert sorted(out[row][keep].flatten().tolist()) == sorted(values[row][keep].flatten().tolist())
    again = shuffle_within_groups(values, valid, torch.Generator().manual_seed(seed))
    assert torch.equal(out, again)  # the step's seed decides the permutation


def test_shuffle_within_groups_moves_values_between_samples():
    from advbench.estimators.group_stats import shuffle_within_groups

    values = torch.arange(64.0).view(1, 64)
    out = shuffle_within_groups(values, torch.ones(1, 64, dtype=torch.bool), torch.Generator().manual_seed(0))
    assert (out != values).float().mean() > 0.9
