import math

import pytest
import torch

from advbench import estimators
from advbench.estimators import AdvantageBatch
from tests.estimators.properties import degenerate_batches, group_batches  # noqa: F401

grpo = estimators.get("grpo")


def test_hand_computed_binary_group():
    # rewards 1,0,0,1: mean 0.5, unbiased std sqrt(1/3) -> A = +-0.5 / sqrt(1/3) = +-0.8660
    advantages = grpo(AdvantageBatch(torch.tensor([[1.0, 0.0, 0.0, 1.0]])))
    expected = 0.5 / math.sqrt(1 / 3)
    assert torch.allclose(advantages, torch.tensor([[expected, -expected, -expected, expected]]), atol=1e-5)


def test_hand_computed_biased_std_and_eps():
    # rewards 3,1: mean 2, population std 1 -> A = (+1, -1) / (1 + 0.5)
    advantages = grpo(AdvantageBatch(torch.tensor([[3.0, 1.0]])), unbiased_std=False, eps=0.5)
    assert torch.allclose(advantages, torch.tensor([[1 / 1.5, -1 / 1.5]]))


def test_invalid_completions_are_excluded_and_zeroed():
    # The invalid 100.0 must not enter the mean/std: the valid ones are 1,0 -> +-1/sqrt(0.5)
    batch = AdvantageBatch(torch.tensor([[1.0, 0.0, 100.0]]), valid=torch.tensor([[True, True, False]]))
    advantages = grpo(batch)
    expected = 0.5 / math.sqrt(0.5)
    assert torch.allclose(advantages, torch.tensor([[expected, -expected, 0.0]]), atol=1e-5)


def test_identical_rewards_give_zero():
    assert torch.equal(grpo(AdvantageBatch(torch.full((3, 5), 0.7))), torch.zeros(3, 5))


def test_eps_must_be_positive():
    with pytest.raises(ValueError, match="eps must be > 0"):
        grpo(AdvantageBatch(torch.zeros(1, 2)), eps=0.0)


def test_dr_grpo_is_mean_centred_without_std():
    dr = estimators.get("dr_grpo")
    assert torch.allclose(
        dr(AdvantageBatch(torch.tensor([[1.0, 0.0, 0.0]]))), torch.tensor([[2 / 3, -1 / 3, -1 / 3]])
    )
    assert torch.allclose(dr(AdvantageBatch(torch.tensor([[2.0, 4.0]]))), torch.tensor([[-1.0, 1.0]]))


def test_mc_grpo_as_released_binary_rewards_give_plus_minus_1000():
    mc = estimators.get("mc_grpo")
    assert mc.extra_samples == 1  # G + 1 samples
    # G + 1 = 5: median 0, MAD = median |r - 0| = 0 -> the minority gets +1 / 1e-3
    batch = AdvantageBatch(torch.tensor([[0.0, 1.0, 0.0, 1.0, 0.0]]))
    out = mc(batch)
    assert out[0].tolist() == pytest.approx([0.0, 1000.0, 0.0, 1000.0, 0.0], rel=1e-5)
    # the pivot (sorted position (5 - 1) // 2 = 2: the third zero by index, sample 4) does not train
    assert mc.selected(batch).tolist() == [[True, True, True, True, False]]


def test_mc_grpo_mad_on_real_rewards_and_the_pivot():
    mc = estimators.get("mc_grpo")
    # median of 0,1,2,10,3 is 2; |deviations| 2,1,0,8,1 have median 1 -> (r - 2) / (1 + 1e-3)
    batch = AdvantageBatch(torch.tensor([[0.0, 1.0, 2.0, 10.0, 3.0]]))
    expected = torch.tensor([[-2.0, -1.0, 0.0, 8.0, 1.0]]) / 1.001
    torch.testing.assert_close(mc(batch), expected)
    assert mc.selected(batch).tolist() == [[True, True, False, True, True]]  # the median sample
    # invalid samples are never the pivot; 4 valid samples have no median sample: none left out
    valid = torch.tensor([[True, True, False, True, True]])
    assert mc.selected(AdvantageBatch(batch.rewards, valid)).tolist() == [[True, True, False, True, True]]
    valid = torch.tensor([[True, False, False, True, True]])  # 0, 10, 3: the pivot is the 3
    assert mc.selected(AdvantageBatch(batch.rewards, valid)).tolist() == [[True, False, False, True, False]]


def test_mc_grpo_std_variant():
    out = estimators.get("mc_grpo_std")(AdvantageBatch(torch.tensor([[0.0, 0.0, 1.0]])))
    # median 0, unbiased std sqrt(1/3); sample 1 is the pivot and gets 0
    assert out[0].tolist() == pytest.approx([0.0, 0.0, 1 / math.sqrt(1 / 3)], rel=1e-5)


def test_f_grpo_focal_weight():
    # 1,0,0,0: p = 0.25, grpo = (r - .25) / 0.5 = 1.5, -.5; focal (1 - p)^gamma
    f = estimators.get("f_grpo")
    batch = AdvantageBatch(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    assert torch.allclose(f(batch), torch.tensor([[1.5, -0.5, -0.5, -0.5]]) * 0.75, atol=1e-5)
    assert torch.allclose(f(batch, gamma=2.0), torch.tensor([[1.5, -0.5, -0.5, -0.5]]) * 0.5625, atol=1e-5)
    assert torch.equal(f(AdvantageBatch(torch.ones(1, 4))), torch.zeros(1, 4))
