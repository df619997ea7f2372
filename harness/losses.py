"""Policy losses: a registry of surrogate objectives, each with its hyperparameters and metrics.

A registered loss maps a ``LossBatch`` (all [B, T]) to per-token losses and its metrics. Around it,
``policy_loss`` applies what every loss can switch on, in one place:
  tis_cap        truncated importance sampling of the rollout/trainer mismatch (Yao et al. 2025):
                 token losses x min(pi_old_trainer / pi_rollout, tis_cap), detached; 0 = off
  kl_coef        + coef * KL(pi || pi_ref) per token, estimator k1 | k2 | k3 (Schulman 2020); 0 = off
  entropy_coef   - coef * token entropy (a bonus); 0 = off
  aggregation    how token losses become one number:
    token_mean            sum over all response tokens / number of response tokens (DAPO, verl default)
    seq_mean_token_mean   mean over sequences of each sequence's token mean (original GRPO)
    seq_sum_const         sum over tokens / (B * max_new_tokens), a constant length (Dr.GRPO, 2503.20783)

Registered surrogates: ppo_clip (clip-higher, dual clip), dppo (DPPO's directional Binary-TV /
Binary-KL mask against the rollout policy mu, with truncated IS), drpo and spo (smooth quadratic
regularisers toward mu), gspo (sequence-level ratio), cispo (clipped, detached IS weight), clip_cov
and kl_cov (the entropy controls of arXiv 2505.22617). shared/ESTIMATORS.md has the formulas and
their sources.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from advbench.estimators.registry import build_params, code_identity, forgetting

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

    aggregation: str = "token_mean"
    tis_cap: float = 0.0  # truncated IS cap C on pi_old / pi_rollout; 0 turns TIS off
    kl_coef: float = 0.0  # KL to the reference model; 0 turns it off
    kl_estimator: str = "k3"
    entropy_coef: float = 0.0

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
    # The token losses of a row depend on the other rows (batch-wide statistics): such a loss cannot
    # be split into micro-batches (trainer.micro_batch_tokens) without changing what it computes.
    whole_batch: bool = False
    version: str = "1"  # bumped by its author when what it computes changes on purpose

    @property
    def identity(self) -> str:
        """Version and source hash (estimators.registry.code_identity): part of every run's identity."""
        return code_identity(self.fn, self.version)


_REGISTRY: dict[str, PolicyLoss] = {}


def register(
    name: str, *, params: type, whole_batch: bool = False, version: str = "1"
) -> Callable[[SurrogateFn], SurrogateFn]:
    """Register ``fn(batch, params) -> (token_losses [B, T], metrics)``; params subclass CommonLossParams."""
    if not issubclass(params, CommonLossParams):
        raise TypeError(f"params of loss '{name}' must subclass CommonLossParams")

    def decorator(fn: SurrogateFn) -> SurrogateFn:
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = PolicyLoss(
            name=name,
            fn=fn,
            params=params,
            description=doc[0] if doc else "",
            whole_batch=whole_batch,
            version=version,
        )
        return fn

    return decorator


def temporary() -> contextlib.AbstractContextManager[None]:
    """Losses registered inside the block are forgotten after it (tests: register, run, forget)."""
    return forgetting(_REGISTRY)


def names() -> list[str]:
    """The registered policy losses, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> PolicyLoss:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), names(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise KeyError(f"unknown loss '{name}'{hint}; registered losses: {', '.join(names())}") from None


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


# -- the surrogates --------------------------------------------------------------------------


@dataclass
class PPOClipParams(CommonLossParams):
    clip_low: float = 0.2  # ratio floor 1 - clip_low (PPO, arXiv 1707.06347)
    clip_high: float = 0.2  # ratio ceiling 1 + clip_high; > clip_low is DAPO's clip-higher (2503.14476)
    dual_clip: float = (
        0.0  # c > 1 bounds the loss of A < 0 tokens at -c A (Ye et al. 2020, arXiv 1912.09729); 0 = off
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.clip_low < 1:
            raise ValueError(f"clip_low must be in (0, 1), got {self.clip_low}")
        if not self.clip_high > 0:
            raise ValueError(f"clip_high must be > 0, got {self.clip_high}")
        if self.dual_clip and self.dual_clip <= 1:
            raise ValueError(f"dual_clip must be 0 (off) or > 1, got {self.dual_clip}")


def clipped_surrogate(
    batch: LossBatch, clip_low: float, clip_high: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high)), r = pi / pi_old: (token losses,
    where the clip is active)."""
    ratio = (batch.logprobs - batch.old_logprobs).exp()
    unclipped = -batch.advantages * ratio
    clipped = -batch.advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    return torch.maximum(unclipped, clipped), clipped > unclipped


@register("ppo_clip", params=PPOClipParams)
def ppo_clip(batch: LossBatch, params: PPOClipParams) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clipped surrogate: max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high)), r = pi / pi_old; dual clip."""
    advantages = batch.advantages
    token_losses, clip_active = clipped_surrogate(batch, params.clip_low, params.clip_high)
    metrics = {"clip_fraction": masked_mean(clip_active.float(), batch.mask).item()}
    if params.dual_clip:
        bound = -advantages * params.dual_clip
        dual = (advantages < 0) & (token_losses > bound)
        token_losses = torch.where(dual, bound, token_losses)
        metrics["dual_clip_fraction"] = masked_mean(dual.float(), batch.mask).item()
    return token_losses, metrics


# -- trust regions against the rollout policy mu (training/inference mismatch) ------------------


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


DIVERGENCES = ("tv", "kl")
DPPO_DELTA = {"tv": 0.15, "kl": 0.05}  # the authors' thresholds per divergence


@dataclass
class DPPOParams(CommonLossParams):
    divergence: str = "tv"  # tv: Binary-TV |pi - mu|; kl: Binary-KL KL(Bern(mu) || Bern(pi))
    delta_low: float | None = None  # threshold for A <= 0 tokens; default 0.15 (tv) or 0.05 (kl)
    delta_high: float | None = None  # threshold for A > 0 tokens; same defaults
    is_cap: float = 20.0  # C: the detached IS weight pi / mu is truncated at C

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.divergence not in DIVERGENCES:
            raise ValueError(f"divergence must be one of {', '.join(DIVERGENCES)}, got '{self.divergence}'")
        for name in ("delta_low", "delta_high"):
            if getattr(self, name) is None:
                setattr(self, name, DPPO_DELTA[self.divergence])
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.is_cap > 0:
            raise ValueError(f"is_cap must be > 0, got {self.is_cap}")


def binary_kl(mu_logprobs: torch.Tensor, logprobs: torch.Tensor) -> torch.Tensor:
    """KL(Bern(mu) || Bern(pi)) of the sampled token's probability: the token vs everything else."""
    mu, pi = mu_logprobs.exp(), logprobs.exp()
    return mu * (mu_logprobs - logprobs) + (1 - mu) * torch.log((1 - mu + 1e-8) / (1 - pi + 1e-8))


@register("dppo", params=DPPOParams)
def dppo(batch: LossBatch, params: DPPOParams) -> tuple[torch.Tensor, dict[str, float]]:
    """DPPO (arXiv 2602.04879): drop tokens that moved past delta from mu in A's direction; IS-weighted PG.

    Binary-TV drops a token with A > 0 when pi - mu > delta_high and one with A <= 0 when
    pi - mu < -delta_low; Binary-KL drops it when KL(Bern(mu) || Bern(pi)) exceeds the threshold
    and pi moved in A's direction. A token moving back toward mu is never dropped. The kept tokens
    get -A min(pi / mu, C) log pi with the weight detached: truncated IS, whose gradient is
    -A min(r, C) grad log pi. mu is the rollout engine's policy (the authors' choice; a pi_old
    anchor is their ablation). Source: the authors' verl implementation [primary].
    """
    mu_logprobs = rollout_anchor(batch, "dppo")
    with torch.no_grad():
        logprobs = batch.logprobs.detach()
        ratio = clamped_ratio(logprobs, mu_logprobs)
        moved = logprobs.exp() - mu_logprobs.exp()  # pi - mu
        positive = batch.advantages > 0
        if params.divergence == "tv":
            divergence = moved.abs()
            dropped = torch.where(positive, moved > params.delta_high, moved < -params.delta_low)
        else:
            divergence = binary_kl(mu_logprobs, logprobs)
            dropped = torch.where(
                positive,
                (divergence > params.delta_high) & (moved > 0),
                (divergence > params.delta_low) & (moved < 0),
            )
        weight = ratio.clamp(max=params.is_cap) * ~dropped
    token_losses = -batch.advantages * weight * batch.logprobs
    return token_losses, {
        "mask_fraction": masked_mean(dropped.float(), batch.mask).item(),
        "divergence_mean": masked_mean(divergence, batch.mask).item(),
        "is_capped_fraction": masked_mean((ratio > params.is_cap).float(), batch.mask).item(),
    }


@dataclass
class DRPOParams(CommonLossParams):
    # The paper's and its code's value. The gradient weight 1 - sign(A) (pi - mu) / delta then moves
    # only within 1 +- 1/12.5 = 1 +- 0.08 (|pi - mu| <= 1): a light touch, far from DPPO's boundary.
    delta: float = 12.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.delta > 0:
            raise ValueError(f"delta must be > 0, got {self.delta}")


@dataclass
class SPOParams(DRPOParams):
    # SPO's epsilon: the ratio at which the weight 1 - sign(A) (r - 1) / eps reaches 0 (PPO's 0.2).
    delta: float = 0.2


def quadratic_regulariser(
    batch: LossBatch, delta: float, loss: str, scale_by_mu: bool
) -> tuple[torch.Tensor, dict[str, float]]:
    """-A r + |A| s (r - 1)^2 / (2 delta), r = pi / mu, s = mu (DRPO) or 1 (SPO), mu detached.

    The gradient with respect to log pi is -A r w with w = 1 - sign(A) s (r - 1) / delta (for DRPO
    s (r - 1) = pi - mu); w fades at the boundary in A's direction and turns corrective beyond it.
    """
    mu_logprobs = rollout_anchor(batch, loss)
    ratio = clamped_ratio(batch.logprobs, mu_logprobs)
    scale = mu_logprobs.exp() if scale_by_mu else 1.0
    penalty = batch.advantages.abs() * scale * (ratio - 1.0) ** 2 / (2.0 * delta)
    with torch.no_grad():
        weight = 1.0 - torch.sign(batch.advantages) * scale * (ratio - 1.0) / delta
    mask = batch.mask
    return -batch.advantages * ratio + penalty, {
        "trust_weight_mean": masked_mean(weight, mask).item(),
        "trust_weight_min": weight[mask.bool()].min().item() if mask.any() else 1.0,
        # beyond the boundary the weight turns negative: the token is pulled back toward mu
        "corrective_fraction": masked_mean((weight < 0).float(), mask).item(),
    }


@register("drpo", params=DRPOParams)
def drpo(batch: LossBatch, params: DRPOParams) -> tuple[torch.Tensor, dict[str, float]]:
    """DRPO (arXiv 2606.09821): -A r + |A| mu (r - 1)^2 / (2 delta), r = pi / mu, mu detached.

    A smooth quadratic regulariser with DPPO's geometry: the gradient with respect to log pi is
    -A r (1 - sign(A) (pi - mu) / delta), a weight that fades at DPPO's boundary |pi - mu| = delta
    in A's direction and turns corrective beyond it. Source: the paper and its code [primary].
    """
    return quadratic_regulariser(batch, params.delta, "drpo", scale_by_mu=True)


@register("spo", params=SPOParams)
def spo(batch: LossBatch, params: SPOParams) -> tuple[torch.Tensor, dict[str, float]]:
    """SPO (arXiv 2401.16025): -A r + |A| (r - 1)^2 / (2 delta), r = pi / mu: DRPO without the mu factor.

    An advantage-weighted chi-square penalty; the gradient weight is 1 - sign(A) (r - 1) / delta,
    zero at PPO's clip boundary r = 1 + delta for A > 0. The anchor is mu, as in DRPO (the
    divergence paper runs SPO through the same code) [primary, via arXiv 2606.09821's code].
    """
    return quadratic_regulariser(batch, params.delta, "spo", scale_by_mu=False)


@dataclass
class GSPOParams(CommonLossParams):
    clip_low: float = 3e-4  # GSPO's sequence ratios stay near 1: the paper clips at 3e-4 / 4e-4
    clip_high: float = 4e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (0 < self.clip_low < 1 and self.clip_high > 0):
            raise ValueError(
                f"clip_low must be in (0, 1) and clip_high > 0, got {self.clip_low}, {self.clip_high}"
            )


@register("gspo", params=GSPOParams)
def gspo(batch: LossBatch, params: GSPOParams) -> tuple[torch.Tensor, dict[str, float]]:
    """GSPO (arXiv 2507.18071): PPO clipping of the sequence ratio exp(mean_t log r_t), per token."""
    mask = batch.mask.to(batch.logprobs.dtype)
    log_ratio = batch.logprobs - batch.old_logprobs
    sequence_log_ratio = (log_ratio * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1.0)
    # The token form of Eq. 10: s_t = sg[s] * pi_t / sg[pi_t], so each token carries the sequence ratio.
    ratio = (sequence_log_ratio.detach() + batch.logprobs - batch.logprobs.detach()).exp()
    unclipped = -batch.advantages * ratio
    clipped = -batch.advantages * ratio.clamp(1.0 - params.clip_low, 1.0 + params.clip_high)
    token_losses = torch.maximum(unclipped, clipped)
    return token_losses, {"clip_fraction": masked_mean((clipped > unclipped).float(), batch.mask).item()}


@dataclass
class CISPOParams(CommonLossParams):
    clip_high: float = 5.0  # cap on the IS weight (MiniMax-M1 clips only above)
    clip_low: float = 0.0  # floor 1 - clip_low on the IS weight; 0 = no floor

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (0 <= self.clip_low < 1 and self.clip_high > 0):
            raise ValueError(
                f"clip_low must be in [0, 1) and clip_high > 0, got {self.clip_low}, {self.clip_high}"
            )


@register("cispo", params=CISPOParams)
def cispo(batch: LossBatch, params: CISPOParams) -> tuple[torch.Tensor, dict[str, float]]:
    """CISPO (MiniMax-M1, arXiv 2506.13585): -sg[clip(r)] A log pi, so every token keeps a gradient."""
    ratio = (batch.logprobs - batch.old_logprobs).exp().detach()
    low = 1.0 - params.clip_low if params.clip_low else 0.0
    weight = ratio.clamp(low, 1.0 + params.clip_high)
    token_losses = -weight * batch.advantages * batch.logprobs
    return token_losses, {"clip_fraction": masked_mean((weight != ratio).float(), batch.mask).item()}


@dataclass
class ClipCovParams(CommonLossParams):
    clip_ratio: float = 2e-4  # fraction of tokens whose gradient is detached
    cov_low: float = 1.0  # only tokens with covariance in [cov_low, cov_high] are candidates
    cov_high: float = 5.0
    clip_low: float = 0.2  # PPO's ratio clip, which Clip-Cov keeps (as verl does)
    clip_high: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.clip_ratio <= 1:
            raise ValueError(f"clip_ratio must be in (0, 1], got {self.clip_ratio}")
        if not (0 < self.clip_low < 1 and self.clip_high > 0):
            raise ValueError(
                f"clip_low must be in (0, 1) and clip_high > 0, got {self.clip_low}, {self.clip_high}"
            )


def token_covariance(batch: LossBatch) -> torch.Tensor:
    """Cov_t = (log pi_t - mean log pi)(A_t - mean A) over the batch's response tokens (2505.22617 Eq. 11)."""
    mask = batch.mask.bool()
    logprobs = batch.logprobs.detach()
    centred_logp = logprobs - logprobs[mask].mean()
    centred_adv = batch.advantages - batch.advantages[mask].mean()
    return torch.where(mask, centred_logp * centred_adv, torch.zeros_like(logprobs))


@register("clip_cov", params=ClipCovParams, whole_batch=True)  # covariance over the batch
def clip_cov(batch: LossBatch, params: ClipCovParams) -> tuple[torch.Tensor, dict[str, float]]:
    """Clip-Cov (arXiv 2505.22617): PPO's clipped surrogate, a few high-covariance tokens detached.

    As verl [peer]: the candidates are tokens the ratio clip has not already clipped, with
    covariance in [cov_low, cov_high]; the chosen ones get no gradient.
    """
    token_losses, clip_active = clipped_surrogate(batch, params.clip_low, params.clip_high)
    covariance = token_covariance(batch)
    mask = batch.mask.bool()
    candidates = mask & ~clip_active & (covariance >= params.cov_low) & (covariance <= params.cov_high)
    count = int(max(1, round(params.clip_ratio * int(mask.sum())))) if candidates.any() else 0
    # Deterministic choice of the candidates (the paper samples them at random): the largest ones.
    chosen = torch.zeros_like(mask)
    if count:
        flat = torch.where(candidates, covariance, torch.full_like(covariance, float("-inf"))).flatten()
        chosen.view(-1)[flat.topk(min(count, int(candidates.sum()))).indices] = True
    token_losses = torch.where(chosen, token_losses.detach(), token_losses)
    return token_losses, {
        "cov_clip_fraction": masked_mean(chosen.float(), mask).item(),
        "clip_fraction": masked_mean(clip_active.float(), mask).item(),
    }


@dataclass
class KLCovParams(CommonLossParams):
    kl_ratio: float = 2e-3  # fraction of tokens (the highest covariance) that get the KL penalty
    kl_cov_coef: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.kl_ratio <= 1:
            raise ValueError(f"kl_ratio must be in (0, 1], got {self.kl_ratio}")


@register("kl_cov", params=KLCovParams, whole_batch=True)
def kl_cov(batch: LossBatch, params: KLCovParams) -> tuple[torch.Tensor, dict[str, float]]:
    """KL-Cov (arXiv 2505.22617): -A r plus coef |log r| on the top-k covariance tokens."""
    covariance = token_covariance(batch)
    mask = batch.mask.bool()
    count = max(1, round(params.kl_ratio * int(mask.sum())))
    flat = torch.where(mask, covariance, torch.full_like(covariance, float("-inf"))).flatten()
    chosen = torch.zeros_like(mask)
    chosen.view(-1)[flat.topk(min(count, int(mask.sum()))).indices] = True
    chosen &= mask
    log_ratio = batch.logprobs - batch.old_logprobs
    token_losses = -batch.advantages * log_ratio.exp() + params.kl_cov_coef * chosen * log_ratio.abs()
    return token_losses, {"kl_cov_fraction": masked_mean(chosen.float(), mask).item()}
