"""advbench check's statistics on hand-made runs: the noise a baseline records, the thresholds made
of it, what fails and what passes, the family-wise false-alarm rate on simulated unchanged trees,
and the refusal of a baseline recorded by an older version."""

import json
import math

import numpy as np
import pytest
from scipy.stats import t

from advbench.harness import check


def runs(means, sd=0.0, seeds=4, rng=None, stratum="arithmetic/tiny"):
    """Per label, ``seeds`` runs whose every metric is the label's mean plus noise of ``sd``."""
    rng = rng or np.random.default_rng(0)
    return {
        label: [
            {
                "stratum": stratum,
                "seed": s,
                **{m: float(mean + sd * rng.standard_normal()) for m in check.METRICS},
            }
            for s in range(seeds)
        ]
        for label, mean in means.items()
    }


def baseline_of(current, tmp_path):
    path = tmp_path / "baseline.json"
    check.write_baseline(path, "smoke", current, "advbench check smoke --update")
    return check.load_baseline(path)


def test_the_noise_is_the_pooled_spread_around_each_estimators_mean():
    current = {
        "a": [{"stratum": "s", "seed": i, **{m: v for m in check.METRICS}} for i, v in enumerate([0.1, 0.3])],
        "b": [
            {"stratum": "s", "seed": i, **{m: v for m in check.METRICS}}
            for i, v in enumerate([0.5, 0.5, 0.8])
        ],
    }
    noise = check.measure_noise(current)["gain"]
    # squares: a 0.1^2 + 0.1^2 = 0.02; b (mean 0.6) 0.01 + 0.01 + 0.04 = 0.06; df 1 + 2 = 3
    assert noise.df == 3 and noise.sd == pytest.approx(math.sqrt(0.08 / 3))
    assert noise.by_estimator == pytest.approx({"a": math.sqrt(0.02), "b": math.sqrt(0.03)})
    assert noise.of("a") == pytest.approx(math.sqrt(0.08 / 3))  # the pooled spread is larger
    assert noise.of("b") == pytest.approx(math.sqrt(0.03))  # its own is larger
    with pytest.raises(ValueError, match="at least two seeds"):
        check.measure_noise({"a": current["a"][:1]})


def test_the_threshold_is_the_bonferroni_t_quantile_times_the_standard_error(tmp_path):
    base = baseline_of(runs({"grpo": 0.05, "rloo": 0.05}, sd=0.004), tmp_path)
    noise = base["noise"]["gain"]
    sd = max(noise["sd"], noise["by_estimator"]["grpo"])
    findings = check.compare(base, runs({"grpo": 0.05, "rloo": 0.05}, sd=0.004, rng=np.random.default_rng(1)))
    row = next(f for f in findings if f.label == "grpo" and f.metric == "gain")
    tests = 2 * len(check.METRICS)  # two estimators, four metrics
    crit = t.ppf(1 - 0.05 / tests, 2 * 3)
    assert row.threshold == pytest.approx(crit * sd * math.sqrt(1 / 4 + 1 / 4), rel=1e-4)
    assert row.detectable == pytest.approx((crit + t.ppf(0.8, 6)) * sd * math.sqrt(0.5), rel=1e-4)
    assert len(findings) == tests


def test_a_drop_beyond_the_threshold_fails_and_a_rise_asks_for_an_update(tmp_path):
    base = baseline_of(runs({"grpo": 0.05, "psr": 0.06}, sd=0.003), tmp_path)
    same = check.compare(base, {label: entry["runs"] for label, entry in base["estimators"].items()})
    assert check.failures(same) == [] and all(f.status == "ok" for f in same)

    dropped = {
        label: [dict(r, gain=r["gain"] - 0.02) for r in entry["runs"]]
        for label, entry in base["estimators"].items()
    }
    failed = check.failures(check.compare(base, dropped))
    assert {(f.label, f.metric) for f in failed} == {("grpo", "gain"), ("psr", "gain")}

    raised = {
        label: [dict(r, peak_pass_at_1=r["peak_pass_at_1"] + 0.05) for r in entry["runs"]]
        for label, entry in base["estimators"].items()
    }
    findings = check.compare(base, raised)
    assert check.failures(findings) == [] and any(f.status == "improved" for f in findings)

    gone = check.compare(base, {"grpo": base["estimators"]["grpo"]["runs"]})
    assert [(f.label, f.status) for f in check.failures(gone)] == [("psr", "missing")] * len(check.METRICS)


def test_unchanged_trees_fail_at_most_at_the_level():
    """4 estimators x 4 seeds drawn afresh on both sides (another CPU family: runs move as new seeds
    would), 400 times: the share of checks that fail stays within the 5% family-wise level."""
    rng = np.random.default_rng(7)
    means = {"grpo": 0.05, "rloo": 0.047, "dr_grpo": 0.05, "psr": 0.06}
    failed = 0
    for _ in range(400):
        base = check.baseline_of(runs(means, sd=0.004, rng=rng))
        failed += bool(check.failures(check.compare(base, runs(means, sd=0.004, rng=rng))))
    # the metrics move together here (one draw per run for all four), the Bonferroni bound holds
    assert failed / 400 <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 400)


def test_a_baseline_recorded_by_an_older_version_is_refused_with_the_command_that_records_it(tmp_path):
    old = tmp_path / "smoke.json"
    old.write_text(json.dumps({"suite": "smoke", "tolerances": {}, "estimators": {"grpo": {"gain": 0.05}}}))
    with pytest.raises(check.OldBaseline, match=f"advbench check smoke --baseline {old} --update"):
        check.load_baseline(old)


def test_the_output_says_what_the_thresholds_are_made_of(tmp_path):
    base = baseline_of(runs({"grpo": 0.05, "rloo": 0.05}, sd=0.004), tmp_path)
    words = check.describe_noise(base)
    assert "t(1 - 0.05/8, df 6)" in words and f"gain {base['noise']['gain']['sd']:.4f}" in words
