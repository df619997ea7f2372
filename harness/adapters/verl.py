"""advbench's estimators and losses in verl's registries, for runs bigger than one GPU (Ray, FSDP
or Megatron):

    pip install 'advbench[verl]'
    python -m verl.trainer.main_ppo algorithm.adv_estimator=advbench_fade \\
        actor_rollout_ref.actor.policy_loss.loss_mode=advbench_drpo ...

With advbench installed, verl loads its plugin (the entry point ``advbench`` in verl's
"verl.plugins" group, loaded by ``import verl`` in every process, its Ray workers included), which
calls ``register()``: every advbench estimator becomes ``advbench_<name>`` in verl's advantage
registry, and advbench's dppo and drpo ``advbench_dppo`` and ``advbench_drpo`` in its policy-loss
registry. Hyperparameters are the papers' defaults, or JSON in the environment variable
``ADVBENCH_VERL_PARAMS``: ``{"estimator": {"fade": {"ema": 0.05}}, "loss": {"drpo": {...}}}``.

How verl's calls meet advbench's contracts:
  groups     verl's ``index`` (each sample's prompt ``uid``) groups the batch; groups may differ in
             size (``Groups.from_index``). Without an index each sample is its own group.
  rewards    a sample's reward is the sum of its token-level rewards (verl's outcome estimators do
             the same); every sample is valid.
  outputs    [B] advantages are broadcast over the response mask, token-level ones masked; verl's
             ``returns`` are the advantages, as in its own outcome estimators.
  greedy     ReMax's greedy rewards are verl's ``reward_baselines``. verl's trainer samples them only
             when ``adv_estimator`` is its own "remax": ``advbench_remax`` says so when they are missing.
  state      a stateful estimator (FADE) keeps its state in the process that computes advantages
             (verl's driver) from step to step; verl's checkpoints do not hold it, so a resumed verl
             run starts FADE's moving averages again. verl passes no entropy and no step to an
             advantage function: FADE's solve rate comes from the rewards (>= ``correct_at``), its
             entropy term stays off (delta = 1, as FADE does without an entropy signal).
  losses     advbench's surrogate gives the token losses; verl's ``agg_loss`` aggregates them with
             its ``loss_agg_mode`` and its global batch normalisers (so data parallelism changes
             nothing), and verl's rollout-correction weights multiply them as in verl's own losses.
             verl adds its own KL and entropy terms; advbench's are not used. DPPO's anchor mu is
             verl's ``old_log_prob`` (the rollout policy in verl's bypass mode), as in verl's dppo_tv.
Estimators that read what verl does not hand to an advantage function (rollout log-probs:
unlikeliness; reference log-probs: reinforce_pp with kl_coef > 0, use verl's
``algorithm.use_kl_in_reward`` instead) are registered and raise, naming why, when first called.

verl's trainer itself needs GPUs (FSDP, vLLM or SGLang rollouts): it is not run on this project's
CPU machines; the registered functions are tested against verl's own on the CPU.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from advbench import estimators
from advbench.estimators.registry import build_params
from advbench.harness import losses
from advbench.harness.adapters import AdvantageCall, Groups
from advbench.harness.errors import ConfigError

try:
    import verl
    from verl.trainer.ppo import core_algos
except ImportError as exc:  # an optional extra
    raise ImportError("advbench's verl adapter needs verl: pip install 'advbench[verl]'") from exc

SUPPORTED_VERL = ">=0.9.1,<0.10"  # the versions verified here; keep in step with pyproject's `verl` extra
PREFIX = "advbench_"
LOSSES = ("dppo", "drpo")
PARAMS_ENV = "ADVBENCH_VERL_PARAMS"
# What an advantage function in verl is not given (see the module docstring).
NOT_PASSED = {
    "unlikeliness": "rollout log-probs, which verl does not pass to an advantage function",
    "ref_logprobs": "reference log-probs, which verl does not pass to an advantage function "
    "(verl folds its KL into the rewards: algorithm.use_kl_in_reward)",
}


def check_verl_version(version: str) -> None:
    """Refuse a verl outside ``SUPPORTED_VERL``: the registries' call signatures are verl's own."""
    if Version(version) not in SpecifierSet(SUPPORTED_VERL):
        raise ConfigError(
            f"advbench's verl adapter supports verl {SUPPORTED_VERL} (pip install 'advbench[verl]'); "
            f"installed: verl {version}"
        )


def params_from_env() -> dict[str, dict[str, dict[str, Any]]]:
    """``ADVBENCH_VERL_PARAMS`` as {"estimator": {name: params}, "loss": {name: params}}."""
    raw = os.environ.get(PARAMS_ENV, "").strip()
    if not raw:
        return {"estimator": {}, "loss": {}}
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{PARAMS_ENV} is not JSON: {exc}") from None
    unknown = sorted(set(parsed) - {"estimator", "loss"})
    if unknown:
        raise ConfigError(f"{PARAMS_ENV} has keys {unknown}; its keys are: estimator, loss")
    return {"estimator": parsed.get("estimator", {}), "loss": parsed.get("loss", {})}


def advantage_fn(
    call: AdvantageCall, correct_at: float = 1.0
) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """verl's advantage-function signature around one advbench estimator."""
    reason = NOT_PASSED.get(call.name) or (
        NOT_PASSED["ref_logprobs"] if "ref_logprobs" in call.needs else None
    )

    def compute(token_level_rewards, response_mask, index=None, reward_baselines=None, config=None, **_):
        if reason:
            raise ConfigError(f"{PREFIX}{call.name} needs {reason}")
        scores = token_level_rewards.sum(dim=-1).float()
        groups = Groups.from_index(np.arange(scores.numel()) if index is None else index)
        tokens = {"response_mask": response_mask.bool()}
        greedy = None
        if "greedy_rewards" in call.needs:
            if reward_baselines is None:
                raise ConfigError(
                    f"{PREFIX}{call.name} needs greedy rewards: verl samples them (reward_baselines) "
                    "only when algorithm.adv_estimator is its own 'remax'"
                )
            greedy = groups.grid(reward_baselines.float())[:, 0]
        signals = estimators.TrainingSignals(batch_pass_rate=float((scores >= correct_at).float().mean()))
        with torch.no_grad():
            advantages, _ = call(groups, scores, tokens=tokens, signals=signals, greedy_rewards=greedy)
        mask = response_mask.to(advantages.dtype)
        advantages = advantages * mask if advantages.dim() == 2 else advantages.unsqueeze(-1) * mask
        return advantages, advantages

    compute.__name__ = f"{PREFIX}{call.name}"
    return compute


def policy_loss_fn(
    name: str, params: Mapping[str, Any] | None = None
) -> Callable[..., tuple[torch.Tensor, dict]]:
    """verl's policy-loss signature around advbench's surrogate ``name`` (module docstring)."""
    loss = losses.get(name)
    try:  # the same checks as a run's `loss` node: unknown names refused, values typed
        base = build_params(loss.params, params, f"loss '{name}'")
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None

    def compute(
        old_log_prob,
        log_prob,
        advantages,
        response_mask,
        loss_agg_mode="token-mean",
        config=None,
        rollout_is_weights=None,
    ):
        batch = losses.LossBatch(
            logprobs=log_prob,
            old_logprobs=old_log_prob,
            rollout_logprobs=old_log_prob,  # mu: verl's old_log_prob, as in its own dppo_tv
            advantages=advantages,
            mask=response_mask.bool(),
            max_len=response_mask.shape[-1],
        )
        token_losses, metrics = loss.fn(batch, base)
        if rollout_is_weights is not None:
            token_losses = token_losses * rollout_is_weights
        batch_info = getattr(config, "global_batch_info", None) or {}
        aggregated = core_algos.agg_loss(token_losses, response_mask, loss_agg_mode, **batch_info)
        return aggregated, {f"actor/advbench_{key}": value for key, value in metrics.items()}

    compute.__name__ = f"{PREFIX}{name}"
    return compute


def register(correct_at: float = 1.0) -> list[str]:
    """Put every advbench estimator and dppo, drpo into verl's registries (``PREFIX`` + name), with
    the hyperparameters of ``ADVBENCH_VERL_PARAMS``; returns the names registered. Registering
    again replaces advbench's own entries; a verl entry of the same name is never overwritten."""
    check_verl_version(verl.__version__)
    chosen = params_from_env()
    unknown = sorted(set(chosen["loss"]) - set(LOSSES))
    if unknown:
        raise ConfigError(
            f"{PARAMS_ENV}: no verl entry for loss {unknown}; advbench's losses in verl: {LOSSES}"
        )
    unused = sorted(set(chosen["estimator"]) - set(estimators.names()))
    if unused:
        raise ConfigError(
            f"{PARAMS_ENV}: unknown estimator {unused}; registered: {', '.join(estimators.names())}"
        )
    registered = []
    for name in estimators.names():
        fn = advantage_fn(AdvantageCall(name, chosen["estimator"].get(name)), correct_at)
        registered.append(_put(core_algos.ADV_ESTIMATOR_REGISTRY, f"{PREFIX}{name}", fn))
    for name in LOSSES:
        fn = policy_loss_fn(name, chosen["loss"].get(name))
        registered.append(_put(core_algos.POLICY_LOSS_REGISTRY, f"{PREFIX}{name}", fn))
    return registered


def _put(registry: dict[str, Any], name: str, fn: Callable) -> str:
    held = registry.get(name)
    if held is not None and not getattr(held, "__name__", "").startswith(PREFIX):
        raise ConfigError(f"verl already has an entry '{name}' that is not advbench's")
    registry[name] = fn
    return name
