"""The policy-loss contract and what every loss shares: the batch, the common knobs (TIS, KL,
entropy, aggregation) applied around each surrogate, the registry, and the anchors to mu."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from advbench.estimators.registry import Registry, build_params, code_identity

AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_sum_const")
KL_ESTIMATORS = ("k1", "k2", "k3")


@dataclass
class LossBatch:
    """One (mini)batch of sampled response tokens, all [B, T]."""

    logprobs: torch.Tensor  # current policy, with gradient
    old_logprobs: torch.Tensor  # the policy that sampled, as the trainer computes it (PPO's pi_old)
    advantages: torch.Tensor
    mask: torch.Tensor  # response tokens
    max_len: int  # the token budget, for seq_sum_const
    rollout_logprobs: torch.Tensor | None = None  # as the rollout engine reported them (for TIS)
    ref_logprobs: torch.Tensor | None = None  # reference model, when kl_coef > 0
    entropy: torch.Tensor | None = None  # current policy's token entropy, with gradient


@dataclass
class CommonLossParams:
    """Switches every loss has."""

    aggregation: str = "token_mean"  # token_mean | seq_mean_token_mean | seq_sum_const
    tis_cap: float = 0.0  # truncated IS cap C on pi_old / pi_rollout; 0 turns TIS off
    kl_coef: float = 0.0  # KL to the reference model; 0 turns it off
    kl_estimator: str = "k3"  # k1 | k2 | k3: the estimator of the KL to the reference
    entropy_coef: float = 0.0  # an entropy bonus; 0 turns it off

    def __post_init__(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(
                f"aggregation must be one of {', '.join(AGGREGATIONS)}, got '{self.aggregation}'"
            )
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(
                f"kl_estimator must be one of {', '.join(KL_ESTIMATORS)}, got '{self.kl_estimator}'"
            )
        for name in ("tis_cap", "kl_coef", "entropy_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if 0 < self.tis_cap < 1:
            raise ValueError(f"tis_cap must be 0 (off) or >= 1, got {self.tis_cap}")


SurrogateFn = Callable[[LossBatch, Any], tuple[torch.Tensor, dict[str, float]]]


@dataclass(frozen=True)
class PolicyLoss:
    name: str
    fn: SurrogateFn
    params: type
    description: str
    source: str = ""  # the paper, with a confidence tag: [primary], [peer: framework] or [secondary]
    # The token losses of a row depend on the other rows (batch-wide statistics): such a loss cannot
    # be split into micro-batches (trainer.micro_batch_tokens) without changing what it computes.
    whole_batch: bool = False
    version: str = "1"  # bumped by its author when what it computes changes on purpose

    @property
    def identity(self) -> str:
        """Version and source hash (estimators.registry.code_identity): part of every run's identity."""
        return code_identity(self.fn, self.version)


_REGISTRY: Registry = Registry("loss", "losses")


def register(
    name: str, *, params: type, source: str = "", whole_batch: bool = False, version: str = "1"
) -> Callable[[SurrogateFn], SurrogateFn]:
    """Register ``fn(batch, params) -> (token_losses [B, T], metrics)``; params subclass CommonLossParams."""
    if not issubclass(params, CommonLossParams):
        raise TypeError(f"params of loss '{name}' must subclass CommonLossParams")

    def decorator(fn: SurrogateFn) -> SurrogateFn:
        doc = (fn.__doc__ or "").strip().splitlines()
        loss = PolicyLoss(
            name=name,
            fn=fn,
            params=params,
            description=doc[0] if doc else "",
            source=source,
            whole_batch=whole_batch,
            version=version,
        )
        _REGISTRY.add(name, loss)
        return fn

    return decorator


def temporary() -> contextlib.AbstractContextManager[None]:
    """Losses registered inside the block are forgotten after it (tests: register, run, forget)."""
    return _REGISTRY.temporary()


def names() -> list[str]:
    """The registered policy losses, sorted."""
    return _REGISTRY.names()


def get(name: str) -> PolicyLoss:
    """The loss registered as ``name``; a clear error naming the valid choices otherwise."""
    return _REGISTRY.entry(name)


def resolve(node: Mapping[str, Any]) -> dict[str, Any]:
    """Check a ``loss`` config node ({name, **params}) and fill in the defaults."""
    node = dict(node)
    loss = get(node.pop("name", None))
    try:
        params = build_params(loss.params, node, f"loss '{loss.name}'")
    except ValueError as exc:
        message = str(exc)
        raise ValueError(message if message.startswith("loss '") else f"{loss.name}: {message}") from None
    return {"name": loss.name, **dataclasses.asdict(params)}


def aggregate(token_losses: torch.Tensor, mask: torch.Tensor, mode: str, max_len: int) -> torch.Tensor:
    """Reduce [B, T] token losses over the response mask to a scalar, by ``mode``.

    Rows without a response token (samples the estimator leaves out of the update) count in no
    normaliser: the sequence modes divide by the rows that train, as if the batch held only those.
    """
    mask = mask.to(token_losses.dtype)
    masked = token_losses * mask
    if mode == "token_mean":
        return masked.sum() / mask.sum().clamp(min=1.0)
    rows = training_rows(mask)
    if mode == "seq_mean_token_mean":
        return (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).sum() / max(1, rows)
    if mode == "seq_sum_const":
        return masked.sum() / (max(1, rows) * max_len)
    raise ValueError(f"unknown aggregation '{mode}'; choices: {', '.join(AGGREGATIONS)}")


def training_rows(mask: torch.Tensor) -> int:
    """The rows of a [B, T] response mask that hold a token: the sequences that train."""
    return int(mask.bool().any(-1).sum())


def share(mask: torch.Tensor, whole: torch.Tensor, mode: str) -> float:
    """The weight of a micro-batch's aggregated loss in its whole batch's: the fraction of the
    whole batch's normaliser it holds (``mask``: the micro-batch's response mask, ``whole``: the
    batch's). Summing ``share x aggregate(micro-batch)`` over micro-batches gives ``aggregate(batch)``."""
    if mode == "token_mean":
        return float(mask.sum()) / max(1.0, float(whole.sum()))
    # both sequence modes normalise by the number of rows that train
    return training_rows(mask) / max(1, training_rows(whole))


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def k3(log_ratio: torch.Tensor) -> torch.Tensor:
    """Schulman's (2020) k3 estimate of KL(p || q) per sample x ~ p, from log r = log q(x) - log p(x):
    r - 1 - log r (unbiased, never negative)."""
    return log_ratio.exp() - 1.0 - log_ratio


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi (Schulman 2020): k1, k2 or k3."""
    log_ratio = logprobs - ref_logprobs  # log pi / pi_ref
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    return k3(-log_ratio)  # r = pi_ref / pi


def policy_loss(
    loss: PolicyLoss, batch: LossBatch, params: CommonLossParams
) -> tuple[torch.Tensor, dict[str, float]]:
    """The scalar loss of ``batch``: the surrogate, TIS, KL and entropy terms, aggregated."""
    token_losses, metrics = loss.fn(batch, params)
    mask = batch.mask.bool()
    if params.tis_cap > 0:
        if batch.rollout_logprobs is None:
            raise ValueError("tis_cap > 0 needs the rollout engine's log-probs")
        weights = (batch.old_logprobs - batch.rollout_logprobs).exp().clamp(max=params.tis_cap).detach()
        token_losses = token_losses * weights
        metrics["tis_weight_mean"] = masked_mean(weights, mask).item()
        metrics["tis_capped_fraction"] = masked_mean((weights >= params.tis_cap).float(), mask).item()
    if params.kl_coef > 0:
        if batch.ref_logprobs is None:
            raise ValueError("kl_coef > 0 needs the reference model's log-probs")
        kl = kl_penalty(batch.logprobs, batch.ref_logprobs, params.kl_estimator)
        token_losses = token_losses + params.kl_coef * kl
        metrics["kl_ref"] = masked_mean(kl.detach(), mask).item()
    if params.entropy_coef > 0:
        if batch.entropy is None:
            raise ValueError("entropy_coef > 0 needs the token entropy")
        token_losses = token_losses - params.entropy_coef * batch.entropy
    with torch.no_grad():
        log_ratio = batch.logprobs - batch.old_logprobs
        ratio = log_ratio.exp()
        metrics.setdefault("ratio_mean", masked_mean(ratio, mask).item())
        metrics.setdefault("ratio_max", ratio[mask].max().item() if mask.any() else 1.0)
        metrics.setdefault("kl_k3", masked_mean(k3(log_ratio), mask).item())  # KL(pi_old || pi)
    return aggregate(token_losses, mask, params.aggregation, batch.max_len), metrics


# -- anchors to the rollout policy mu (the trust regions of dppo, drpo, spo) ----------------


def rollout_anchor(batch: LossBatch, loss: str) -> torch.Tensor:
    """mu's log-probs of the sampled tokens: the rollout engine's, which these losses anchor to."""
    if batch.rollout_logprobs is None:
        raise ValueError(
            f"loss '{loss}' anchors to the rollout policy and needs the rollout engine's log-probs"
        )
    return batch.rollout_logprobs.detach()


def clamped_ratio(logprobs: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """pi / anchor with the log-ratio clamped to +-20, as verl and the authors' code do."""
    return (logprobs - anchor).clamp(-20.0, 20.0).exp()
