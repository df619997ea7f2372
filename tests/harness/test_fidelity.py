"""The loop's side of the estimator contract (samples left out, extra samples, KL in the reward)
and a real training/inference mismatch: sampling in bf16 while the trainer keeps float32."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from advbench import estimators
from advbench.harness import losses, models, rollout
from advbench.harness.config import load
from advbench.harness.loop import train, update_policy
from advbench.harness.rollout import Rollout, SamplingParams


def rows_of(batch: Rollout, rows: torch.Tensor) -> Rollout:
    """The rollout of ``rows`` only, as if the batch had held nothing else."""
    fields = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}
    return Rollout(
        **{k: v[rows] for k, v in fields.items() if isinstance(v, torch.Tensor)},
        texts=[batch.texts[i] for i in rows.tolist()],
    )


@pytest.mark.parametrize("aggregation", losses.AGGREGATIONS)
def test_left_out_samples_count_in_no_normaliser(setup, aggregation):
    """psr / nsr / mc_grpo: an update with some rows left out equals the update of the batch
    without them, for every aggregation (a zero advantage alone would still count them)."""
    cfg, _, policy, _, batch = setup
    total = batch.response_ids.shape[0]
    advantages = torch.randn(total, generator=torch.Generator().manual_seed(3))
    keep = torch.arange(total) % 3 != 0
    loss = losses.get("ppo_clip")
    params = loss.params(aggregation=aggregation)
    cfg = copy.deepcopy(cfg)
    cfg.trainer.max_grad_norm = 1e9  # unclipped: a norm clip would hide the normaliser's scale

    def weights_after(trial_batch, trial_advantages, train_rows):
        trial = dataclasses.replace(policy, model=copy.deepcopy(policy.model))
        optimizer = torch.optim.SGD(trial.model.parameters(), lr=1.0)
        update_policy(
            trial, optimizer, trial_batch, trial_advantages, loss, params, cfg, step=1, train_rows=train_rows
        )
        return {k: v.detach().clone() for k, v in trial.model.named_parameters()}

    masked = weights_after(batch, advantages, keep)
    subset = weights_after(rows_of(batch, keep.nonzero().squeeze(1)), advantages[keep], None)
    zeroed = weights_after(batch, advantages * keep, None)  # the old way: A = 0, still counted
    for name, weight in subset.items():
        assert torch.allclose(masked[name], weight, atol=1e-6), name
    assert any(not torch.allclose(zeroed[n], w, atol=1e-6) for n, w in subset.items())


def test_an_estimator_with_extra_samples_gets_them_and_leaves_its_pivot_out(fast_overrides, monkeypatch):
    seen = []
    original = rollout.HFEngine.generate

    def recording(self, prompts, n, sampling):
        seen.append(n)
        return original(self, prompts, n, sampling)

    monkeypatch.setattr(rollout.HFEngine, "generate", recording)
    (cfg,) = load([*fast_overrides, "estimator=mc_grpo", "trainer.steps=1", "trainer.group_size=4"])
    metrics = []
    train(cfg, on_step=lambda step, m: metrics.append(m))
    assert seen.count(5) == 1  # the one training rollout: G + 1 (evals sample eval.n = 4)
    assert 0.0 <= metrics[0]["axes/ess_fraction"] <= 1.0


def test_reinforce_pp_with_kl_in_the_reward_trains_through_the_loop(fast_overrides):
    (cfg,) = load([*fast_overrides, "estimator=reinforce_pp", "estimator_params.reinforce_pp.kl_coef=0.1"])
    result = train(cfg)
    assert result.summary.peak_pass_at_1 >= 0.0


# -- a real training/inference mismatch on the CPU ------------------------------------------------


def test_bf16_sampling_records_the_logprobs_it_sampled_with(setup):
    _, _, policy, prompts, _ = setup
    assert policy.autocast == "none" and {p.dtype for p in policy.model.parameters()} == {torch.float32}
    rows = torch.arange(len(prompts) * 4)
    gaps = {}
    for precision in ("none", "bfloat16"):
        torch.manual_seed(0)
        sampled = rollout.HFEngine(policy, precision=precision).generate(
            prompts, 4, SamplingParams(max_new_tokens=8)
        )
        with torch.no_grad():
            trainer, _ = rollout.token_logprobs(policy.model, sampled, rows, 1.0)  # float32
            with models.autocast(policy.device, "bfloat16"):
                in_bf16, _ = rollout.token_logprobs(policy.model, sampled, rows, 1.0)
        mask = sampled.response_mask
        gaps[precision] = (trainer - sampled.logprobs)[mask].abs().mean().item()
        if precision == "bfloat16":  # what was recorded is the bf16 computation's log-prob
            # (closer to a bf16 recomputation than to the trainer; not equal: a KV-cached decode
            # rounds differently from one full forward)
            assert (in_bf16 - sampled.logprobs)[mask].abs().mean().item() < gaps["bfloat16"] / 2
    assert gaps["none"] < 1e-4
    assert gaps["bfloat16"] > 1e-3  # a real mismatch, 10x the float32 rounding at least


def test_rollout_autocast_makes_the_mismatch_metrics_show_it(fast_overrides):
    metrics = {}
    for precision in ("model", "bfloat16"):
        (cfg,) = load([*fast_overrides, f"rollout.autocast={precision}", "loss=dppo", "trainer.steps=2"])
        seen: list[dict] = []
        train(cfg, on_step=lambda step, m, seen=seen: seen.append(m))
        metrics[precision] = seen[-1]
    assert metrics["model"]["train/logprob_mismatch_mean"] < 1e-4
    assert metrics["bfloat16"]["train/logprob_mismatch_mean"] > 1e-3
    assert metrics["bfloat16"]["train/mismatch_kl_k3"] > metrics["model"]["train/mismatch_kl_k3"]


def test_float32_sampling_needs_float32_weights(setup):
    from advbench.harness.config import ConfigError

    _, _, policy, _, _ = setup
    half = dataclasses.replace(policy, model=copy.deepcopy(policy.model).to(torch.bfloat16))
    (cfg,) = load(["rollout.autocast=float32"])
    with pytest.raises(ConfigError, match="rollout.autocast': float32 sampling needs float32 weights"):
        rollout.build(cfg.rollout, half)


def test_every_registered_estimator_declares_a_consistent_contract():
    for name in estimators.names():
        est = estimators.get(name)
        assert est.extra_samples >= 0
        assert (est.state is None) == (est.new_state() is None)
