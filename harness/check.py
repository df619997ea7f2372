"""CI regression checks: a suite's runs against a stored baseline, with thresholds from measured noise.

The baseline (format 2) keeps every run's value of each checked metric, per estimator, stratum and
seed, and the noise of each metric measured at its recording: the standard deviation of one run's
value around its estimator's mean, for each estimator and pooled over them (with the pooled
degrees of freedom). ``advbench check`` runs the suite again and, per estimator and metric, tests
the change of the mean over runs with a one-sided t test against that noise:

    sd        = max(the pooled sd, the estimator's own sd)
    se        = sd x sqrt(1 / n_baseline + 1 / n_now)
    threshold = t(1 - level / m, pooled df) x se      (m rows: Bonferroni over the check)

The pooled spread is the better estimate (more runs), but estimators differ (PSR's gain spreads
about twice as far as GRPO's): the larger of the two keeps a noisy estimator from failing checks
on its noise. Estimators' runs with the same seed share their prompt order and eval stream, so
their deviations correlate (about 0.3-0.5 on the smoke suite): a row for all estimators together
would need that correlation, measured on few seeds; it gave more false alarms than it caught
regressions in the measurement below, and there is none.

Not paired seed by seed, though both sides run the same seeds and eval prompts: on the machine
that recorded the baseline an unchanged tree gives the same runs (every difference 0), and on
another CPU family the runs move as new seeds would. A paired test needs the spread of the
per-seed differences, which the baseline, one run per seed, cannot measure when it is recorded;
the spread of runs around their mean it can.

A metric *regresses* when it is worse by more than its threshold; it *improves* when better by
more, which passes and asks for ``--update``. On an unchanged tree whose runs move as new seeds
would (what another CPU family's rounding does to an RL run) at most ``level`` (5%) of checks
fail; on one machine the same suite gives the same numbers. Each row also states the smallest
regression it detects with 80% power.

Measured both ways by benchmarks/check_noise.py (docs/results/suites.md): shifted seeds in place of
the baseline's as false alarms, planted regressions (learning rate cuts, spoiled advantages) as
detections.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = 2  # what a baseline written by this version says; older ones are refused
LEVEL = 0.05  # the family-wise false-alarm rate of one check
POWER = 0.8  # the power at which each row's detectable regression is stated
# The metrics checked, each "higher" is better: the smoothed peak pass@1, the cross-fitted gain over
# the start, and the final eval's pass@1 and pass@k_max.
METRICS = ("peak_pass_at_1", "gain", "final_pass_at_1", "final_pass_at_kmax")


class OldBaseline(ValueError):
    """A baseline recorded by an older advbench (fixed tolerances, no per-run values)."""


@dataclass(frozen=True)
class Noise:
    sd: float  # one run's standard deviation around its estimator's mean, pooled over estimators
    df: int  # its degrees of freedom: runs minus (estimator, stratum) groups
    by_estimator: dict[str, float]  # each estimator's own standard deviation (0 with one run)

    def of(self, label: str) -> float:
        """The spread a row of ``label`` is judged with: the larger of the pooled and its own."""
        return max(self.sd, self.by_estimator.get(label, 0.0))


@dataclass(frozen=True)
class Finding:
    label: str
    metric: str
    baseline: float | None
    current: float | None
    threshold: float  # the regression (in the metric's units) beyond which this row fails
    detectable: float  # the smallest true regression this row finds with probability POWER
    status: str  # ok | regressed | improved | missing | new

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.current is None:
            return None
        return self.current - self.baseline


def run_values(run: Any) -> dict[str, float]:
    """The checked metrics of one finished run (a leaderboard CellRun)."""
    pass_at_k = run.pass_at_k()
    return {
        "peak_pass_at_1": float(run.summary.peak_pass_at_1),
        "gain": float(run.summary.gain),
        "final_pass_at_1": float(pass_at_k[1]),
        "final_pass_at_kmax": float(pass_at_k[run.k_max]),
    }


def runs_of(board: Any) -> dict[str, list[dict[str, Any]]]:
    """Per estimator label, every run's stratum, seed and checked metrics."""
    return {
        label: [
            {"stratum": "/".join(r.stratum), "seed": int(r.seed), **run_values(r)}
            for r in sorted(board.of(label), key=lambda r: (r.stratum, r.seed))
        ]
        for label in board.labels
    }


def measure_noise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Noise]:
    """Each metric's run-to-run standard deviation: squared deviations from each (estimator,
    stratum) group's mean, pooled over the groups (the t test's pooled variance)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for label, items in runs.items():
        for item in items:
            groups.setdefault((label, item["stratum"]), []).append(item)
    df = sum(len(g) - 1 for g in groups.values())
    if df < 1:
        raise ValueError(
            "a baseline needs at least two seeds of an estimator to measure the noise its "
            "thresholds are made of; give the suite more seeds"
        )
    noise = {}
    for metric in METRICS:
        squares: dict[str, float] = {}
        freedom: dict[str, int] = {}
        for (label, _), items in groups.items():
            values = [i[metric] for i in items]
            centre = sum(values) / len(values)
            squares[label] = squares.get(label, 0.0) + sum((v - centre) ** 2 for v in values)
            freedom[label] = freedom.get(label, 0) + len(values) - 1
        own = {k: math.sqrt(squares[k] / freedom[k]) if freedom[k] else 0.0 for k in squares}
        noise[metric] = Noise(sd=math.sqrt(sum(squares.values()) / df), df=df, by_estimator=own)
    return noise


def _mean(items: Iterable[dict[str, Any]], metric: str) -> tuple[float, int]:
    values = [i[metric] for i in items]
    return sum(values) / len(values), len(values)


def critical_t(noise: Noise, tests: int, level: float = LEVEL) -> float:
    """The one-sided t quantile of a row, Bonferroni over ``tests`` rows."""
    from scipy.stats import t

    return float(t.ppf(1 - level / tests, noise.df))


def noise_of(baseline: dict[str, Any]) -> dict[str, Noise]:
    """The noise a baseline recorded, per metric."""
    return {m: Noise(**baseline["noise"][m]) for m in METRICS}


def compare(
    baseline: dict[str, Any], current: dict[str, list[dict[str, Any]]], level: float = LEVEL
) -> list[Finding]:
    """Every (estimator, metric) of the baseline judged against its noise, and a row for each
    estimator the baseline does not know."""
    from scipy.stats import t

    noise = noise_of(baseline)
    labels = list(baseline["estimators"])
    tests = len(labels) * len(METRICS)
    findings = []
    for label in labels:
        for metric in METRICS:
            base, n_base = _mean(baseline["estimators"][label]["runs"], metric)
            if not current.get(label):
                findings.append(Finding(label, metric, base, None, math.nan, math.nan, "missing"))
                continue
            now, n_now = _mean(current[label], metric)
            crit = critical_t(noise[metric], tests, level)
            se = noise[metric].of(label) * math.sqrt(1 / n_base + 1 / n_now)
            threshold, worse = crit * se, base - now
            status = "regressed" if worse > threshold else "improved" if -worse > threshold else "ok"
            detectable = (crit + float(t.ppf(POWER, noise[metric].df))) * se
            findings.append(Finding(label, metric, base, now, threshold, detectable, status))
    findings += [Finding(label, "*", None, None, 0.0, 0.0, "new") for label in current if label not in labels]
    return findings


def failures(findings: list[Finding]) -> list[Finding]:
    """The findings that fail the check: a regression beyond its threshold, or a result gone missing."""
    return [f for f in findings if f.status in ("regressed", "missing")]


def describe_noise(baseline: dict[str, Any], level: float = LEVEL) -> str:
    """What the thresholds are made of, in one paragraph for the check's output."""
    tests = len(baseline["estimators"]) * len(METRICS)
    noise = noise_of(baseline)
    df = noise[METRICS[0]].df
    sds = ", ".join(
        f"{m} {noise[m].sd:.4f} (own {min(noise[m].by_estimator.values()):.4f}-"
        f"{max(noise[m].by_estimator.values()):.4f})"
        for m in METRICS
    )
    return (
        f"threshold = t(1 - {level:g}/{tests}, df {df}) = {critical_t(noise[METRICS[0]], tests, level):.2f}"
        f" x sd x sqrt(1/n_baseline + 1/n_now), sd the larger of the pooled and the estimator's own "
        f"spread of one run around its mean, measured at the baseline's recording: {sds}. On an "
        f"unchanged tree whose runs move as new seeds would (another CPU family), at most "
        f"{level:.0%} of checks fail."
    )


def load_baseline(path: Path) -> dict[str, Any]:
    try:
        baseline = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no baseline at {path}; create it with --update") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"baseline {path} is not valid JSON: {exc}") from None
    if not isinstance(baseline, dict) or not isinstance(baseline.get("estimators"), dict):
        raise ValueError(f"baseline {path} needs an 'estimators' mapping of label -> runs")
    if baseline.get("format") != FORMAT:
        suite = baseline.get("suite", "SUITE")
        raise OldBaseline(
            f"baseline {path} was recorded by an older advbench (fixed tolerances, no per-run "
            f"values to measure noise from); record it again: advbench check {suite} --baseline "
            f"{path} --update"
        )
    missing = [m for m in METRICS if m not in baseline.get("noise", {})]
    if missing:
        raise ValueError(
            f"baseline {path} has no noise for {', '.join(missing)}; record it again with --update"
        )
    return baseline


def baseline_of(
    current: dict[str, list[dict[str, Any]]], suite: str = "", command: str = "", digits: int | None = None
) -> dict[str, Any]:
    """A baseline of ``current``: its runs and the noise its thresholds will be made of (values
    rounded to ``digits`` when given, as the stored file keeps them)."""

    def r(value: Any) -> Any:
        return round(value, digits) if digits is not None and isinstance(value, float) else value

    return {
        "format": FORMAT,
        "suite": suite,
        "command": command,
        "noise": {
            m: {"sd": r(n.sd), "df": n.df, "by_estimator": {k: r(v) for k, v in n.by_estimator.items()}}
            for m, n in measure_noise(current).items()
        },
        "estimators": {
            label: {"runs": [{k: r(v) for k, v in run.items()} for run in runs]}
            for label, runs in current.items()
        },
    }


def write_baseline(
    path: Path, suite: str, current: dict[str, list[dict[str, Any]]], command: str
) -> dict[str, Any]:
    """Store ``current`` as the baseline (``baseline_of``, to 6 digits); what was stored."""
    content = baseline_of(current, suite, command, digits=6)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=1) + "\n")
    return content
