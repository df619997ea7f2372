import torch

from advbench import estimators
from advbench.estimators import AdvantageBatch

rloo = estimators.get("rloo")


def test_hand_computed_leave_one_out():
    # r = 1, 0, 0: baselines of the others are 0, 0.5, 0.5 -> A = 1, -0.5, -0.5
    advantages = rloo(AdvantageBatch(torch.tensor([[1.0, 0.0, 0.0]])))
    assert torch.allclose(advantages, torch.tensor([[1.0, -0.5, -0.5]]))


def test_hand_computed_real_rewards_with_invalid():
    # valid r = 2, 4, 9 (the 7 is invalid): A_1 = 2 - (4+9)/2 = -4.5, A_2 = 4 - 5.5 = -1.5, A_3 = 9 - 3 = 6
    batch = AdvantageBatch(
        torch.tensor([[2.0, 4.0, 7.0, 9.0]]), valid=torch.tensor([[True, True, False, True]])
    )
    assert torch.allclose(rloo(batch), torch.tensor([[-4.5, -1.5, 0.0, 6.0]]))


def test_group_of_one_gets_zero():
    assert torch.equal(rloo(AdvantageBatch(torch.tensor([[1.0], [0.0]]))), torch.zeros(2, 1))
