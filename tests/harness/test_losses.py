import math

import pytest
import torch

from advbench.harness import losses
from advbench.harness.losses import LossBatch, aggregate, get, policy_loss, resolve

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
    assert {"ppo_clip", "dppo", "drpo", "spo", "gspo", "cispo", "clip_cov", "kl_cov"} <= set(losses.names())
    assert resolve({"name": "dppo"})["delta_low"] == 0.15
    assert resolve({"name": "dppo", "divergence": "kl"})["delta_high"] == 0.05
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


def mu_batch(pi, mu, adv) -> LossBatch:
    """Tokens with current probabilities ``pi`` sampled by a rollout policy with ``mu``."""
    logp = torch.tensor([pi]).log()
    return batch(logp[0].tolist(), adv, old=logp[0].tolist(), rollout_logprobs=torch.tensor([mu]).log())


def test_dppo_binary_tv_is_directional_and_in_probability():
    # token 0: A > 0, .01 -> .03: moved .02 < .15 (a ratio of 3 that a ratio band would drop): kept
    # token 1: A > 0, .5 -> .7: moved up .2 > .15: dropped
    # token 2: A > 0, .7 -> .5: moved down .2, back against A: never dropped
    # token 3: A < 0, .6 -> .4: moved down .2 > .15 in A's direction: dropped
    b = mu_batch([0.03, 0.7, 0.5, 0.4], [0.01, 0.5, 0.7, 0.6], [1.0, 1.0, 1.0, -1.0])
    loss, metrics = run("dppo", b)
    assert metrics["mask_fraction"] == pytest.approx(0.5)
    loss.backward()
    grad = b.logprobs.grad[0]
    # kept tokens: d(-A w log pi)/d log pi = -A w, w = pi / mu detached, / 4 tokens
    assert grad.tolist() == pytest.approx([-3.0 / 4, 0.0, -(0.5 / 0.7) / 4, 0.0], rel=1e-4)
    assert loss.item() == pytest.approx((-3.0 * math.log(0.03) - (0.5 / 0.7) * math.log(0.5)) / 4, rel=1e-4)
    # asymmetric thresholds: delta_high .25 keeps token 1
    assert run("dppo", b, delta_high=0.25)[1]["mask_fraction"] == pytest.approx(0.25)


def test_dppo_binary_kl_and_the_truncated_is_weight():
    def kl(mu, pi):
        return mu * math.log(mu / pi) + (1 - mu) * math.log((1 - mu) / (1 - pi))

    # token 0: A > 0, .5 -> .7 (KL .087 > .05): dropped; token 1: A > 0, .5 -> .55 (KL .005): kept;
    # token 2: A < 0, .5 -> .7, moving against A: kept whatever its KL
    b = mu_batch([0.7, 0.55, 0.7], [0.5, 0.5, 0.5], [1.0, 1.0, -1.0])
    loss, metrics = run("dppo", b, divergence="kl")
    assert kl(0.5, 0.7) > 0.05 > kl(0.5, 0.55)
    assert metrics["mask_fraction"] == pytest.approx(1 / 3)
    assert metrics["divergence_mean"] == pytest.approx((2 * kl(0.5, 0.7) + kl(0.5, 0.55)) / 3, rel=1e-3)
    # C caps the IS weight: pi / mu = 1.4 capped at 1.2 on the kept A < 0 token
    b = mu_batch([0.55, 0.7], [0.5, 0.5], [1.0, -1.0])
    loss, metrics = run("dppo", b, divergence="kl", is_cap=1.2)
    loss.backward()
    assert b.logprobs.grad[0].tolist() == pytest.approx([-1.1 / 2, 1.2 / 2], rel=1e-4)
    assert metrics["is_capped_fraction"] == 0.5


def test_dppo_needs_the_rollout_logprobs():
    with pytest.raises(ValueError, match="rollout engine's log-probs"):
        run("dppo", batch([0.0], [1.0]))


@pytest.mark.parametrize("name, delta", [("drpo", 12.5), ("drpo", 0.15), ("spo", 0.2)])
def test_drpo_and_spo_gradients_match_the_closed_form_weight(name, delta):
    pi = [0.03, 0.7, 0.5, 0.4, 0.21]
    mu = [0.01, 0.5, 0.7, 0.6, 0.25]
    adv = [1.0, 1.0, 1.0, -1.0, -0.5]
    b = mu_batch(pi, mu, adv)
    loss, metrics = run(name, b, delta=delta)
    loss.backward()
    p, m, a = torch.tensor(pi, dtype=torch.float64), torch.tensor(mu, dtype=torch.float64), torch.tensor(adv)
    r = p / m
    # the closed-form weight: DRPO 1 - sign(A) (pi - mu) / delta; SPO 1 - sign(A) (r - 1) / delta
    moved = (p - m) if name == "drpo" else (r - 1)
    weight = 1 - torch.sign(a) * moved / delta
    expected = -a * r * weight / len(pi)  # d L / d log pi, token mean over 5 tokens
    assert b.logprobs.grad[0].tolist() == pytest.approx(expected.tolist(), rel=1e-4, abs=1e-7)
    assert metrics["trust_weight_mean"] == pytest.approx(float(weight.mean()), rel=1e-4)
    assert metrics["corrective_fraction"] == pytest.approx(float((weight < 0).double().mean()))


def test_drpo_at_its_default_delta_barely_moves_the_weight():
    b = mu_batch([0.99, 0.01], [0.01, 0.99], [1.0, -1.0])  # the largest possible moves
    _, metrics = run("drpo", b)
    assert 1 - 1 / 12.5 - 1e-6 <= metrics["trust_weight_min"] <= 1.0


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
    b = batch([1.0, -1.0, -1.0, -1.0], [2.0, 0.0, 0.0, 0.0], old=[1.0, -1.0, -1.0, -1.0])  # ratios 1
    loss, metrics = run("clip_cov", b, clip_ratio=0.25)
    assert metrics["cov_clip_fraction"] == 0.25
    loss.backward()
    assert b.logprobs.grad[0, 0] == 0 and b.logprobs.grad[0, 1] == 0  # detached; A = 0 on the others
    # clip_cov keeps PPO's ratio clip; a clipped token is no candidate, the next-highest is chosen
    # Cov = .867, .667, 0, 0, -.367, -.367 (A centred 1, 1, 0, 0, -1, -1; log pi mean .133)
    b3 = batch(
        [1.0, 0.8, -1.0, -1.0, 0.5, 0.5], [2.0, 2.0, 1.0, 1.0, 0.0, 0.0], old=[0.0, 0.8, -1.0, -1.0, 0.5, 0.5]
    )
    loss, metrics = run("clip_cov", b3, clip_ratio=1 / 6, cov_low=0.1, cov_high=100.0)
    assert metrics["clip_fraction"] == pytest.approx(1 / 6)  # token 0: A > 0, ratio e > 1.2
    assert metrics["cov_clip_fraction"] == pytest.approx(1 / 6)
    loss.backward()
    # 0 clipped, 1 chosen (not 0, the highest covariance), 2 and 3: -A r / 6, A = 0 on 4 and 5
    assert b3.logprobs.grad[0].tolist() == pytest.approx([0.0, 0.0, -1 / 6, -1 / 6, 0.0, 0.0])
    assert loss.item() == pytest.approx((-2.0 * 1.2 - 2.0 - 2.0) / 6, rel=1e-5)
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


def test_k3_is_an_unbiased_never_negative_estimate_of_kl():
    p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    q = torch.tensor([0.2, 0.2, 0.6], dtype=torch.float64)
    per_sample = losses.k3(q.log() - p.log())  # x ~ p
    assert (per_sample >= 0).all()
    assert torch.allclose((p * per_sample).sum(), (p * (p / q).log()).sum())  # E_p[k3] = KL(p || q)
