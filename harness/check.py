"""CI regression checks: a suite's per-estimator summary against a stored baseline.

The baseline is a JSON file::

    {"suite": "smoke",
     "tolerances": {"final_pass_at_1": {"better": "higher", "abs": 0.06}, ...},
     "estimators": {"grpo": {"final_pass_at_1": 0.38, ...}, ...}}

Each value is a mean over the suite's seeds and strata (leaderboard.summary_json). A metric
*regresses* when it is worse than the baseline by more than its tolerance (lower for "higher is
better"); it *improves* when it is better by more than that, which passes but asks for
``--update``. An estimator of the baseline that the suite no longer produces is a regression.
``--update`` rewrites the values and keeps the tolerances.

The tolerances are about seed noise, not float noise: on one machine the same suite gives the same
numbers, but another CPU may round differently, and one flipped sample sends an RL run elsewhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Sized from the smoke suite's spread between its two seeds (2026-11-25, docs/results/statistics.md):
# the standard deviation of one run is about 0.030 (peak pass@1, mostly its start), 0.007 (gain),
# 0.012 (final pass@1) and 0.076 (final pass@8). Each tolerance is about 3x the spread of a
# 2-seed mean's difference; GRPO with its sign flipped misses the gain and final pass@1 by far more.
DEFAULT_TOLERANCES: dict[str, dict[str, Any]] = {
    "peak_pass_at_1": {"better": "higher", "abs": 0.06},
    "gain": {"better": "higher", "abs": 0.03},
    "final_pass_at_1": {"better": "higher", "abs": 0.05},
    "final_pass_at_kmax": {"better": "higher", "abs": 0.15},
}


@dataclass(frozen=True)
class Finding:
    label: str
    metric: str
    baseline: float | None
    current: float | None
    tolerance: float
    status: str  # ok | regressed | improved | missing | new

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.current is None:
            return None
        return self.current - self.baseline


def load_baseline(path: Path) -> dict[str, Any]:
    try:
        baseline = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no baseline at {path}; create it with --update") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"baseline {path} is not valid JSON: {exc}") from None
    if not isinstance(baseline, dict) or not isinstance(baseline.get("estimators"), dict):
        raise ValueError(f"baseline {path} needs an 'estimators' mapping of label -> metrics")
    for metric, rule in baseline.get("tolerances", {}).items():
        if rule.get("better") not in ("higher", "lower") or not float(rule.get("abs", -1)) >= 0:
            raise ValueError(
                f"baseline {path}: tolerance of '{metric}' needs better: higher|lower "
                f"and abs >= 0, got {rule}"
            )
    return baseline


def compare(baseline: dict[str, Any], current: dict[str, dict[str, float]]) -> list[Finding]:
    """Every (estimator, metric) of the baseline's tolerances, judged; plus estimators new to it."""
    tolerances = baseline.get("tolerances") or DEFAULT_TOLERANCES
    findings = []
    for label, values in baseline["estimators"].items():
        for metric, rule in tolerances.items():
            if metric not in values:
                continue
            base, tol = float(values[metric]), float(rule["abs"])
            now = current.get(label, {}).get(metric)
            if now is None:
                findings.append(Finding(label, metric, base, None, tol, "missing"))
                continue
            worse = base - now if rule["better"] == "higher" else now - base
            status = "regressed" if worse > tol else "improved" if -worse > tol else "ok"
            findings.append(Finding(label, metric, base, float(now), tol, status))
    for label in current:
        if label not in baseline["estimators"]:
            findings.append(Finding(label, "*", None, None, 0.0, "new"))
    return findings


def failures(findings: list[Finding]) -> list[Finding]:
    """The findings that fail the check: a regression beyond tolerance, or a result gone missing."""
    return [f for f in findings if f.status in ("regressed", "missing")]


def write_baseline(
    path: Path, suite: str, current: dict[str, dict[str, float]], old: dict[str, Any] | None, command: str
) -> None:
    """Store ``current`` as the baseline, keeping the old file's tolerances."""
    tolerances = (old or {}).get("tolerances") or DEFAULT_TOLERANCES
    content = {
        "suite": suite,
        "command": command,
        "tolerances": tolerances,
        "estimators": {
            label: {k: v for k, v in values.items() if k in tolerances or k in ("seeds", "time_to_peak_step")}
            for label, values in current.items()
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=1, sort_keys=False) + "\n")
