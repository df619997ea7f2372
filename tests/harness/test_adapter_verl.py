"""advbench's estimators and losses in verl's registries (harness/adapters/verl.py), checked against
verl's own functions on the CPU.

verl pins transformers >= 5.5.3, < 5.11, older than advbench's test venv takes: `.ci/run` installs
the `verl` extra in a venv of its own and runs this file there; elsewhere it is skipped. verl's
trainer needs GPUs (FSDP workers, vLLM or SGLang rollouts) and is not run here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip(
    "verl",
    reason="verl is an optional extra with its own transformers pin: .ci/run tests it in a venv of its own",
)

from verl.trainer.config import AlgoConfig  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402

from advbench import estimators  # noqa: E402
from advbench.harness.adapters import verl as adapter  # noqa: E402
from advbench.harness.errors import ConfigError  # noqa: E402


def batch(seed: int, sizes=(2, 3, 5, 4, 6, 2), length: int = 7):
    """A verl batch: groups of varying size in shuffled order, uid strings, token-level rewards
    holding each outcome reward on its last response token, and response masks of varying length."""
    gen = torch.Generator().manual_seed(seed)
    index = np.array([f"uid-{g}" for g, size in enumerate(sizes) for _ in range(size)], dtype=object)
    order = torch.randperm(len(index), generator=gen).numpy()
    index = index[order]
    lengths = torch.randint(1, length + 1, (len(index),), generator=gen)
    mask = (torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)).float()
    scores = torch.randint(0, 2, (len(index),), generator=gen).float() * torch.rand(len(index), generator=gen)
    token_rewards = torch.zeros(len(index), length)
    token_rewards[torch.arange(len(index)), lengths - 1] = scores
    return token_rewards, mask, index


VERL_EQUIVALENT = [  # advbench name, verl name, verl's keyword arguments
    ("grpo", "grpo", {"norm_adv_by_std_in_grpo": True}),
    ("dr_grpo", "grpo", {"norm_adv_by_std_in_grpo": False}),
    ("rloo", "rloo", {}),
    ("opo", "opo", {}),
    ("reinforce_pp", "reinforce_plus_plus", {}),  # with unbiased=True: verl whitens with N - 1
]
PARAMS = {"estimator": {"reinforce_pp": {"unbiased": True}}}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ours, theirs, kwargs", VERL_EQUIVALENT)
def test_registered_estimators_agree_with_verls_own(ours, theirs, kwargs, seed, monkeypatch):
    monkeypatch.setenv(adapter.PARAMS_ENV, json.dumps(PARAMS))
    adapter.register()
    token_rewards, mask, index = batch(seed)
    config = AlgoConfig(gamma=1.0)
    got, returns = core_algos.get_adv_estimator_fn(f"advbench_{ours}")(
        token_level_rewards=token_rewards, response_mask=mask, index=index, config=config
    )
    want, _ = core_algos.get_adv_estimator_fn(theirs)(
        token_level_rewards=token_rewards, response_mask=mask, index=index, config=config, **kwargs
    )
    assert got.abs().sum() > 0 and torch.equal(got, returns)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_remax_takes_verls_reward_baselines_and_says_when_they_are_missing():
    adapter.register()
    token_rewards, mask, index = batch(3)
    greedy = {uid: float(i % 2) for i, uid in enumerate(sorted(set(index)))}
    baselines = torch.tensor([greedy[uid] for uid in index])
    got, _ = core_algos.get_adv_estimator_fn("advbench_remax")(
        token_level_rewards=token_rewards, response_mask=mask, index=index, reward_baselines=baselines
    )
    want, _ = core_algos.get_adv_estimator_fn("remax")(
        token_level_rewards=token_rewards, reward_baselines=baselines, response_mask=mask
    )
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="only when algorithm.adv_estimator is its own 'remax'"):
        core_algos.get_adv_estimator_fn("advbench_remax")(
            token_level_rewards=token_rewards, response_mask=mask, index=index
        )


def test_every_estimator_is_registered_and_gives_finite_masked_advantages():
    names = adapter.register()
    assert {f"advbench_{name}" for name in estimators.names()} | {"advbench_dppo", "advbench_drpo"} == set(
        names
    )
    token_rewards, mask, index = batch(4)
    baselines = torch.zeros(len(index))
    for name in estimators.names():
        fn = core_algos.get_adv_estimator_fn(f"advbench_{name}")
        if name == "unlikeliness":
            with pytest.raises(ConfigError, match="needs rollout log-probs, which verl does not pass"):
                fn(token_level_rewards=token_rewards, response_mask=mask, index=index)
            continue
        advantages, _ = fn(
            token_level_rewards=token_rewards, response_mask=mask, index=index, reward_baselines=baselines
        )
        assert advantages.shape == mask.shape and torch.isfinite(advantages).all(), name
        assert (advantages[mask == 0] == 0).all(), name


def test_fade_keeps_its_state_from_call_to_call():
    adapter.register()
    fn = core_algos.get_adv_estimator_fn("advbench_fade")
    token_rewards, mask, index = batch(5)
    first, _ = fn(token_level_rewards=token_rewards, response_mask=mask, index=index)
    for _ in range(30):  # a solve rate well below 0.5 moves p_hat down and the focus toward hard prompts
        again, _ = fn(token_level_rewards=token_rewards * 0, response_mask=mask, index=index)
    later, _ = fn(token_level_rewards=token_rewards, response_mask=mask, index=index)
    assert not torch.allclose(first, later)


class ActorConfig(dict):
    """What verl's policy losses read from its ActorConfig."""

    def __getattr__(self, key):
        return self[key]


def test_dppo_gradient_equals_verls_dppo_tv():
    adapter.register()
    gen = torch.Generator().manual_seed(0)
    old = torch.log(torch.rand(6, 5, generator=gen) * 0.9 + 0.05)
    new = (old + 0.3 * torch.randn(6, 5, generator=gen)).clamp(max=-1e-3)
    advantages = torch.randn(6, 1, generator=gen).expand(6, 5)
    mask = (torch.rand(6, 5, generator=gen) > 0.2).float()
    config = ActorConfig(
        clip_ratio=0.15, clip_ratio_low=None, clip_ratio_high=None, clip_ratio_c=20.0, global_batch_info={}
    )
    grads = []
    for name in ("advbench_dppo", "dppo_tv"):
        logprobs = new.clone().requires_grad_(True)
        loss, metrics = core_algos.get_policy_loss_fn(name)(
            old_log_prob=old, log_prob=logprobs, advantages=advantages, response_mask=mask, config=config
        )
        loss.backward()
        grads.append(logprobs.grad)
    assert grads[1].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_drpo_trains_in_verls_loss_slot():
    adapter.register()
    old = torch.log(torch.full((4, 3), 0.5))
    logprobs = (old + 0.1).requires_grad_(True)
    loss, metrics = core_algos.get_policy_loss_fn("advbench_drpo")(
        old_log_prob=old,
        log_prob=logprobs,
        advantages=torch.tensor([[1.0], [-1.0], [0.5], [0.0]]).expand(4, 3),
        response_mask=torch.ones(4, 3),
        loss_agg_mode="seq-mean-token-mean",
        config=ActorConfig(global_batch_info={}),
    )
    loss.backward()
    assert torch.isfinite(loss) and logprobs.grad.abs().sum() > 0 and metrics


def test_import_verl_loads_advbench_as_a_plugin():
    # verl imports its "verl.plugins" entry points on `import verl`; the registered entries are ours
    assert core_algos.ADV_ESTIMATOR_REGISTRY["advbench_fade"].__name__ == "advbench_fade"
    assert core_algos.POLICY_LOSS_REGISTRY["advbench_drpo"].__name__ == "advbench_drpo"


def test_bad_input_is_refused_naming_the_choices(monkeypatch):
    with pytest.raises(ConfigError, match=r"supports verl >=0.9.1,<0.10 .*installed: verl 0.8.0"):
        adapter.check_verl_version("0.8.0")
    monkeypatch.setenv(adapter.PARAMS_ENV, json.dumps({"estimator": {"fadee": {}}}))
    with pytest.raises(ConfigError, match=r"unknown estimator \['fadee'\]; registered: .*fade"):
        adapter.register()
    monkeypatch.setenv(adapter.PARAMS_ENV, json.dumps({"estimator": {"grpo": {"epsilon": 1}}}))
    with pytest.raises(ConfigError, match="has no hyperparameter 'epsilon'; its hyperparameters are: eps"):
        adapter.register()
    monkeypatch.setenv(adapter.PARAMS_ENV, json.dumps({"loss": {"drpo": {"deltaa": 1.0}}}))
    with pytest.raises(
        ConfigError, match="loss 'drpo' has no hyperparameter 'deltaa'; its hyperparameters are"
    ):
        adapter.register()
    monkeypatch.setenv(adapter.PARAMS_ENV, json.dumps({"loss": {"ppo_clip": {}}}))
    with pytest.raises(ConfigError, match="advbench's losses in verl"):
        adapter.register()
    monkeypatch.setenv(adapter.PARAMS_ENV, "{not json")
    with pytest.raises(ConfigError, match="is not JSON"):
        adapter.register()
    monkeypatch.setenv(adapter.PARAMS_ENV, json.dumps({"estimator": {"grpo": {"eps": 1e-4}}}))
    adapter.register()  # good parameters register again over advbench's own entries
    with pytest.raises(ConfigError, match="not advbench's"):
        adapter._put(core_algos.ADV_ESTIMATOR_REGISTRY, "grpo", lambda: None)


def test_verls_trainer_has_no_rollout_this_machine_can_run():
    """Why verl's trainer is not run here: verl 0.9.1 samples only through rollout servers (vLLM,
    SGLang, TensorRT-LLM), none of which installs on these CPU machines; its HF rollout is not wired
    into the trainer. Should that change, this fails, and a CPU run of a few steps belongs here."""
    import importlib.util

    from verl.workers.rollout.replica import RolloutReplicaRegistry

    backends = {"vllm": "vllm", "sglang": "sglang", "trtllm": "tensorrt_llm"}
    assert set(RolloutReplicaRegistry._registry) == set(backends)
    assert [name for name, module in backends.items() if importlib.util.find_spec(module)] == []
