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
and kl_cov (the entropy controls of arXiv 2505.22617). The loss catalogue (docs/reference/losses.md,
generated from the registry) has the formulas and their sources.

One file a loss (two for a pair that shares its core: drpo/spo, clip_cov/kl_cov); base.py holds
the contract. The package imports every file of its folder: a new loss is a new file.
"""

from advbench.estimators.registry import import_folder
from advbench.harness.losses.base import (
    AGGREGATIONS,
    KL_ESTIMATORS,
    CommonLossParams,
    LossBatch,
    PolicyLoss,
    aggregate,
    get,
    k3,
    kl_penalty,
    masked_mean,
    names,
    policy_loss,
    register,
    resolve,
    share,
    temporary,
    training_rows,
)

import_folder(__name__, __path__)  # importing a module registers what it holds

__all__ = [
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "CommonLossParams",
    "LossBatch",
    "PolicyLoss",
    "aggregate",
    "get",
    "k3",
    "kl_penalty",
    "masked_mean",
    "names",
    "policy_loss",
    "register",
    "resolve",
    "share",
    "temporary",
    "training_rows",
]
