"""gpg, opo, maxrl, risk_seeking, remax: hand-computed cases."""

import math

import pytest
import torch

from advbench import estimators
from advbench.estimators import AdvantageBatch


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
