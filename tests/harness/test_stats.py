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


# -- verdicts: permutation tests and Holm ------------------------------------------------------


def test_sign_flip_p_by_hand():
    rng = np.random.default_rng(0)
    # three positive differences: 2 of the 8 sign patterns are as extreme (all +, all -)
    result = stats.compare([np.array([1.0, 2.0, 3.0])], [np.zeros(3)], rng, paired=True)
    assert result.paired and result.difference == pytest.approx(2.0)
    assert result.p_value == pytest.approx(2 / 8) and result.smallest_p == pytest.approx(2 / 8)
    assert result.detectable == np.inf  # 1/4 never reaches 0.05


def test_relabelling_p_by_hand():
    rng = np.random.default_rng(0)
    # x = (3, 4) against y = (1, 2): of the C(4, 2) = 6 splits only the observed and its mirror are as far
    result = stats.compare([np.array([3.0, 4.0])], [np.array([1.0, 2.0])], rng)
    assert not result.paired and result.p_value == pytest.approx(2 / 6)
    # two strata, differences averaged with equal weight: (2 + 0) / 2
    two = stats.compare([np.array([3.0, 4.0]), np.array([1.0, 2.0])], [np.array([1.0, 2.0])] * 2, rng)
    assert two.difference == pytest.approx(1.0) and two.smallest_p == pytest.approx(2 / 36)


def test_the_sampled_relabelling_agrees_with_the_exact_one(monkeypatch):
    rng = np.random.default_rng(3)
    x, y = rng.normal(0.3, 0.1, 7), rng.normal(0.2, 0.1, 7)  # C(14, 7) = 3432: enumerated
    exact = stats.compare([x], [y], rng).p_value
    monkeypatch.setattr(stats, "EXACT_LIMIT", 10)
    sampled = stats.compare([x], [y], rng, reps=20_000).p_value
    assert sampled == pytest.approx(exact, abs=0.01)


def test_holm_by_hand():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5]) == [0.5]
    assert stats.holm([0.02, 0.9]) == pytest.approx([0.04, 0.9])


@pytest.mark.parametrize("paired", [False, True])
def test_verdicts_on_null_data_are_wrong_at_most_at_the_level(paired):
    """Calibration of the test itself: X and Y drawn alike, 6 seeds on each of 2 strata."""
    rng = np.random.default_rng(4)
    trials, alpha = 600, 1 - stats.LEVEL
    seed_effect = rng.normal(0, 0.05, size=(trials, 2, 6))  # shared by X and Y of a seed: pairing pays
    wrong = 0
    for t in range(trials):
        x = [seed_effect[t, s] + rng.normal(0.4, 0.03, 6) for s in range(2)]
        y = [seed_effect[t, s] + rng.normal(0.4, 0.03, 6) for s in range(2)]
        wrong += stats.compare(x, y, rng, paired=paired, reps=500).p_value < alpha
    assert wrong / trials <= alpha + 2 * np.sqrt(alpha * (1 - alpha) / trials)


def test_holm_keeps_the_family_wise_rate_across_five_null_comparisons():
    rng = np.random.default_rng(5)
    trials, alpha, any_wrong = 400, 1 - stats.LEVEL, 0
    for _ in range(trials):
        reference = [rng.normal(0.4, 0.05, 5)]
        p = [stats.compare([rng.normal(0.4, 0.05, 5)], reference, rng).p_value for _ in range(5)]
        any_wrong += min(stats.holm(p)) < alpha
    assert any_wrong / trials <= alpha + 2 * np.sqrt(alpha * (1 - alpha) / trials)


def test_a_real_difference_is_found_and_the_detectable_difference_is_honest():
    rng = np.random.default_rng(6)
    found = sum(
        stats.compare([rng.normal(0.5, 0.03, 8)], [rng.normal(0.4, 0.03, 8)], rng).p_value < 0.05
        for _ in range(100)
    )
    assert found / 100 > 0.95
    # the detectable difference stated on null data (its median over draws) is found about POWER
    # of the time when it is the truth
    delta = np.median(
        [
            stats.compare([rng.normal(0.4, 0.03, 8)], [rng.normal(0.4, 0.03, 8)], rng).detectable
            for _ in range(50)
        ]
    )
    hits = sum(
        stats.compare([rng.normal(0.4 + delta, 0.03, 8)], [rng.normal(0.4, 0.03, 8)], rng).p_value < 0.05
        for _ in range(200)
    )
    assert stats.POWER - 0.15 < hits / 200 < stats.POWER + 0.15


def test_difference_interval_agrees_with_scipy_and_pairs_by_seed():
    rng = np.random.default_rng(0)
    x, y = rng.normal(0.5, 0.1, size=40), rng.normal(0.4, 0.1, size=40)
    unpaired = stats.difference_interval([x], [y], np.random.default_rng(1), reps=20_000)
    theirs = scipy_stats.bootstrap(
        (x, y),
        lambda a, b: a.mean() - b.mean(),
        n_resamples=20_000,
        method="percentile",
        rng=np.random.default_rng(2),
    ).confidence_interval
    assert unpaired == pytest.approx((theirs.low, theirs.high), abs=4e-3)
    # paired: a shared per-seed offset cancels, so the interval is that of the constant difference
    offsets = rng.normal(0, 1.0, size=10)
    paired = stats.difference_interval([offsets + 0.1], [offsets], np.random.default_rng(1), paired=True)
    assert paired == pytest.approx((0.1, 0.1))
    wide = stats.difference_interval([offsets + 0.1], [offsets], np.random.default_rng(1))
    assert wide[1] - wide[0] > 0.5
