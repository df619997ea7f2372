"""A suite's finished cells as one markdown table: per estimator label, the mean over seeds (and
the spread across them) of chosen step metrics (averaged over each run's steps) and summary
metrics. For results pages (docs/results/) that need more columns than the leaderboard shows.

    python benchmarks/suite_metrics.py trust-region \\
        --train train/clip_fraction train/mask_fraction train/logprob_mismatch_mean \\
        --summary summary/peak_pass_at_1 summary/final_pass_at_1 --final train/entropy

Run it where the suite ran (its MLflow store: --tracking-uri, default the suite's own).
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from advbench.harness.cli import _tracker_for
from advbench.harness.leaderboard import collect, find_suite_run
from advbench.harness.tracking import metric_history


def column(values: list[float]) -> str:
    """mean +- sd across seeds (sd over n - 1); '-' when no run logged the metric."""
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return "-"
    mean = float(np.mean(values))
    if len(values) == 1:
        return f"{mean:.4g}"
    return f"{mean:.4g} ± {float(np.std(values, ddof=1)):.2g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite")
    parser.add_argument("--train", nargs="*", default=[], help="step metrics: each run's mean over steps")
    parser.add_argument("--final", nargs="*", default=[], help="step metrics: each run's last value")
    parser.add_argument("--max", nargs="*", default=[], help="step metrics: each run's maximum")
    parser.add_argument("--summary", nargs="*", default=[], help="summary metrics")
    parser.add_argument("--tracking-uri")
    parser.add_argument("--experiment")
    parser.set_defaults(overrides=[])
    args = parser.parse_args(argv)

    name, tracker = _tracker_for(args.suite, args)
    board = collect(tracker, find_suite_run(tracker, name))
    cells: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in board.runs:
        row = cells[run.label]
        row["seeds"].append(run.seed)
        for key in args.train + args.final + args.max:
            _, values = metric_history(tracker.client, run.run_id, key)
            kind = "mean" if key in args.train else "last" if key in args.final else "max"
            value = None
            if len(values):
                value = {"mean": np.mean, "last": lambda v: v[-1], "max": np.max}[kind](values)
            row[f"{key} ({kind})"].append(value)
        for key in args.summary:
            row[key].append(run.summary.metrics().get(key))
    keys = [f"{k} (mean)" for k in args.train] + [f"{k} (last)" for k in args.final]
    keys += [f"{k} (max)" for k in args.max] + args.summary
    print("| estimator | seeds | " + " | ".join(keys) + " |")
    print("|---|---:|" + "---:|" * len(keys))
    for label in board.labels:
        if label not in cells:
            continue
        row = cells[label]
        print(f"| {label} | {len(row['seeds'])} | " + " | ".join(column(row[k]) for k in keys) + " |")
    if board.missing:
        print(f"\n{len(board.missing)} cell(s) without a finished run were left out.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
