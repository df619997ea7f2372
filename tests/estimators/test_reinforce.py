import torch

from advbench import estimators
from advbench.estimators import AdvantageBatch


def test_reinforce_is_the_reward():
    rewards = torch.tensor([[1.0, 0.0], [0.5, 0.25]])
    assert torch.equal(estimators.get("reinforce")(AdvantageBatch(rewards)), rewards)


def test_reinforce_batch_hand_computed():
    # batch mean of 1, 0, 0, 0, 1, 1 = 0.5 (the invalid 9 excluded)
    rewards = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [9.0, 9.0, 9.0]])
    valid = torch.tensor([[True] * 3, [True] * 3, [False] * 3])
    advantages = estimators.get("reinforce_batch")(AdvantageBatch(rewards, valid=valid))
    assert torch.equal(advantages, torch.tensor([[0.5, -0.5, -0.5], [-0.5, 0.5, 0.5], [0.0, 0.0, 0.0]]))
