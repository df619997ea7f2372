"""The GPU path's switches, exercised where they can be: on the CPU.

Micro-batching, gradient checkpointing, bfloat16 autocast, the static KV cache and the paged
(continuous-batching) engine all run on the CPU too, so their contracts are tested here: the same
update, the same samples, log-probs that match the trainer's. What needs CUDA (compiling generate,
vLLM, the built-in GPU scales) must fail with a message that says so; tests/harness/test_vllm.py
holds vLLM's own tests, which skip without vllm and a GPU. Speed and memory are benchmarks'
business (benchmarks/gpu.py), not these tests'.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advbench.harness import checkpoint, losses, models, rollout, tasks, warmstart
from advbench.harness.config import ConfigError, load
from advbench.harness.loop import micro_batches, train, update_policy
from advbench.harness.rollout import EngineUnavailable, Rollout, SamplingParams


def fake_rollout(prompt_lengths: list[int], response_lengths: list[int]) -> Rollout:
    rows, width = len(prompt_lengths), max(response_lengths)
    prompt_width = max(prompt_lengths)
    prompt_mask = torch.tensor([[0] * (prompt_width - p) + [1] * p for p in prompt_lengths])
    response_mask = torch.tensor([[True] * r + [False] * (width - r) for r in response_lengths])
    zeros = torch.zeros((rows, width))
    return Rollout(
        prompt_ids=prompt_mask.clone(),
        prompt_mask=prompt_mask,
        response_ids=response_mask.long(),
        response_mask=response_mask,
        logprobs=zeros,
        entropy=zeros,
        texts=[""] * rows,
        truncated=torch.zeros(rows, dtype=torch.bool),
    )


# -- token-budget micro-batching ---------------------------------------------------------------


def test_micro_batches_by_hand():
    batch = fake_rollout([3, 3, 5, 2], [4, 1, 2, 6])
    rows = torch.arange(4)
    # [0,1] -> 2 x (3+4) = 14; adding row 2 -> 3 x (5+4) = 27 > 20; [2,3] -> 2 x (5+6) = 22 > 20
    assert [g.tolist() for g in micro_batches(batch, rows, 20)] == [[0, 1], [2], [3]]
    assert [g.tolist() for g in micro_batches(batch, rows, 22)] == [[0, 1], [2, 3]]
    assert [g.tolist() for g in micro_batches(batch, rows, 0)] == [[0, 1, 2, 3]]
    assert [g.tolist() for g in micro_batches(batch, rows, 1)] == [
        [0],
        [1],
        [2],
        [3],
    ]  # a row alone may exceed


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 12), st.integers(1, 12)), min_size=1, max_size=24),
    st.integers(1, 120),
)
def test_micro_batches_keep_order_cover_every_row_and_respect_the_budget(lengths, budget):
    batch = fake_rollout([p for p, _ in lengths], [r for _, r in lengths])
    rows = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(budget))
    groups = micro_batches(batch, rows, budget)
    assert torch.equal(torch.cat(groups), rows)
    for group in groups:
        p = batch.prompt_mask.sum(-1)[group].max()
        r = batch.response_mask.sum(-1)[group].max()
        assert len(group) == 1 or len(group) * (p + r) <= budget


@pytest.mark.parametrize(
    ("aggregation", "epochs", "minibatches"),
    [*((a, 1, 1) for a in losses.AGGREGATIONS), ("token_mean", 2, 2)],  # 2 x 2: pi_old recomputed
)
def test_micro_batched_update_equals_the_whole_batch_update(setup, aggregation, epochs, minibatches):
    cfg, _, policy, _, batch = setup
    advantages = torch.randn(batch.response_ids.shape[0], generator=torch.Generator().manual_seed(1))
    loss = losses.get("ppo_clip")
    params = loss.params(aggregation=aggregation)

    def step(budget: int) -> tuple[dict, dict]:
        trial = dataclasses.replace(policy, model=copy.deepcopy(policy.model))
        run_cfg = copy.deepcopy(cfg)
        run_cfg.trainer.micro_batch_tokens = budget
        run_cfg.trainer.update_epochs, run_cfg.trainer.minibatches = epochs, minibatches
        run_cfg.rollout.max_new_tokens = 8
        lr = 1.0 / (epochs * minibatches)  # the weights move by the gradient(s)
        optimizer = torch.optim.SGD(trial.model.parameters(), lr=lr)
        metrics = update_policy(trial, optimizer, batch, advantages, loss, params, run_cfg, step=1)
        return {k: v.detach().clone() for k, v in trial.model.named_parameters()}, metrics

    whole, whole_metrics = step(0)
    split, split_metrics = step(40)  # ~3 rows of 14 tokens each: 11 micro-batches
    assert len(micro_batches(batch, torch.arange(batch.response_ids.shape[0]), 40)) > 4
    for name, weight in whole.items():
        assert torch.allclose(split[name], weight, atol=1e-5, rtol=1e-4), name
    assert split_metrics["train/loss"] == pytest.approx(whole_metrics["train/loss"], abs=1e-5)
    assert split_metrics["train/grad_norm"] == pytest.approx(whole_metrics["train/grad_norm"], rel=1e-4)


def test_a_loss_with_batch_wide_statistics_refuses_micro_batches():
    with pytest.raises(ConfigError, match="trainer.micro_batch_tokens': loss 'clip_cov'"):
        load(["loss=clip_cov", "trainer.micro_batch_tokens=4096"])
    load(["loss=clip_cov"])  # fine without


# -- gradient checkpointing, autocast ----------------------------------------------------------


def test_gradient_checkpointing_gives_the_same_gradients(setup):
    _, _, policy, _, batch = setup
    rows = torch.arange(batch.response_ids.shape[0])

    def gradients(checkpointing: bool) -> dict[str, torch.Tensor]:
        model = copy.deepcopy(policy.model).train()
        if checkpointing:
            models.enable_activation_checkpointing(model)
        logprobs, _ = rollout.token_logprobs(model, batch, rows, 1.0)
        (logprobs * batch.response_mask).sum().backward()
        return {k: p.grad.clone() for k, p in model.named_parameters()}

    plain, checkpointed = gradients(False), gradients(True)
    for name, grad in plain.items():
        assert torch.allclose(checkpointed[name], grad, atol=1e-6), name


def test_bfloat16_autocast_computes_in_bf16_and_keeps_float32_weights(setup):
    _, _, policy, prompts, _ = setup
    mixed = dataclasses.replace(policy, model=copy.deepcopy(policy.model), autocast="bfloat16")
    ids = policy.tokenizer(prompts[:2], return_tensors="pt", padding=True)["input_ids"]
    with mixed.compute():
        logits = mixed.model(input_ids=ids).logits
    assert logits.dtype == torch.bfloat16
    assert {p.dtype for p in mixed.model.parameters()} == {torch.float32}
    torch.manual_seed(0)
    sampled = rollout.HFEngine(mixed).generate(prompts, 4, SamplingParams(max_new_tokens=8))
    assert torch.isfinite(sampled.logprobs).all() and sampled.response_mask.any()


@pytest.mark.slow
def test_a_mixed_precision_micro_batched_checkpointed_run_learns_finite(fast_overrides):
    (cfg,) = load(
        [
            *fast_overrides,
            "model.autocast=bfloat16",
            "trainer.gradient_checkpointing=true",
            "trainer.micro_batch_tokens=64",
        ]
    )
    steps = []
    result = train(cfg, on_step=lambda step, metrics: steps.append(metrics))
    assert len(steps) == cfg.trainer.steps
    assert all(torch.isfinite(torch.tensor(m["train/loss"])) for m in steps)
    assert all(m["system/peak_memory_gib"] > 0 for m in steps)
    assert result.summary.peak_memory_gib >= steps[0]["system/peak_memory_gib"]


# -- engines ------------------------------------------------------------------------------------


def test_static_kv_cache_samples_what_the_dynamic_one_does(setup):
    _, _, policy, prompts, _ = setup
    sampling = SamplingParams(max_new_tokens=8)
    out = {}
    for cache in ("dynamic", "static"):
        torch.manual_seed(3)
        out[cache] = rollout.HFEngine(policy, cache=cache).generate(prompts, 4, sampling)
    assert torch.equal(out["static"].response_ids, out["dynamic"].response_ids)
    assert torch.allclose(out["static"].logprobs, out["dynamic"].logprobs, atol=1e-5)


def test_paged_engine_samples_with_its_own_logprobs_matching_the_trainer(setup):
    _, _, policy, prompts, _ = setup
    engine = rollout.PagedEngine(policy)
    sampling = SamplingParams(temperature=0.8, max_new_tokens=8)
    torch.manual_seed(5)
    first = engine.generate(prompts[:4], 3, sampling)
    torch.manual_seed(5)
    again = engine.generate(prompts[:4], 3, sampling)
    assert first.texts == again.texts  # seeded from torch's RNG
    assert first.response_ids.shape[0] == 12 and first.response_mask.any(-1).all()
    # row i*n+j is a sample of prompt i: its prompt tokens are that prompt's
    expected = policy.tokenizer(prompts[:4], add_special_tokens=False)["input_ids"]
    for row in range(12):
        ids = first.prompt_ids[row][first.prompt_mask[row].bool()].tolist()
        assert ids == expected[row // 3]
    # the engine's own log-probs are the trainer's at the sampling temperature
    with torch.no_grad():
        trainer, entropy = rollout.token_logprobs(policy.model, first, torch.arange(12), 0.8)
    mask = first.response_mask
    assert torch.allclose(first.logprobs[mask], trainer[mask], atol=1e-4)
    assert torch.allclose(first.entropy[mask], entropy[mask], atol=1e-4)
    # greedy: the same completions as hf's greedy generate
    greedy = SamplingParams(max_new_tokens=8, greedy=True)
    assert (
        engine.generate(prompts, 1, greedy).texts
        == rollout.HFEngine(policy).generate(prompts, 1, greedy).texts
    )


def test_paged_engine_under_autocast_decodes_in_bf16_on_a_synced_copy(setup):
    """Continuous batching decodes in its own thread, where autocast (thread-local) does not
    reach: under model.autocast the engine keeps a bf16 copy, refreshed by sync."""
    _, _, policy, prompts, _ = setup
    mixed = dataclasses.replace(policy, model=copy.deepcopy(policy.model), autocast="bfloat16")
    engine = rollout.PagedEngine(mixed)
    seen = set()
    engine.model.lm_head.register_forward_hook(lambda module, args, out: seen.add(out.dtype))
    torch.manual_seed(0)
    engine.generate(prompts[:2], 2, SamplingParams(max_new_tokens=4))
    assert seen == {torch.bfloat16}
    assert {p.dtype for p in mixed.model.parameters()} == {torch.float32}  # the trainer's stay fp32
    with torch.no_grad():
        for p in mixed.model.parameters():
            p.add_(0.01)
    engine.sync(mixed)
    for name, weight in mixed.model.state_dict().items():
        assert torch.equal(engine.model.state_dict()[name], weight.to(torch.bfloat16)), name


def test_assemble_masks_after_eos_flags_truncation_and_scores_missing_logprobs(setup):
    _, _, policy, _, _ = setup
    tok = policy.tokenizer
    eos, a, b = tok.eos_token_id, tok.convert_tokens_to_ids("1"), tok.convert_tokens_to_ids("2")
    prompt = tok("3+4=", add_special_tokens=False)["input_ids"]
    sampling = SamplingParams(max_new_tokens=3)
    batch = rollout.assemble(policy, [prompt] * 3, [[a, eos], [a, b, a], [b]], None, sampling)
    assert batch.response_mask.tolist() == [[True, True, False], [True, True, True], [True, False, False]]
    assert batch.truncated.tolist() == [False, True, True]
    assert batch.texts == ["1", "121", "2"]
    with torch.no_grad():
        scored, _ = rollout.token_logprobs(policy.model, batch, torch.arange(3), 1.0)
    assert torch.allclose(batch.logprobs, scored.masked_fill(~batch.response_mask, 0.0), atol=1e-6)
    given_logprobs = [[-0.5, -0.25], [-1.0, -2.0, -3.0], [-0.125]]
    kept = rollout.assemble(policy, [prompt] * 3, [[a, eos], [a, b, a], [b]], given_logprobs, sampling)
    assert kept.logprobs.tolist() == [[-0.5, -0.25, 0.0], [-1.0, -2.0, -3.0], [-0.125, 0.0, 0.0]]


# -- what needs CUDA fails clearly without it ---------------------------------------------------


needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message a CPU machine gets")


@needs_no_cuda
def test_compiling_generate_without_cuda_says_so(setup):
    _, _, policy, _, _ = setup
    with pytest.raises(EngineUnavailable, match="rollout.compile.*needs CUDA.*on cpu"):
        rollout.HFEngine(policy, cache="static", compile=True)
    with pytest.raises(ConfigError, match="rollout.compile.*rollout.cache=static"):
        load(["rollout.compile=true"])


@needs_no_cuda
def test_vllm_without_cuda_says_so(setup):
    _, _, policy, _, _ = setup
    with pytest.raises(EngineUnavailable, match="vllm needs CUDA; the policy is on cpu"):
        rollout.build(load(["rollout.engine=vllm"])[0].rollout, policy)


def test_vllm_not_installed_says_how_to_install(setup):
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401

        pytest.skip("vllm is installed here")
    except ImportError:
        pass
    _, _, policy, _, _ = setup
    on_gpu = dataclasses.replace(policy, device=torch.device("cuda"))  # only the device's kind is read
    with pytest.raises(EngineUnavailable, match=r"pip install 'advbench\[vllm\]'"):
        rollout.VLLMEngine(on_gpu)


@needs_no_cuda
@pytest.mark.parametrize("scale", ["10m", "50m", "200m"])
def test_a_built_in_gpu_scale_on_a_cpu_machine_fails_before_any_work(scale, fast_overrides, tmp_path):
    (cfg,) = load([f"model={scale}", f"cache_dir={tmp_path}/cache"])
    task = tasks.build(cfg.task, cfg.cache_dir)
    with pytest.raises(ConfigError, match="model.device': cuda was asked for, but torch sees no CUDA"):
        warmstart.load_policy(cfg.model, task, cfg.cache_dir)
    assert not (tmp_path / "cache" / "models").exists()  # no warm start was begun


@pytest.mark.parametrize(
    ("scale", "low", "high"), [("10m", 9e6, 11e6), ("50m", 45e6, 55e6), ("200m", 180e6, 220e6)]
)
def test_built_in_scales_have_their_size(scale, low, high):
    (cfg,) = load([f"model={scale}"])
    tokenizer = models.fit_tokenizer(["0123456789+-*/= ()abcdefghijklmnopqrstuvwxyz"])
    with torch.device("meta"):
        model = models.build_tiny(cfg.model, tokenizer)
    count = sum(p.numel() for p in model.parameters())
    assert low <= count <= high, count
    assert (cfg.model.dtype, cfg.model.autocast, cfg.model.device) == ("float32", "bfloat16", "cuda")


@needs_no_cuda
def test_run_and_suite_on_gpu_scales_stop_before_tracking_without_cuda(fast_overrides, tmp_path, capsys):
    from advbench.harness.cli import main

    assert main(["run", "model=50m", *fast_overrides]) == 2
    assert main(["suite", "gpu-50m", *fast_overrides[-2:]]) == 2
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert (
        " ".join(out.split()).count("model.device': cuda was asked for, but torch sees no CUDA device") == 2
    )
    assert not (tmp_path / "mlflow.db").exists()  # nothing was started


@pytest.mark.slow
def test_a_run_with_the_paged_engine(fast_overrides):
    """The loop with continuous batching: samples, evals and syncs through the one interface."""
    (cfg,) = load([*fast_overrides, "rollout=paged", "rollout.max_new_tokens=6"])
    steps = []
    result = train(cfg, on_step=lambda step, metrics: steps.append(metrics))
    assert len(steps) == cfg.trainer.steps and len(result.evals) == 3
    # single update, no TIS: the first forward runs on the sampling weights, so the mismatch
    # metric measures the engine's log-probs against the trainer's (float rounding only)
    assert all(m["train/logprob_mismatch_max"] < 1e-3 for m in steps)
    assert all(0 < m["train/response_length"] <= 6 for m in steps)


CUDA_ONLY = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (benchmarks/gpu_session.sh runs it)"
)


@CUDA_ONLY
def test_a_run_on_cuda_under_autocast(fast_overrides):
    """The whole loop on a GPU: rollout and update there, estimator and verifier on the CPU.

    The first GPU run (2026-11-29, H200) failed at its first step's metrics: the sign/difficulty
    axes mixed the policy's masks (GPU) with the estimator's advantages (CPU). CPU runs cannot
    see such a mix, so this runs where a GPU is.
    """
    overrides = [*fast_overrides, "model.device=cuda", "model.autocast=bfloat16", "geometry.every=2"]
    (cfg,) = load([*overrides, "trainer.checkpoint_every=2"])
    steps = []
    result = train(cfg, on_step=lambda step, metrics: steps.append(metrics))
    assert len(steps) == cfg.trainer.steps and len(result.evals) == 3
    assert all(math.isfinite(value) for m in steps for value in m.values())
    assert any(m["axes/mass_pos"] + m["axes/mass_neg"] > 0 for m in steps)  # groups can all tie


class _Killed(Exception):
    pass


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA_ONLY)])
def test_a_run_resumes_from_its_checkpoint_on_its_device(fast_overrides, device):
    """A checkpoint loads onto the CPU; a resumed GPU run must take its state back to the GPU.

    The 150-step gpu-50m suite (2026-11-30, H200) failed a cell resumed after a timeout: the
    geometry probe compared this step's gradient (GPU) with the checkpointed previous one (CPU).
    The CPU case checks the test's own kill-and-resume; the CUDA case is the one that failed.
    """
    overrides = [*fast_overrides, f"model.device={device}", "geometry.every=2"]
    if device == "cuda":
        overrides.append("model.autocast=bfloat16")
    (cfg,) = load([*overrides, "trainer.checkpoint_every=2"])

    def kill_after_the_checkpoint(step, metrics):
        if step == 3:
            raise _Killed

    with pytest.raises(_Killed):
        train(cfg, on_step=kill_after_the_checkpoint)
    saved = checkpoint.load(cfg, None)
    assert saved is not None and saved["step"] == 2
    steps = []
    train(cfg, resume=saved, on_step=lambda step, metrics: steps.append(metrics))
    assert len(steps) == cfg.trainer.steps - 2
    assert all(math.isfinite(value) for m in steps for value in m.values())
    assert any("cosine_prev" in key for key in steps[0])  # compared with the restored gradient
