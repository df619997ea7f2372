"""End-to-end runs of the loop on the tiny model (small config: seconds)."""

import numpy as np
import pytest
import torch

from advbench import estimators
from advbench.harness.config import load
from advbench.harness.loop import NonFiniteError, PromptSampler, check_finite, machine_dependent, train
from advbench.harness.metrics import RunSummary

pytestmark = pytest.mark.slow


def test_same_config_and_seed_give_identical_step_metrics(fast_overrides):
    (cfg,) = load(fast_overrides)
    runs = []
    for _ in range(2):
        steps = []
        result = train(
            cfg,
            on_step=lambda step, metrics, out=steps: out.append(
                {k: v for k, v in metrics.items() if not machine_dependent(k)}
            ),
        )
        summary = {k: v for k, v in result.summary.metrics().items() if not machine_dependent(k)}
        runs.append((steps, summary, [e.correct for e in result.evals]))
    assert runs[0] == runs[1]
    assert len(runs[0][0]) == cfg.trainer.steps
    assert {
        "train/reward_mean",
        "train/entropy",
        "train/response_length",
        "train/clip_fraction",
        "train/logprob_mismatch_max",
    } <= set(runs[0][0][0])


def test_a_run_records_evals_and_a_summary(fast_overrides):
    (cfg,) = load([*fast_overrides, "estimator=rloo"])
    result = train(cfg)
    assert [e.step for e in result.evals] == [0, 2, 4]
    first = result.evals[0]
    assert len(first.correct) == cfg.task.eval_size and set(first.pass_at_k) == {1, 2, 4}
    assert 0.0 <= first.pass_at_k[1] <= first.pass_at_k[4] <= 1.0
    assert first.greedy_pass_at_1 is not None
    assert len(first.samples) == cfg.task.eval_size * cfg.eval.n
    summary = result.summary.metrics()
    assert RunSummary.from_metrics(summary) == result.summary  # what MLflow holds reads back whole
    assert summary["summary/initial_pass_at_1"] == first.pass_at_k[1]
    if result.summary.gain_detected:  # a 4-step run mostly learns nothing detectable: then no step
        assert summary["summary/time_to_peak_step"] in (0, 2, 4)
    else:
        assert "summary/time_to_peak_step" not in summary and result.summary.time_to_peak_label() == "no gain"
    assert summary["summary/final_pass_at_4"] == result.evals[-1].pass_at_k[4]
    # diversity of each prompt's samples, recomputed here from what the eval logged
    from advbench.harness.metrics import distinct_correct_answers, mean_pairwise_similarity, pass_at_k_area

    last, n = result.evals[-1], cfg.eval.n
    metrics = last.metrics()
    for key in ("distinct_1", "distinct_2", "distinct_3", "distinct_4", "edit_similarity", "pass_at_k_area"):
        assert (
            0.0 <= metrics[f"eval/{key}"] <= 1.0 and summary[f"summary/final_{key}"] == metrics[f"eval/{key}"]
        )
    groups = [last.samples[i : i + n] for i in range(0, len(last.samples), n)]
    expected = np.mean([mean_pairwise_similarity([s["completion"] for s in g]) for g in groups])
    assert metrics["eval/edit_similarity"] == pytest.approx(expected)
    answers = np.mean(
        [distinct_correct_answers([s["extracted"] for s in g], [s["correct"] for s in g]) for g in groups]
    )
    assert metrics["eval/distinct_correct_answers"] == pytest.approx(answers)
    assert metrics["eval/pass_at_k_area"] == pass_at_k_area(last.pass_at_k)


def test_the_warm_start_is_shared_across_estimators_and_seeds(fast_overrides):
    from advbench.harness.warmstart import tiny_cache_key

    runs = load([*fast_overrides, "estimator=[grpo,reinforce_batch]", "seed=[0,5]", "trainer.steps=1"])
    assert len({tiny_cache_key(cfg.model, cfg.task) for cfg in runs}) == 1  # one cached warm start
    initial = {(cfg.seed, tuple(train(cfg).evals[0].correct)) for cfg in runs}
    # Same weights: for a seed, every estimator's step-0 eval (its own sampling stream) is identical.
    assert len(initial) == 2


def test_prompt_sampler_cycles_through_shuffled_epochs():
    sampler = PromptSampler(list(range(5)), seed=0)
    drawn = sampler.next(3) + sampler.next(3) + sampler.next(4)
    assert sorted(drawn[:5]) == [0, 1, 2, 3, 4] and sorted(drawn[5:]) == [0, 1, 2, 3, 4]


def test_non_finite_values_stop_the_run_naming_step_tensor_and_estimator(fast_overrides):
    with pytest.raises(NonFiniteError, match="step 7: advantages holds 1 non-finite value.*estimator 'grpo'"):
        check_finite(torch.tensor([0.0, float("nan")]), "advantages", 7, "grpo")

    @estimators.register("test_nan", source="test")
    def nan_estimator(batch, signals, params):
        """Always NaN."""
        return torch.full_like(batch.rewards, float("nan"))

    try:
        (cfg,) = load([*fast_overrides, "estimator=test_nan"])
        with pytest.raises(
            NonFiniteError,
            match=r"step 1: advantages holds 16 non-finite value\(s\) \(estimator 'test_nan'\)",
        ):
            train(cfg)
    finally:
        from advbench.estimators.registry import _REGISTRY

        _REGISTRY.pop("test_nan")


def test_rollout_logprobs_match_the_trainers_recomputation(fast_overrides):
    # The PPO ratio is meaningful only if the engine and the trainer agree on the old policy.
    (cfg,) = load(fast_overrides)
    seen = []
    train(cfg, on_step=lambda step, metrics: seen.append(metrics["train/logprob_mismatch_max"]))
    assert np.max(seen) < 1e-4


def test_a_token_level_estimator_trains_through_the_loop(fast_overrides):
    seen = {}

    @estimators.register("test_token_level_loop", source="test", token_level=True)
    def per_token(batch, signals, params):
        """Group-centred reward, halved on every second token."""
        centred = batch.rewards - batch.rewards.mean(dim=1, keepdim=True)
        weights = torch.ones(batch.response_mask.shape[-1])
        weights[1::2] = 0.5
        seen["shape"] = tuple(batch.response_mask.shape)
        return centred.unsqueeze(-1) * weights * batch.response_mask.float()

    try:
        (cfg,) = load([*fast_overrides, "estimator=test_token_level_loop", "trainer.steps=2"])
        result = train(cfg)
        assert seen["shape"][:2] == (cfg.trainer.prompts_per_step, cfg.trainer.group_size)
        assert len(result.evals) == 2
    finally:
        from advbench.estimators.registry import _REGISTRY

        _REGISTRY.pop("test_token_level_loop")


def test_a_local_checkpoint_loads_through_model_path(fast_overrides, tmp_path):
    # Any local HF causal LM directory: here one the test writes, with the task's tokenizer.
    from advbench.harness import tasks
    from advbench.harness.models import build_tiny, fit_tokenizer

    (cfg,) = load(fast_overrides)
    task = tasks.build(cfg.task, cfg.cache_dir)
    texts = [p.text + p.answer for p in task.prompts("train") + task.prompts("eval")]
    tokenizer = fit_tokenizer(texts)
    build_tiny(cfg.model, tokenizer).save_pretrained(tmp_path / "ckpt")
    tokenizer.save_pretrained(tmp_path / "ckpt")
    (local,) = load(
        [
            *fast_overrides,
            "model=local",
            f"model.path={tmp_path / 'ckpt'}",
            "model.dtype=float32",
            "trainer.steps=1",
        ]
    )
    assert local.model.name == "local" and local.model.device == "auto"
    result = train(local)
    assert len(result.evals) == 2 and len(result.evals[0].correct) == cfg.task.eval_size


def test_model_local_needs_a_path_and_a_checkpoint(fast_overrides, tmp_path):
    from advbench.harness.config import ConfigError

    with pytest.raises(ConfigError, match="model.path"):
        load([*fast_overrides, "model=local"])
    (cfg,) = load([*fast_overrides, "model=local", f"model.path={tmp_path}"])
    with pytest.raises(ConfigError, match=r"model.path': no Hugging Face checkpoint \(config.json\)"):
        train(cfg)


def test_estimator_diagnostics_and_greedy_baselines_reach_the_step_metrics(fast_overrides):
    (fade_cfg,) = load([*fast_overrides, "estimator=fade", "trainer.steps=2"])
    seen = []
    train(fade_cfg, on_step=lambda step, metrics: seen.append(metrics))
    assert {
        "estimator/fade_alpha",
        "estimator/fade_delta",
        "estimator/fade_p_hat",
        "estimator/fade_h_hat",
    } <= set(seen[-1])
    assert "axes/sign_balance" in seen[-1]
    (remax_cfg,) = load([*fast_overrides, "estimator=remax", "trainer.steps=1"])
    assert len(train(remax_cfg).evals) == 2  # the loop produced the greedy rewards remax needs


@pytest.mark.parametrize(
    "loss",
    [
        ["loss=dppo"],
        ["loss=dppo", "loss.divergence=kl"],
        ["loss=drpo"],
        ["loss=spo"],
        ["loss=ppo_clip", "loss.tis_cap=2.0", "loss.kl_coef=0.1", "loss.dual_clip=3.0"],
        ["loss=gspo"],
        ["loss=cispo"],
        ["loss=clip_cov"],
        ["loss=kl_cov", "loss.entropy_coef=0.01"],
    ],
)
def test_every_loss_trains_with_several_updates_per_batch(fast_overrides, loss):
    (cfg,) = load(
        [*fast_overrides, *loss, "trainer.update_epochs=2", "trainer.minibatches=2", "trainer.steps=2"]
    )
    seen = []
    train(cfg, on_step=lambda step, metrics: seen.append(metrics))
    last = seen[-1]
    # pi_old was recomputed by the trainer, so the mismatch is measured on the sampling weights
    assert last["train/logprob_mismatch_max"] < 1e-4 and "train/mismatch_kl_k3" in last
    assert "train/ratio_mean" in last and "train/kl_k3" in last
    if cfg.loss["name"] == "dppo":
        assert 0.0 <= last["train/mask_fraction"] <= 1.0
    if cfg.loss.get("tis_cap"):
        assert "train/tis_weight_mean" in last and "train/kl_ref" in last


def test_gradient_geometry_is_logged_on_its_interval(fast_overrides):
    # nsr: every wrong sample has A = -1, so the gradient is not zero even when nothing is solved
    (cfg,) = load([*fast_overrides, "estimator=nsr", "geometry.every=2", "trainer.steps=2"])
    seen = []
    train(cfg, on_step=lambda step, metrics: seen.append(metrics))
    name = "geometry/model.layers.0.mlp.down_proj.weight"
    assert f"{name}/effective_rank" not in seen[0] and f"{name}/effective_rank" in seen[1]
    assert 1.0 <= seen[1][f"{name}/effective_rank"] <= 64 and 0 < seen[1][f"{name}/top4_energy"] <= 1
    assert -1.0 <= seen[1][f"{name}/cosine_prev"] <= 1.0
    (off,) = load([*fast_overrides, "geometry.every=0", "trainer.steps=1"])
    seen.clear()
    train(off, on_step=lambda step, metrics: seen.append(metrics))
    assert not any(key.startswith("geometry/") for key in seen[0])


def test_a_nan_stops_the_run_and_leaves_the_last_good_checkpoint(fast_overrides):
    from advbench.harness import checkpoint

    @estimators.register("test_nan_at_3", source="test")
    def nan_at_step_3(batch, signals, params):
        """NaN from step 3 on."""
        return torch.full_like(batch.rewards, float("nan") if signals.step >= 3 else 1.0)

    (cfg,) = load(
        [*fast_overrides, "estimator=test_nan_at_3", "trainer.checkpoint_every=1", "trainer.steps=5"]
    )
    try:
        with pytest.raises(NonFiniteError, match="step 3: advantages"):
            train(cfg)
        state = checkpoint.load(cfg, None)
        assert state is not None and state["step"] == 2  # written after step 2, untouched by the failure
        with pytest.raises(NonFiniteError, match="step 3: advantages"):  # it loads and resumes at step 3
            train(cfg, resume=state)
    finally:
        from advbench.estimators.registry import _REGISTRY

        _REGISTRY.pop("test_nan_at_3")
        checkpoint.remove(cfg, None)


def test_the_shuffled_null_control_permutes_the_first_steps_advantages(fast_overrides):
    """Same seed, same first rollout: the shuffled run's advantages are the plain run's, moved."""
    (plain,) = load([*fast_overrides, "trainer.steps=1"])
    (null,) = load([*fast_overrides, "trainer.steps=1", "trainer.shuffle_advantages=true"])
    first = {}
    for cfg in (plain, null):
        train(
            cfg,
            on_step=lambda step, metrics, cfg=cfg: first.setdefault(cfg.trainer.shuffle_advantages, metrics),
        )
    assert first[True]["train/reward_mean"] == first[False]["train/reward_mean"]
    assert first[True]["train/advantage_abs_mean"] == pytest.approx(first[False]["train/advantage_abs_mean"])
    assert first[True]["train/loss"] != first[False]["train/loss"]  # the same values on other samples


@pytest.mark.parametrize(
    "schedule, expected",
    [
        # 10 steps, 2 of warm-up: 1/2, 1, then the decay over the 8 steps after it
        ("constant", [0.5, 1, 1, 1, 1, 1, 1, 1, 1, 1]),
        ("linear", [0.5, 1, 1, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8]),
        ("cosine", [0.5, 1] + [0.5 * (1 + np.cos(np.pi * i / 8)) for i in range(8)]),
    ],
)
def test_lr_schedules_by_hand(schedule, expected):
    from advbench.harness.loop import lr_factor

    assert [lr_factor(step, 10, 2, schedule) for step in range(10)] == pytest.approx(expected)


def test_a_decaying_schedule_reaches_the_optimizer(fast_overrides):
    (cfg,) = load([*fast_overrides, "trainer.lr_schedule=linear", "trainer.warmup_steps=0"])
    lrs = []
    train(cfg, on_step=lambda step, metrics: lrs.append(metrics["train/lr"]))
    steps = cfg.trainer.steps
    assert lrs == pytest.approx([cfg.trainer.lr * (1 - s / steps) for s in range(steps)])
