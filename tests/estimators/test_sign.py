import pytest
import torch

from advbench import estimators
from advbench.estimators import AdvantageBatch

REWARDS = torch.tensor([[1.0, 0.0, 0.05]])  # correct, wrong, partial credit (still wrong)


def test_psr_nsr_and_weighted_reinforce():
    batch = AdvantageBatch(REWARDS)
    assert torch.equal(estimators.get("psr")(batch), torch.tensor([[1.0, 0.0, 0.0]]))
    assert torch.equal(estimators.get("nsr")(batch), torch.tensor([[0.0, -1.0, -1.0]]))
    assert torch.allclose(estimators.get("w_reinforce")(batch), torch.tensor([[0.1, -1.0, -1.0]]))
    assert torch.allclose(estimators.get("w_reinforce")(batch, weight=0.5), torch.tensor([[0.5, -1.0, -1.0]]))
    # a lower bar for "correct" turns the partial credit into a positive
    assert torch.allclose(estimators.get("psr")(batch, correct_at=0.05), torch.tensor([[1.0, 0.0, 1.0]]))


def test_psr_and_nsr_leave_the_other_sign_out_of_the_update():
    batch = AdvantageBatch(REWARDS, valid=torch.tensor([[True, True, False]]))
    assert estimators.get("psr").selected(batch).tolist() == [[True, False, False]]
    assert estimators.get("nsr").selected(batch).tolist() == [[False, True, False]]
    # w_reinforce trains on both signs
    assert estimators.get("w_reinforce").selected(batch).tolist() == [[True, True, False]]


def test_asymmetric_reinforce_group_and_batch_baselines():
    asym = estimators.get("asym_reinforce")
    # group mean 0.5, baseline 0.5 - 0.1 = 0.4
    assert torch.allclose(asym(AdvantageBatch(torch.tensor([[1.0, 0.0]]))), torch.tensor([[0.6, -0.4]]))
    # batch mean 0.75, baseline 0.65
    rewards = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert torch.allclose(
        asym(AdvantageBatch(rewards), baseline="batch"), torch.tensor([[0.35, -0.65], [0.35, 0.35]])
    )
    with pytest.raises(ValueError, match="baseline must be group or batch"):
        asym(AdvantageBatch(rewards), baseline="prompt")
