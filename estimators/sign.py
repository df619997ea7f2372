"""The sign axis: how much of the gradient comes from correct (positive) and wrong (negative) samples.

Zhu et al. 2025 (arXiv 2506.01347) [primary] split RLVR into positive- and negative-sample
reinforcement:
    psr          A_i = 1 on correct samples; wrong samples are left out of the update
    nsr          A_i = -1 on wrong samples; correct samples are left out of the update
    w_reinforce  A_i = lambda on correct, -1 on wrong: NSR with a little PSR (lambda = 0.1, Eq. 6)
The authors subset the batch for PSR and NSR, so the samples of the other sign do not count in the
loss's token normaliser either: they are declared with ``trains=`` (estimators.registry), and the
loop drops them from the loss. A zero advantage alone would keep them in the normaliser and shrink
every step by the share of the other sign.
Arnal et al. 2025 (Asymmetric REINFORCE, arXiv 2506.20520, Sec. 3):
    asym_reinforce  A_i = r_i - (V - delta), V the group (or batch) mean reward; delta > 0 lowers
                    the baseline and so favours positive samples (the paper's delta V < 0)

A sample is correct when its reward is >= correct_at (1.0: reasoning-gym's full score).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from advbench.estimators.group_stats import group_mean
from advbench.estimators.registry import AdvantageBatch, TrainingSignals, register


@dataclass
class SignParams:
    correct_at: float = 1.0


def correct(batch: AdvantageBatch, params: SignParams) -> torch.Tensor:
    return batch.rewards >= params.correct_at


def wrong(batch: AdvantageBatch, params: SignParams) -> torch.Tensor:
    return batch.rewards < params.correct_at


@register("psr", params=SignParams, source="arXiv 2506.01347 [primary]", trains=correct)
def psr(batch: AdvantageBatch, signals: TrainingSignals | None, params: SignParams) -> torch.Tensor:
    """Positive-sample reinforcement only: A_i = 1 on correct samples; wrong ones do not train."""
    return correct(batch, params).float()


@register("nsr", params=SignParams, source="arXiv 2506.01347 [primary]", trains=wrong)
def nsr(batch: AdvantageBatch, signals: TrainingSignals | None, params: SignParams) -> torch.Tensor:
    """Negative-sample reinforcement only: A_i = -1 on wrong samples; correct ones do not train."""
    return -wrong(batch, params).float()


@dataclass
class WeightedReinforceParams:
    weight: float = 0.1  # lambda: the weight of correct samples
    correct_at: float = 1.0

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError(f"w_reinforce: weight must be >= 0, got {self.weight}")


@register("w_reinforce", params=WeightedReinforceParams, source="arXiv 2506.01347 [primary]")
def w_reinforce(
    batch: AdvantageBatch, signals: TrainingSignals | None, params: WeightedReinforceParams
) -> torch.Tensor:
    """Weighted REINFORCE: lambda on correct samples, -1 on wrong ones."""
    correct = batch.rewards >= params.correct_at
    return torch.where(
        correct, torch.full_like(batch.rewards, params.weight), torch.full_like(batch.rewards, -1.0)
    )


@dataclass
class AsymmetricParams:
    delta: float = 0.1  # baseline shift: V - delta; > 0 favours positives
    baseline: str = "group"  # group | batch: where V is averaged

    def __post_init__(self) -> None:
        if self.baseline not in ("group", "batch"):
            raise ValueError(f"asym_reinforce: baseline must be group or batch, got '{self.baseline}'")


@register("asym_reinforce", params=AsymmetricParams, source="arXiv 2506.20520 (Arnal et al., NeurIPS 2025)")
def asym_reinforce(
    batch: AdvantageBatch, signals: TrainingSignals | None, params: AsymmetricParams
) -> torch.Tensor:
    """Asymmetric REINFORCE: r_i - (V - delta), V the group or batch mean reward."""
    if params.baseline == "group":
        value = group_mean(batch.rewards, batch.valid)
    else:
        value = batch.rewards[batch.valid].mean() if batch.valid.any() else batch.rewards.new_zeros(())
    return batch.rewards - (value - params.delta)
