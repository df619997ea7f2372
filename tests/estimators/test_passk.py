import math

import pytest
import torch

from advbench import estimators
from advbench.estimators import AdvantageBatch
from advbench.estimators.passk import comb


def test_comb():
    n = torch.tensor([5.0, 4.0, 3.0, 2.0, 0.0])
    assert comb(n, 2).tolist() == [10.0, 6.0, 3.0, 1.0, 0.0]
    assert comb(torch.tensor([3.0]), -1).item() == 0 and comb(torch.tensor([3.0]), 0).item() == 1


def test_passk_train_hand_computed():
    train = estimators.get("passk_train")
    # G=4, one correct, k=2: R = 1 - C(3,2)/C(4,2) = 0.5, sigma = 0.5
    # correct (1 - R)/sigma = 1; wrong (1 - R - C(2,1)/C(3,1))/sigma = (0.5 - 2/3)/0.5 = -1/3
    out = train(AdvantageBatch(torch.tensor([[1.0, 0.0, 0.0, 0.0]])), k=2)
    assert torch.allclose(out, torch.tensor([[1.0, -1 / 3, -1 / 3, -1 / 3]]), atol=1e-6)
    # two correct: R = 1 - 1/6 = 5/6, sigma = sqrt(5)/6; correct (1/6)/sigma, wrong (1/6 - 1/3)/sigma
    sigma = math.sqrt(5) / 6
    out = train(AdvantageBatch(torch.tensor([[1.0, 1.0, 0.0, 0.0]])), k=2)
    expected = torch.tensor([[1 / 6, 1 / 6, -1 / 6, -1 / 6]]) / sigma
    assert torch.allclose(out, expected, atol=1e-6)
    # k = G: any correct sample makes pass@G certain, sigma = 0 -> no signal
    assert torch.equal(train(AdvantageBatch(torch.tensor([[1.0, 0.0, 0.0, 0.0]])), k=4), torch.zeros(1, 4))


def test_pkpo_is_the_mean_gain_of_the_max_over_subsets():
    # rewards 0, 1, 0.5 with k=2: pairs {0,1}: max 1, {0,2}: .5, {1,2}: 1.
    # sample 1 raises {0,1} by 1 and {1,2} by .5 -> 1.5/3; sample 2 raises {0,2} by .5 -> .5/3
    out = estimators.get("pkpo")(AdvantageBatch(torch.tensor([[0.0, 1.0, 0.5]])), k=2)
    assert torch.allclose(out, torch.tensor([[0.0, 0.5, 1 / 6]]), atol=1e-6)
    # one correct among four, k=4: only subset is all four; removing the correct one drops max 1 -> 0
    out = estimators.get("pkpo")(AdvantageBatch(torch.tensor([[0.0, 0.0, 1.0, 0.0]])), k=4)
    assert torch.allclose(out, torch.tensor([[0.0, 0.0, 1.0, 0.0]]))
    with pytest.raises(ValueError, match="k must be >= 2"):
        estimators.get("pkpo")(AdvantageBatch(torch.zeros(1, 2)), k=1)


def test_passk_max_only_the_best_gets_the_gap():
    best = estimators.get("passk_max")
    # gap 1 - 0.5, unbiased std of 0, 1, .5 = .5
    assert torch.allclose(
        best(AdvantageBatch(torch.tensor([[0.0, 1.0, 0.5]]))), torch.tensor([[0.0, 1.0, 0.0]])
    )
    assert torch.allclose(
        best(AdvantageBatch(torch.tensor([[0.0, 1.0, 0.5]])), normalise=False),
        torch.tensor([[0.0, 0.5, 0.0]]),
    )
    assert torch.equal(
        best(AdvantageBatch(torch.tensor([[1.0, 1.0, 0.0]]))), torch.zeros(1, 3)
    )  # tie at the top
