"""How often ``advbench check`` cries wolf, and how often it catches a real regression.

    for pool in base plants lr-half lr-third lr-fifth; do
        advbench suite benchmarks/check-noise/$pool.yaml --ray
    done
    python benchmarks/check_noise.py --base benchmarks/check-noise/base.yaml --seeds 4 \
        --plant "lr / 2=benchmarks/check-noise/lr-half.yaml" \
        --plant "lr / 3=benchmarks/check-noise/lr-third.yaml" \
        --plant "lr / 5=benchmarks/check-noise/lr-fifth.yaml" \
        --plant "advantages x 0.25=benchmarks/check-noise/plants.yaml:grpo_scaled->grpo" \
        --plant "half the groups rolled=benchmarks/check-noise/plants.yaml:grpo_half_shuffled->grpo" \
        --results docs/results/suites.md

from the repository root (the pools: the smoke suite's four estimators x 8 seeds, unchanged and with
a regression planted, in one store, check-noise.db; about 20 minutes on 2 cores). Any suite files
will do: each names its runs' store and must hold the base suite's estimators, with at least twice
``--seeds`` seeds (a plant's suite may hold one estimator, mapped onto the base suite's label with
``:LABEL->TARGET``; ``benchmarks/check_plants.py`` holds the planted estimators).

- **False alarms.** The base suite's seeds are split every way into a baseline of ``--seeds``
  seeds and a "now" of ``--seeds`` others: the baseline's noise is measured, the check run. Other
  seeds stand in for another CPU family, whose float rounding sends an RL run elsewhere as a new
  seed would; this is conservative, since the same seed there keeps its prompts and eval stream.
- **Detection.** The same baselines against ``--seeds`` seeds of a planted regression (the other
  estimators from the base suite's "now" seeds). Each plant's true effect is its mean gain against
  the base suite's, over all their seeds.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import shlex
import sys

import numpy as np

from advbench.harness import check, leaderboard
from advbench.harness.report import cpu_name
from advbench.harness.suites import load_suite
from advbench.harness.tracking import Tracker


def suite_runs(path: str) -> dict[str, list[dict]]:
    """The checked metrics of every finished run of a suite file, per estimator label."""
    suite = load_suite(path)
    tracker = Tracker(suite.cells[0].tracking)
    board = leaderboard.collect(tracker, leaderboard.find_suite_run(tracker, suite.name))
    return check.runs_of(board)


def plant_runs(spec: str) -> tuple[str, dict[str, list[dict]]]:
    """``NAME=SUITE[:LABEL->TARGET]``: the plant's name and its runs under the base suite's labels."""
    name, _, rest = spec.partition("=")
    path, _, mapping = rest.partition(":")
    runs = suite_runs(path)
    if mapping:
        label, _, target = mapping.partition("->")
        runs = {target: runs[label]}
    return name, runs


def by_seed(runs: dict[str, list[dict]], seeds) -> dict[str, list[dict]]:
    return {label: [r for r in items if r["seed"] in seeds] for label, items in runs.items()}


def splits(seeds: list[int], k: int):
    """Every (baseline seeds, now seeds) pair of disjoint k-seed sets, the baseline's taken in order."""
    for chosen in itertools.combinations(seeds, k):
        rest = [s for s in seeds if s not in chosen]
        for now in itertools.combinations(rest, k):
            yield set(chosen), set(now)


def mean_gain(runs: dict[str, list[dict]], label: str) -> float:
    return float(np.mean([r["gain"] for r in runs[label]]))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the unchanged suite's file")
    parser.add_argument("--plant", action="append", default=[], help="NAME=SUITE[:LABEL->TARGET]")
    parser.add_argument("--seeds", type=int, default=4, help="seeds per side of a check (the suite's)")
    parser.add_argument("--results", help="append the tables to this Markdown file")
    args = parser.parse_args(argv)

    base = suite_runs(args.base)
    seeds = sorted({r["seed"] for items in base.values() for r in items})
    pairs = list(splits(seeds, args.seeds))
    alarms = [
        check.failures(check.compare(check.baseline_of(by_seed(base, b)), by_seed(base, n))) for b, n in pairs
    ]
    flagged = sum(bool(a) for a in alarms)
    rows = [
        "| what changed | true change in gain | checks | failed | rows that failed most |",
        "|---|---|---|---|---|",
        f"| nothing (other seeds) | - | {len(pairs)} | {flagged} ({flagged / len(pairs):.0%}) | "
        f"{_most(alarms)} |",
    ]
    for spec in args.plant:
        name, planted = plant_runs(spec)
        caught = []
        for b, n in pairs:
            now = by_seed(base, n)
            now.update(by_seed(planted, n))
            caught.append(check.failures(check.compare(check.baseline_of(by_seed(base, b)), now)))
        changes = ", ".join(
            f"{label} {mean_gain(planted, label):.3f} vs {mean_gain(base, label):.3f} "
            f"({mean_gain(planted, label) / mean_gain(base, label) - 1:+.0%})"
            for label in planted
        )
        hits = sum(bool(c) for c in caught)
        share = f"{hits} ({hits / len(pairs):.0%})"
        rows.append(f"| {name} | {changes} | {len(pairs)} | {share} | {_most(caught)} |")
    command = "python benchmarks/check_noise.py " + shlex.join(argv)
    text = "\n".join(
        [
            "\n## advbench check against its noise\n",
            f"{datetime.date.today().isoformat()}, `{command}` on {cpu_name()}; {len(seeds)} seeds per "
            "estimator in each pool, "
            f"{args.seeds} a side of each check; a check fails when any of its rows does.\n",
            *rows,
            "",
            "",
        ]
    )
    print(text)
    if args.results:
        with open(args.results, "a") as handle:
            handle.write(text)
    return 0


def _most(failed: list[list[check.Finding]]) -> str:
    counts: dict[str, int] = {}
    for findings in failed:
        for f in findings:
            counts[f"{f.label} {f.metric}"] = counts.get(f"{f.label} {f.metric}", 0) + 1
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
    return ", ".join(f"{k} ({v})" for k, v in top) or "-"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
