import math

import pytest
import torch

from harness import losses
from harness.losses import LossBatch, aggregate, get, policy_loss, resolve

ONE = torch.ones(1, 4, dtype=torch.bool)


def batch(new, adv, old=None, **kw) -> LossBatch:
    new = torch.tensor([new], requires_grad=True)
    old = torch.zeros_like(new) if old is None else torch.tensor([old])
    return LossBatch(
        logprobs=new,
        old_logprobs=old.detach(),
        advantages=torch.tensor([adv]),
        mask=torch.ones_like(new, dtype=torch.bool),
        max_len=new.shape[1],
        **kw,
    )


def run(name, b, **params):
    loss = get(name)
    return policy_loss(loss, b, loss.params(**params))


def test_registry_and_resolve_fill_defaults():
    assert {"ppo_clip", "dppo", "gspo", "cispo", "clip_cov", "kl_cov"} <= set(losses.names())
    resolved = resolve({"name": "ppo_clip", "clip_high": 0.28})
    assert resolved["clip_high"] == 0.28 and resolved["clip_low"] == 0.2 and resolved["tis_cap"] == 0.0
    with pytest.raises(ValueError, match="its hyperparameters are: aggregation, tis_cap"):
        resolve({"name": "ppo_clip", "clip": 0.1})
    with pytest.raises(ValueError, match="ppo_clip: tis_cap must be 0"):
        resolve({"name": "ppo_clip", "tis_cap": 0.5})
    with pytest.raises(KeyError, match="registered losses: cispo, clip_cov"):
        get("ppo")


def test_ppo_clip_hand_built_tokens():
    # ratios e^.5, e^-.5, e^.1, e^.5 with advantages +1, -1, +1, -1
    b = batch([0.5, -0.5, 0.1, 0.5], [1.0, -1.0, 1.0, -1.0])
    loss, metrics = run("ppo_clip", b)
    r = [math.exp(0.5), math.exp(-0.5), math.exp(0.1), math.exp(0.5)]
    # token 0: A>0, r>1.2 -> clipped at 1.2 (no gradient); token 1: A<0, r<0.8 -> clipped at 0.8;
    # token 2: inside the range -> -A r; token 3: A<0, r>1.2 -> the unclipped -A r is larger: kept.
    assert loss.item() == pytest.approx((-1.2 + 0.8 - r[2] + r[3]) / 4, rel=1e-5)
    assert metrics["clip_fraction"] == pytest.approx(0.5)
    loss.backward()
    grad = b.logprobs.grad[0]
    assert grad[0] == 0 and grad[1] == 0  # clipped tokens carry no gradient
    assert grad[2].item() == pytest.approx(-r[2] / 4, rel=1e-5)  # d(-A r)/d logp = -A r
    assert grad[3].item() == pytest.approx(r[3] / 4, rel=1e-5)


def test_clip_higher_and_dual_clip():
    up = batch([math.log(1.25)], [1.0])
    assert run("ppo_clip", up)[0].item() == pytest.approx(-1.2)
    assert run("ppo_clip", up, clip_high=0.28)[0].item() == pytest.approx(-1.25)
    # A < 0 with r = 5: PPO's loss -A r = 5; dual clip c = 3 bounds it at -c A = 3, no gradient
    far = batch([math.log(5.0)], [-1.0])
    assert run("ppo_clip", far)[0].item() == pytest.approx(5.0)
    loss, metrics = run("ppo_clip", far, dual_clip=3.0)
    assert loss.item() == pytest.approx(3.0) and metrics["dual_clip_fraction"] == 1.0
    loss.backward()
    assert far.logprobs.grad.abs().sum() == 0


def test_dppo_masks_tokens_by_divergence_not_ratio():
    # k3 of log r = .1: e^.1 - 1 - .1 = .00517 (kept); log r = .5: e^.5 - 1.5 = .1487 (masked at .05)
    b = batch([0.1, 0.5, -0.5, 0.0], [1.0, 1.0, -1.0, 1.0])
    loss, metrics = run("dppo", b, divergence="k3", threshold=0.05)
    # kept: tokens 0 and 3 (-A r = -e^.1, -1); token 2: k3(-.5) = e^-.5 - 1 + .5 = .1065 -> masked
    assert metrics["mask_fraction"] == pytest.approx(0.5)
    assert loss.item() == pytest.approx((-math.exp(0.1) - 1.0) / 4, rel=1e-5)
    loss.backward()
    assert b.logprobs.grad[0, 1] == 0 and b.logprobs.grad[0, 2] == 0
    # the same ratios under |log r| at .3: only token 0 and 3 are within, as above; at .6 all are
    assert (
        run("dppo", batch([0.1, 0.5, -0.5, 0.0], [1.0] * 4), divergence="abs_log_ratio", threshold=0.6)[1][
            "mask_fraction"
        ]
        == 0.0
    )
    # sequence level: the mean k3 over the sequence (.0648) is over .05 -> the whole sequence masked
    assert run("dppo", batch([0.1, 0.5, -0.5, 0.0], [1.0] * 4), level="sequence")[1]["mask_fraction"] == 1.0


def test_gspo_uses_the_sequence_ratio():
    # log r = .2 and -.2 average to 0: sequence ratio 1, so nothing is clipped even at tiny eps
    b = batch([0.2, -0.2], [1.0, 1.0])
    loss, metrics = run("gspo", b)
    assert loss.item() == pytest.approx(-1.0) and metrics["clip_fraction"] == 0.0
    loss.backward()
    assert torch.allclose(b.logprobs.grad, torch.tensor([[-0.5, -0.5]]))  # each token d s / d logp_t = s
    # mean log r = .1 > log(1 + 4e-4): clipped for A > 0
    assert run("gspo", batch([0.1, 0.1], [1.0, 1.0]))[1]["clip_fraction"] == 1.0


def test_cispo_keeps_a_gradient_on_clipped_tokens():
    b = batch([math.log(10.0), 0.0], [1.0, 1.0])  # ratio 10 is capped at 1 + 5 = 6
    loss, metrics = run("cispo", b)
    assert metrics["clip_fraction"] == 0.5
    assert loss.item() == pytest.approx((-6.0 * math.log(10.0) - 0.0) / 2, rel=1e-5)
    loss.backward()
    assert b.logprobs.grad[0].tolist() == pytest.approx([-3.0, -0.5])  # -w A / 2, w detached


def test_tis_weights_tokens_by_the_capped_mismatch():
    # trainer pi_old vs rollout: ratios e^1 (capped at 2) and e^-1
    b = batch([0.0, 0.0], [1.0, 1.0], old=[0.0, 0.0], rollout_logprobs=torch.tensor([[-1.0, 1.0]]))
    loss, metrics = run("ppo_clip", b, tis_cap=2.0)
    assert loss.item() == pytest.approx((-2.0 - math.exp(-1.0)) / 2, rel=1e-5)
    assert metrics["tis_capped_fraction"] == 0.5


def test_kl_to_reference_and_entropy_bonus():
    b = batch(
        [0.0, 0.0], [0.0, 0.0], ref_logprobs=torch.tensor([[-0.5, 0.5]]), entropy=torch.tensor([[1.0, 3.0]])
    )
    # k1 = log pi - log pi_ref = .5, -.5 -> mean 0; k2 = .125 each; k3 = e^{-x} - 1 + x
    assert run("ppo_clip", b, kl_coef=1.0, kl_estimator="k1")[0].item() == pytest.approx(0.0, abs=1e-6)
    assert run("ppo_clip", b, kl_coef=1.0, kl_estimator="k2")[0].item() == pytest.approx(0.125)
    k3 = ((math.exp(-0.5) - 1 + 0.5) + (math.exp(0.5) - 1 - 0.5)) / 2
    assert run("ppo_clip", b, kl_coef=2.0)[0].item() == pytest.approx(2 * k3, rel=1e-5)
    assert run("ppo_clip", b, entropy_coef=0.1)[0].item() == pytest.approx(-0.1 * 2.0)


def test_clip_cov_and_kl_cov_pick_the_high_covariance_tokens():
    # log pi centred: 1.5, -.5, -.5, -.5; A centred: 1.5, -.5, -.5, -.5 -> Cov 2.25, .25, .25, .25
    b = batch([1.0, -1.0, -1.0, -1.0], [2.0, 0.0, 0.0, 0.0])
    loss, metrics = run("clip_cov", b, clip_ratio=0.25)
    assert metrics["cov_clip_fraction"] == 0.25
    loss.backward()
    assert b.logprobs.grad[0, 0] == 0 and b.logprobs.grad[0, 1] == 0  # detached; A = 0 on the others
    b2 = batch([1.0, -1.0, -1.0, -1.0], [2.0, 0.0, 0.0, 0.0], old=[0.5, -1.0, -1.0, -1.0])
    loss, metrics = run("kl_cov", b2, kl_ratio=0.25, kl_cov_coef=1.0)
    # token 0: -A r + |log r| = -2 e^.5 + .5; others: A = 0, log r = 0
    assert loss.item() == pytest.approx((-2 * math.exp(0.5) + 0.5) / 4, rel=1e-5)
    assert metrics["kl_cov_fraction"] == 0.25


def test_aggregation_modes():
    token_losses = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    assert aggregate(token_losses, mask, "token_mean", 3).item() == pytest.approx(10 / 4)
    assert aggregate(token_losses, mask, "seq_mean_token_mean", 3).item() == pytest.approx((2 + 4) / 2)
    assert aggregate(token_losses, mask, "seq_sum_const", 5).item() == pytest.approx(10 / (2 * 5))
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate(token_losses, mask, "sum", 3)
