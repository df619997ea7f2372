import math

import pytest
import torch

from harness import losses
from harness.losses import PPOClipParams, aggregate, ppo_clip


def test_registry_and_resolve_fill_defaults():
    assert "ppo_clip" in losses.names()
    assert losses.resolve({"name": "ppo_clip", "clip_high": 0.28}) == {
        "name": "ppo_clip",
        "clip_low": 0.2,
        "clip_high": 0.28,
        "aggregation": "token_mean",
    }
    with pytest.raises(ValueError, match="its hyperparameters are: clip_low, clip_high, aggregation"):
        losses.resolve({"name": "ppo_clip", "clip": 0.1})
    with pytest.raises(KeyError, match="registered losses: ppo_clip"):
        losses.get("ppo")


def test_ppo_clip_hand_built_tokens():
    # Four tokens of one sequence: ratios e^0.5, e^-0.5, e^0.1, e^0.5 with advantages +1, -1, +1, -1.
    old = torch.zeros(1, 4)
    new = torch.tensor([[0.5, -0.5, 0.1, 0.5]], requires_grad=True)
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    loss, metrics = ppo_clip(new, old, adv, mask, PPOClipParams(0.2, 0.2), max_len=4)
    r = [math.exp(0.5), math.exp(-0.5), math.exp(0.1), math.exp(0.5)]
    # token 0: A>0, r>1.2 -> clipped at 1.2 (no gradient); token 1: A<0, r<0.8 -> clipped at 0.8;
    # token 2: inside the range -> -A r; token 3: A<0, r>1.2 -> the unclipped -A r is larger: kept.
    expected = (-1.2 + 0.8 - r[2] + r[3]) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-5)  # float32
    assert metrics["clip_fraction"] == pytest.approx(0.5)
    loss.backward()
    grad = new.grad[0]
    assert grad[0] == 0 and grad[1] == 0  # clipped tokens carry no gradient
    assert grad[2].item() == pytest.approx(-r[2] / 4, rel=1e-6)  # d(-A r)/d logp = -A r
    assert grad[3].item() == pytest.approx(r[3] / 4, rel=1e-6)


def test_clip_higher_is_asymmetric():
    old = torch.zeros(1, 1)
    new = torch.tensor([[math.log(1.25)]])
    adv = torch.ones(1, 1)
    mask = torch.ones(1, 1, dtype=torch.bool)
    symmetric, _ = ppo_clip(new, old, adv, mask, PPOClipParams(0.2, 0.2), 1)
    higher, _ = ppo_clip(new, old, adv, mask, PPOClipParams(0.2, 0.28), 1)
    assert symmetric.item() == pytest.approx(-1.2)
    assert higher.item() == pytest.approx(-1.25)


def test_aggregation_modes():
    token_losses = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    assert aggregate(token_losses, mask, "token_mean", 3).item() == pytest.approx(10 / 4)
    assert aggregate(token_losses, mask, "seq_mean_token_mean", 3).item() == pytest.approx((2 + 4) / 2)
    assert aggregate(token_losses, mask, "seq_sum_const", 5).item() == pytest.approx(10 / (2 * 5))
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate(token_losses, mask, "sum", 3)
