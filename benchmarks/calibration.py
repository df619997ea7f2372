"""Calibration of time-to-peak and of the verdicts on runs where nothing differs.

Two suites on the tiny model and arithmetic at the smoke suite's budget (60 steps, an eval every
10 on the task's eval set), run through advbench itself and read back from MLflow:

  null      GRPO with ``trainer.shuffle_advantages=true``: each group's advantages permuted among
            its samples, so the policy moves but learns nothing. The share of runs given a peak
            step (a gain detected) and the share flagged "still rising" must stay at or below the
            level, and the mean gain within noise of zero. Beside them, what the previous rule gave
            on the same curves (windows shrunk at the ends, peak - start).
  grpo      plain GRPO over 2k seeds, relabelled into two labels of k seeds in every way
            (C(2k, k) / 2 splits): the share of splits whose leaderboard calls the second label
            "better" or "worse" than the first must stay at or below the level. Beside it, the
            previous rule's share (a bootstrap interval of P(X > Y) excluding 0.5, with the
            permutation floor).

    python benchmarks/calibration.py --seeds 12 --results docs/results/statistics.md

Runs are cached in --workdir (an MLflow store there): re-running only re-reads them.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import itertools
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from advbench.harness import leaderboard, stats
from advbench.harness.config import TrackingConfig
from advbench.harness.leaderboard import Board
from advbench.harness.report import cpu_name
from advbench.harness.tracking import Tracker


def run_suite(
    workdir: Path,
    name: str,
    description: str,
    matrix: dict,
    overrides: dict,
    experiment: str = "",
    options: Sequence[str] = (),
    reference: str = "",
) -> tuple[Board, Tracker]:
    """Write a suite file into ``workdir``, run it there (an MLflow store beside it: cached on a
    re-run) and read its board back, with the store it is in. ``experiment`` (default: the
    suite's name): suites in one experiment share the cells they have in common. ``options``:
    more arguments for `advbench suite` (``--ray``, ``threads=1``). ``reference``: the suite's
    reference label (default: the first estimator, named by a plain string)."""
    from advbench.harness.cli import main as advbench

    experiment = experiment or name
    overrides = {**overrides, "tracking": {"experiment": experiment}}
    suite = {"name": name, "description": description, "reference": reference or matrix["estimator"][0]}
    suite |= {"matrix": matrix, "overrides": overrides}
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    uri = f"sqlite:///{workdir / 'calibration.db'}"
    code = advbench(["suite", str(path), f"tracking.uri={uri}", f"cache_dir={workdir / 'cache'}", *options])
    if code:
        raise SystemExit(f"suite {name} failed (exit {code})")
    tracker = Tracker(TrackingConfig(uri=uri, experiment=experiment))
    return leaderboard.collect(tracker, leaderboard.find_suite_run(tracker, name)), tracker


def grpo_seeds(workdir: Path, name: str, seeds: int, shuffle: bool, experiment: str = "") -> Board:
    what = "null: advantages shuffled within groups" if shuffle else "one estimator, to relabel"
    matrix = {"estimator": ["grpo"], "seed": list(range(seeds)), "model": ["tiny"], "task": ["arithmetic"]}
    trainer = {"steps": 60, "checkpoint_every": 0, "shuffle_advantages": shuffle}
    description = f"calibration ({what}), {seeds} seeds of GRPO on the tiny model, arithmetic, 60 steps"
    return run_suite(workdir, name, description, matrix, {"trainer": trainer}, experiment)[0]


def shrunk_smooth(values: np.ndarray, window: int = 3) -> np.ndarray:
    """The previous smoothing: windows shrunk at the curve's ends (for the comparison only)."""
    half = window // 2
    return np.array([values[max(0, i - half) : i + half + 1].mean() for i in range(len(values))])


def protocol(null: Board) -> dict:
    """Detected gains, 'still rising' flags and mean gains of the null runs, now and before."""
    runs = null.runs
    gains = np.array([r.summary.gain for r in runs])
    old = [shrunk_smooth(np.asarray(r.pass_at_1, dtype=float)) for r in runs]
    old_gains = np.array(
        [curve.max() - r.summary.initial_pass_at_1 for curve, r in zip(old, runs, strict=True)]
    )
    return {
        "runs": len(runs),
        "detected": float(np.mean([r.summary.gain_detected for r in runs])),
        "still_rising": float(np.mean([r.summary.still_rising for r in runs])),
        "gain_mean": float(gains.mean()),
        "gain_se": float(gains.std(ddof=1) / np.sqrt(len(gains))),
        "old_still_rising": float(np.mean([int(np.argmax(c)) == len(c) - 1 for c in old])),
        "old_gain_mean": float(old_gains.mean()),
        "old_gain_se": float(old_gains.std(ddof=1) / np.sqrt(len(old_gains))),
        "chance_still_rising": 1 / (len(runs[0].pass_at_1) - 2),  # one of the smoothed points
        "drift": float(np.mean([r.pass_at_1[-1] - r.pass_at_1[0] for r in runs])),  # last eval - first
        "entropy": float(np.mean([r.summary.final_entropy for r in runs])),
    }


def verdicts(board: Board) -> dict:
    """Every split of one estimator's seeds into two labels: how often a verdict is called."""
    runs = sorted(board.runs, key=lambda r: r.seed)
    k = len(runs) // 2
    rng = np.random.default_rng(0)
    new, old, detectable = [], [], []
    splits = [c for c in itertools.combinations(range(len(runs)), k) if 0 in c]  # each split once
    for chosen in splits:
        relabelled = [dataclasses.replace(r, label="A" if i in chosen else "B") for i, r in enumerate(runs)]
        split = Board(suite=board.suite, description="", reference="A", labels=["A", "B"], runs=relabelled)
        row = next(r for r in leaderboard.rank(split, seed=int(rng.integers(1 << 31))) if r.label == "B")
        new.append(row.verdict in ("better", "worse"))
        detectable.append(row.comparison.detectable)
        x = [np.array([r.summary.peak_pass_at_1 for r in relabelled if r.label == "B"])]
        y = [np.array([r.summary.peak_pass_at_1 for r in relabelled if r.label == "A"])]
        low, high = stats.improvement_interval(x, y, rng)
        old.append((low > 0.5 or high < 0.5) and stats.smallest_p_value(x, y) <= 1 - stats.LEVEL)
    return {
        "seeds": len(runs),
        "splits": len(splits),
        "false_verdicts": float(np.mean(new)),
        "old_false_verdicts": float(np.mean(old)),
        "detectable_median": float(np.median(detectable)),
        "peak_sd": float(np.std([r.summary.peak_pass_at_1 for r in runs], ddof=1)),
    }


def family_verdicts(board: Board, labels: int, partitions: int) -> dict:
    """One estimator's seeds dealt into ``labels`` labels of equal size, ``partitions`` random ways:
    how often a page calls any of the labels compared with the reference "better" or "worse" (a
    family-wise error: Holm over the labels - 1 comparisons must keep it at the level)."""
    runs = sorted(board.runs, key=lambda r: r.seed)
    size = len(runs) // labels
    names = [chr(ord("A") + i) for i in range(labels)]
    rng = np.random.default_rng(0)
    any_false, per_row = [], []
    for _ in range(partitions):
        order = rng.permutation(len(runs))[: size * labels]
        relabelled = [dataclasses.replace(runs[i], label=names[j // size]) for j, i in enumerate(order)]
        split = Board(suite=board.suite, description="", reference="A", labels=names, runs=relabelled)
        rows = [r for r in leaderboard.rank(split, seed=int(rng.integers(1 << 31))) if r.label != "A"]
        called = [r.verdict in ("better", "worse") for r in rows]
        any_false.append(any(called))
        per_row.extend(called)
    return {
        "seeds": size * labels,
        "labels": labels,
        "partitions": partitions,
        "family_false": float(np.mean(any_false)),
        "row_false": float(np.mean(per_row)),
    }


def report(result: dict, command: str, seconds: float) -> str:
    p, v, level = result["protocol"], result["verdicts"], 1 - stats.LEVEL
    return f"""
### Calibration on null runs, {datetime.date.today().isoformat()}

`{command}` ({seconds / 60:.1f} min on {cpu_name()}, runs included)

Null runs ({p["runs"]} seeds of GRPO with its advantages shuffled within each group, tiny model,
arithmetic, 60 steps, 7 evals of the default eval set (256 prompts x 8 samples, one eval stream)):

| rule | gain detected (a step timed) | "still rising" | mean gain +- SE |
|---|---|---|---|
| now: complete windows, paired test, cross-fitted gain | {p["detected"]:.0%} | {p["still_rising"]:.0%} \
| {p["gain_mean"]:+.4f} +- {p["gain_se"]:.4f} |
| before: shrunk end windows, peak - start | every run | {p["old_still_rising"]:.0%} \
| {p["old_gain_mean"]:+.4f} +- {p["old_gain_se"]:.4f} |

Stated level {level:.0%}; chance that the last of the 5 smoothed points is the highest:
{p["chance_still_rising"]:.0%}. The null runs do not stay flat: pass@1 moved by {p["drift"]:+.3f} on
average from the first eval to the last (final eval entropy {p["entropy"]:.2f}).

Verdicts: {v["seeds"]} seeds of plain GRPO relabelled into two labels of {v["seeds"] // 2} in all
{v["splits"]} ways; a "better" or "worse" is false by construction:

| rule | false verdicts |
|---|---|
| now: permutation test, Holm | {v["false_verdicts"]:.1%} |
| before: bootstrap interval of P(X > Y) excluding 0.5, permutation floor | {v["old_false_verdicts"]:.1%} |

Stated level {level:.0%}. The splits share their runs, so they are not independent trials: the
rate says what this one set of seeds gives under every labelling. Median smallest detectable
difference in peak pass@1 at {v["seeds"] // 2} against {v["seeds"] // 2} seeds: {v["detectable_median"]:.3f}
(the seeds' peaks spread with a standard deviation of {v["peak_sd"]:.3f}).
""" + (_family_report(result["family"], level) if "family" in result else "")


def _family_report(f: dict, level: float) -> str:
    return f"""
Several labels at once: {f["seeds"]} seeds of plain GRPO dealt into {f["labels"]} labels of \
{f["seeds"] // f["labels"]} in {f["partitions"]} random ways, each page comparing {f["labels"] - 1} labels \
with the reference (Holm over them); any "better" or "worse" is false:

| error | rate |
|---|---|
| family-wise: a page with any false verdict | {f["family_false"]:.1%} |
| per comparison | {f["row_false"]:.1%} |

Stated family-wise level {level:.0%}.
"""


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=12)
    parser.add_argument("--workdir", type=Path, default=Path("calibration-runs"))
    parser.add_argument("--results", type=Path, help="append the tables to this Markdown file")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    parser.add_argument(
        "--labels", type=int, default=0, help="also deal --family-seeds GRPO seeds into this many labels"
    )
    parser.add_argument("--family-seeds", type=int, default=18)
    parser.add_argument("--partitions", type=int, default=200)
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    null = grpo_seeds(args.workdir.resolve(), "calibration-null", args.seeds, shuffle=True)
    grpo = grpo_seeds(args.workdir.resolve(), "calibration-grpo", args.seeds, shuffle=False)
    result = {"protocol": protocol(null), "verdicts": verdicts(grpo)}
    if args.labels:  # the first --seeds of these are the runs above (same cells): only the rest run
        family = grpo_seeds(
            args.workdir.resolve(), "calibration-family", args.family_seeds, False, "calibration-grpo"
        )
        result["family"] = family_verdicts(family, args.labels, args.partitions)
    seconds = time.perf_counter() - start
    command = "python benchmarks/calibration.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    text = report(result, command, seconds)
    print(text)
    if args.results:
        with args.results.open("a") as out:
            out.write(text)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
