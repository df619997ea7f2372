import math

import pytest
import torch

import estimators
from estimators import AdvantageBatch
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
