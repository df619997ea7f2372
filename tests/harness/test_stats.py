"""Statistics over seeds against hand-computed values and scipy's own implementations."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from advbench.harness import stats

scores = st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=12).map(np.array)


def test_iqm_is_the_mean_of_the_middle_half():
    x = np.array([9.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, -100.0])
    # sorted: -100 0 1 2 3 4 5 9 -> the middle four 1 2 3 4
    assert stats.iqm(x) == pytest.approx(2.5)
    assert stats.aggregate([x[:3], x[3:]], stats.iqm) == pytest.approx(2.5)  # strata are pooled


def test_probability_of_improvement_by_hand():
    # pairs (x, y): 3>1 3>2 3=3 | 1<2 1=1 ... counted: x=[3, 1], y=[1, 2, 3]
    # 3: wins over 1 and 2, ties 3 -> 2.5 ; 1: ties 1, loses 2 and 3 -> 0.5 ; (2.5 + 0.5) / 6
    assert stats.probability_of_improvement([np.array([3.0, 1.0])], [np.array([1.0, 2.0, 3.0])]) == 0.5
    # averaged over strata, not pooled: 1.0 in the first, 0.0 in the second
    x, y = [np.array([1.0]), np.array([0.0])], [np.array([0.0]), np.array([1.0])]
    assert stats.probability_of_improvement(x, y) == 0.5


@given(scores, scores)
def test_probability_of_improvement_is_mann_whitney_u(x, y):
    u = scipy_stats.mannwhitneyu(x, y, alternative="two-sided", method="asymptotic").statistic
    assert stats.probability_of_improvement([x], [y]) == pytest.approx(u / (x.size * y.size), abs=1e-12)


@given(scores, scores)
def test_probability_of_improvement_is_antisymmetric(x, y):
    forward = stats.probability_of_improvement([x], [y])
    assert forward + stats.probability_of_improvement([y], [x]) == pytest.approx(1.0)


def test_bootstrap_interval_agrees_with_scipy_on_one_stratum():
    rng = np.random.default_rng(0)
    x = rng.normal(0.4, 0.1, size=40)
    ours = stats.confidence_interval([x], stats.mean, np.random.default_rng(1), reps=20_000)
    theirs = scipy_stats.bootstrap(
        (x,), np.mean, n_resamples=20_000, method="percentile", rng=np.random.default_rng(2)
    ).confidence_interval
    assert ours[0] == pytest.approx(theirs.low, abs=3e-3)
    assert ours[1] == pytest.approx(theirs.high, abs=3e-3)


def test_bootstrap_is_stratified():
    # Two strata far apart: a pooled resample could draw all from one; a stratified one never does,
    # so the mean of every resample stays within the strata's own ranges averaged.
    low, high = np.array([0.0, 0.01, 0.02]), np.array([1.0, 1.01, 1.02])
    values = stats.bootstrap_distribution([low, high], stats.mean, np.random.default_rng(0), reps=5000)
    assert values.min() >= 0.5 and values.max() <= 0.52


def test_same_generator_seed_same_interval():
    x = [np.array([0.1, 0.5, 0.3]), np.array([0.7, 0.2])]
    a = stats.estimate(x, stats.iqm, np.random.default_rng(7))
    b = stats.estimate(x, stats.iqm, np.random.default_rng(7))
    assert a == b and a.low <= a.value <= a.high


@settings(max_examples=50)
@given(st.lists(scores, min_size=1, max_size=3), st.sampled_from([stats.mean, stats.iqm]))
def test_interval_is_inside_the_range_of_the_scores(strata, statistic):
    low, high = stats.confidence_interval(strata, statistic, np.random.default_rng(0), reps=200)
    pooled = np.concatenate(strata)
    assert pooled.min() - 1e-12 <= low <= high <= pooled.max() + 1e-12


def test_improvement_interval_covers_a_clear_winner_above_one_half():
    x, y = [np.array([0.9, 0.8, 0.85])], [np.array([0.1, 0.2, 0.15])]
    assert stats.improvement_interval(x, y, np.random.default_rng(0)) == (1.0, 1.0)
    tied = stats.improvement_interval(
        [np.array([0.1, 0.9])], [np.array([0.5, 0.5])], np.random.default_rng(0)
    )
    assert tied[0] < 0.5 < tied[1]


@pytest.mark.parametrize("bad", [[], [np.array([])], [np.array([0.1, np.nan])]])
def test_degenerate_input_is_refused(bad):
    with pytest.raises(ValueError):
        stats.aggregate(bad)


def test_smallest_p_value_is_the_exact_test_of_completely_separated_seeds():
    """2 / prod C(n+m, n), hand-computed, and scipy's exact Mann-Whitney test on separated samples."""
    from scipy.stats import mannwhitneyu

    from advbench.harness.stats import smallest_p_value

    assert smallest_p_value([np.array([0.5, 0.6])], [np.array([0.1, 0.2])]) == pytest.approx(1 / 3)
    assert smallest_p_value([np.arange(4.0)], [np.arange(4.0)]) == pytest.approx(2 / 70)  # counts only
    two_strata = [np.array([1.0, 2.0])] * 2
    assert smallest_p_value(two_strata, two_strata) == pytest.approx(2 / 36)
    assert smallest_p_value([np.array([1.0])], [np.array([0.0])]) == 1.0  # 2/2, capped
    for n, m in [(2, 2), (3, 3), (4, 4), (3, 5)]:
        x, y = np.arange(n) + 10.0, np.arange(m) * 1.0
        exact = mannwhitneyu(x, y, alternative="two-sided", method="exact").pvalue
        assert smallest_p_value([x], [y]) == pytest.approx(exact)


def test_rliables_score_dict_shape_gives_the_strata_estimates():
    scores = np.array([[0.1, 0.5], [0.2, 0.6], [0.4, 0.9]])  # 3 runs x 2 tasks
    got = stats.estimates({"a": scores}, stats.iqm, np.random.default_rng(0))["a"]
    want = stats.estimate([scores[:, 0], scores[:, 1]], stats.iqm, np.random.default_rng(0))
    assert got == want and want.low <= want.value <= want.high
    with pytest.raises(ValueError, match=r"\[runs, tasks\]"):
        stats.estimates({"a": scores[:, 0]}, stats.mean, np.random.default_rng(0))
