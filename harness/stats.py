"""Statistics over seeds for the leaderboard (Agarwal et al. 2021, arXiv 2108.13264).

Scores come as *strata*: one 1-D array of per-seed scores for each (task, model) cell of a suite.
An aggregate (mean, interquartile mean) pools every score; the stratified bootstrap resamples seeds
with replacement within each stratum, so every resample keeps the suite's design. The probability
of improvement P(X > Y) is the Mann-Whitney statistic per stratum (ties count one half), averaged
over strata.

Written with an explicit ``numpy.random.Generator`` (rliable draws from numpy's global state and
pins an old ``arch``); tests cross-check them against scipy.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

Strata = Sequence[np.ndarray]
Aggregate = Callable[[np.ndarray], np.ndarray]  # scores [..., N] -> statistic [...]
ScoreDict = dict[str, np.ndarray]  # rliable's shape: {algorithm: scores [runs, tasks]}

REPS = 5000  # bootstrap resamples: every interval's, one value for the whole harness
LEVEL = 0.95  # every interval's confidence level; a verdict's test is at 1 - LEVEL


def _check(strata: Strata) -> list[np.ndarray]:
    arrays = [np.asarray(s, dtype=float).ravel() for s in strata]
    if not arrays or any(a.size == 0 for a in arrays):
        raise ValueError("statistics need at least one stratum and one score in each")
    if not all(np.isfinite(a).all() for a in arrays):
        raise ValueError("statistics need finite scores")
    return arrays


def mean(scores: np.ndarray) -> np.ndarray:
    """Mean over the last axis."""
    return np.mean(scores, axis=-1)


def iqm(scores: np.ndarray) -> np.ndarray:
    """Interquartile mean over the last axis: the mean of the middle 50% (25% trimmed each side)."""
    return scipy_stats.trim_mean(scores, 0.25, axis=-1)


def aggregate(strata: Strata, statistic: Aggregate = mean) -> float:
    """The statistic of every score of every stratum pooled."""
    return float(statistic(np.concatenate(_check(strata))))


def bootstrap_distribution(
    strata: Strata, statistic: Aggregate, rng: np.random.Generator, reps: int = REPS
) -> np.ndarray:
    """``reps`` values of the statistic, each on a resample of seeds drawn within every stratum."""
    arrays = _check(strata)
    resampled = [a[rng.integers(0, a.size, size=(reps, a.size))] for a in arrays]
    return np.asarray(statistic(np.concatenate(resampled, axis=1)), dtype=float)


def confidence_interval(
    strata: Strata,
    statistic: Aggregate,
    rng: np.random.Generator,
    reps: int = REPS,
    level: float = LEVEL,
) -> tuple[float, float]:
    """Percentile stratified-bootstrap confidence interval of the pooled statistic."""
    return _percentile_interval(bootstrap_distribution(strata, statistic, rng, reps), level)


def _percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    alpha = (1.0 - level) / 2
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


def _improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) + P(X = Y) / 2 over the last two axes' pairs: x [..., n], y [..., m] -> [...]."""
    diff = x[..., :, None] - y[..., None, :]
    return np.mean((diff > 0) + 0.5 * (diff == 0), axis=(-2, -1))


def probability_of_improvement(x_strata: Strata, y_strata: Strata) -> float:
    """P(X > Y): the probability that a run of X scores higher than a run of Y, averaged over strata."""
    return float(np.mean([_improvement(x, y) for x, y in _paired(x_strata, y_strata)]))


def _paired(x_strata: Strata, y_strata: Strata) -> list[tuple[np.ndarray, np.ndarray]]:
    xs, ys = _check(x_strata), _check(y_strata)
    if len(xs) != len(ys):
        raise ValueError(f"X and Y need the same strata, got {len(xs)} and {len(ys)}")
    return list(zip(xs, ys, strict=True))


def smallest_p_value(x_strata: Strata, y_strata: Strata) -> float:
    """The smallest two-sided p-value an exact stratified permutation test of X against Y can reach
    with these seed counts, that of every X run above every Y run in every stratum: 2 / prod_s
    C(n_s + m_s, n_s). Above the test's level no result of the runs, however far apart, tells X
    from Y (2 seeds against 2: 1/3), while a bootstrap interval of P(X > Y) can still shrink to
    [1, 1]."""
    counts = [math.comb(x.size + y.size, x.size) for x, y in _paired(x_strata, y_strata)]
    return min(1.0, 2 / math.prod(counts))


def improvement_interval(
    x_strata: Strata,
    y_strata: Strata,
    rng: np.random.Generator,
    reps: int = REPS,
    level: float = LEVEL,
) -> tuple[float, float]:
    """Stratified-bootstrap confidence interval of P(X > Y), X and Y resampled independently."""
    per_stratum = [
        _improvement(x[rng.integers(0, x.size, (reps, x.size))], y[rng.integers(0, y.size, (reps, y.size))])
        for x, y in _paired(x_strata, y_strata)
    ]
    return _percentile_interval(np.mean(per_stratum, axis=0), level)


def difference_interval(
    x_strata: Strata,
    y_strata: Strata,
    rng: np.random.Generator,
    paired: bool = False,
    reps: int = REPS,
    level: float = LEVEL,
) -> tuple[float, float]:
    """Stratified-bootstrap interval of the mean over strata of X - Y: ``compare``'s difference.
    Paired: the per-seed differences resampled within each stratum; else X and Y independently."""
    pairs = _paired(x_strata, y_strata)
    if paired:
        per_stratum = [(d := x - y)[rng.integers(0, d.size, (reps, d.size))].mean(axis=1) for x, y in pairs]
    else:
        per_stratum = [
            x[rng.integers(0, x.size, (reps, x.size))].mean(axis=1)
            - y[rng.integers(0, y.size, (reps, y.size))].mean(axis=1)
            for x, y in pairs
        ]
    return _percentile_interval(np.mean(per_stratum, axis=0), level)


@dataclass(frozen=True)
class Estimate:
    """A pooled statistic with its stratified-bootstrap confidence interval."""

    value: float
    low: float
    high: float

    def overlaps(self, other: Estimate) -> bool:
        return self.low <= other.high and other.low <= self.high

    def __format__(self, spec: str) -> str:
        spec = spec or ".3f"
        return f"{self.value:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"


def estimate(
    strata: Strata,
    statistic: Aggregate,
    rng: np.random.Generator,
    reps: int = REPS,
    level: float = LEVEL,
) -> Estimate:
    low, high = confidence_interval(strata, statistic, rng, reps, level)
    return Estimate(aggregate(strata, statistic), low, high)


def strata_of_scores(scores: np.ndarray) -> list[np.ndarray]:
    """rliable's [runs, tasks] matrix as strata: one array of runs per task."""
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 2:
        raise ValueError(f"scores must be [runs, tasks], got shape {scores.shape}")
    return [scores[:, task] for task in range(scores.shape[1])]


def estimates(score_dict: ScoreDict, statistic: Aggregate, rng: np.random.Generator) -> dict[str, Estimate]:
    """rliable's ``get_interval_estimates`` on its score-dict shape: per algorithm, the pooled
    statistic with its stratified-bootstrap interval (tasks as strata, runs resampled within each)."""
    return {name: estimate(strata_of_scores(scores), statistic, rng) for name, scores in score_dict.items()}


# ---------------------------------------------------------------------------------------------
# verdicts: an exact (or Monte Carlo) permutation test per comparison, Holm across comparisons

POWER = 0.8  # the power at which a comparison's smallest detectable difference is stated
EXACT_LIMIT = 20_000  # relabellings enumerated exactly up to this many; sampled (REPS) beyond


@dataclass(frozen=True)
class Comparison:
    """X against Y on one score: the difference, its permutation p-value and what the seeds allow.

    Paired when every stratum has the same seeds for X and Y (same seed: same warm start, eval
    prompts and eval sampling stream), the difference then the mean of per-seed differences and
    the null flipping their signs; otherwise the mean over strata of the difference of means, the
    null relabelling runs within each stratum. ``detectable``: the smallest true difference this
    design finds with probability ``POWER`` at ``alpha`` (t approximation, the runs' own spread);
    infinite where no outcome of these seed counts reaches ``alpha``.
    """

    difference: float
    p_value: float
    smallest_p: float
    detectable: float
    paired: bool


def smallest_sign_flip_p(pairs: int) -> float:
    """The smallest two-sided p-value a sign-flip test of ``pairs`` differences can reach: 2 / 2^n."""
    return min(1.0, 2 / 2**pairs)


def _sign_flip_p(d: np.ndarray, rng: np.random.Generator, reps: int) -> float:
    observed = abs(d.mean())
    if 2**d.size <= EXACT_LIMIT:
        signs = 1 - 2 * ((np.arange(2**d.size)[:, None] >> np.arange(d.size)) & 1)
        return float(np.mean(np.abs((signs * d).mean(1)) >= observed - 1e-12))
    signs = rng.choice([-1.0, 1.0], size=(reps, d.size))
    return float((1 + np.sum(np.abs((signs * d).mean(1)) >= observed - 1e-12)) / (1 + reps))


def _relabel_p(pairs: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator, reps: int) -> float:
    """Two-sided p of the mean over strata of mean(x) - mean(y), runs relabelled within strata."""

    def statistic(assignments: list[np.ndarray]) -> np.ndarray:  # each [R, n + m] bool: True = X
        per_stratum = []
        for (x, y), is_x in zip(pairs, assignments, strict=True):
            pooled = np.concatenate([x, y])
            per_stratum.append((is_x @ pooled) / x.size - (~is_x @ pooled) / y.size)
        return np.mean(per_stratum, axis=0)

    observed = abs(float(np.mean([x.mean() - y.mean() for x, y in pairs])))
    total = math.prod(math.comb(x.size + y.size, x.size) for x, y in pairs)
    if total <= EXACT_LIMIT:
        per_stratum = []
        for x, y in pairs:
            chosen = np.array(list(itertools.combinations(range(x.size + y.size), x.size)))
            rows = np.zeros((len(chosen), x.size + y.size), dtype=bool)
            rows[np.arange(len(chosen))[:, None], chosen] = True
            per_stratum.append(rows)
        grids = np.meshgrid(*[np.arange(len(a)) for a in per_stratum], indexing="ij")
        assignments = [a[g.ravel()] for a, g in zip(per_stratum, grids, strict=True)]
        return float(np.mean(np.abs(statistic(assignments)) >= observed - 1e-12))
    assignments = []
    for x, y in pairs:
        n = x.size + y.size
        order = np.argsort(rng.random((reps, n)), axis=1)
        assignments.append(order < x.size)
    return float((1 + np.sum(np.abs(statistic(assignments)) >= observed - 1e-12)) / (1 + reps))


def compare(
    x_strata: Strata,
    y_strata: Strata,
    rng: np.random.Generator,
    paired: bool = False,
    alpha: float = 1 - LEVEL,
    reps: int = REPS,
) -> Comparison:
    """The permutation test of X against Y (see ``Comparison``). ``paired``: the arrays of each
    stratum are aligned seed by seed (the caller checks that the seeds match)."""
    pairs = _paired(x_strata, y_strata)

    def quantiles(dof: int) -> float:  # t rather than normal: a handful of seeds estimate the spread
        return (
            float(scipy_stats.t.ppf(1 - alpha / 2, dof) + scipy_stats.t.ppf(POWER, dof))
            if dof > 0
            else math.inf
        )

    if paired:
        if any(x.size != y.size for x, y in pairs):
            raise ValueError("a paired comparison needs the same seeds for X and Y in every stratum")
        d = np.concatenate([x - y for x, y in pairs])
        smallest = smallest_sign_flip_p(d.size)
        se = d.std(ddof=1) / math.sqrt(d.size) if d.size > 1 else math.inf
        z = quantiles(d.size - 1)
        p = _sign_flip_p(d, rng, reps)
        difference = float(d.mean())
    else:
        smallest = smallest_p_value(x_strata, y_strata)
        # the runs' spread within strata, pooled over both labels and every stratum
        residuals = np.concatenate([np.concatenate([x - x.mean(), y - y.mean()]) for x, y in pairs])
        dof = residuals.size - 2 * len(pairs)
        sigma = math.sqrt(float(residuals @ residuals) / dof) if dof > 0 else math.inf
        se = sigma * math.sqrt(sum(1 / x.size + 1 / y.size for x, y in pairs)) / len(pairs)
        z = quantiles(dof)
        p = _relabel_p(pairs, rng, reps)
        difference = float(np.mean([x.mean() - y.mean() for x, y in pairs]))
    detectable = float(z * se) if smallest <= alpha else math.inf
    return Comparison(difference, p, smallest, detectable, paired)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control, any dependence)."""
    m = len(p_values)
    order = np.argsort(p_values, kind="stable")
    adjusted, running = [0.0] * m, 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted
