"""How long a comparison must train for its runs to reach an uncensored peak.

Runs a few estimators of the shipped comparison suites (the sign axis' extremes and FADE) on the
tiny model for a long budget, or with --suites the shipped suites themselves (their estimators,
seeds and overrides; the budget, and the seeds or task when given, replaced), then asks of every
shorter budget B: had the runs stopped at step B, which share would have shown a peak that is not
at its last point (a detected gain, not "still rising")? The time-to-peak protocol is applied to
the evals up to B from each run's logged per-prompt counts, so one long run answers for every
shorter budget (exactly, at a constant learning rate: a run of B steps is the long run's first B).

    python benchmarks/budget.py --steps 300 --seeds 2 --plot docs/results/budget-curves.png
    python benchmarks/budget.py --suites sign-axis difficulty --tasks arithmetic --steps 250 --ray

Writes a table (stdout, and --results) and the pass@1 curves of the runs (--plot).
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import time
from pathlib import Path

import yaml
from calibration import run_suite

from advbench.harness import plots
from advbench.harness.evaluation import logged_counts
from advbench.harness.metrics import rise_back, time_to_peak
from advbench.harness.suites import resolve_path
from advbench.harness.tracking import Tracker

ESTIMATORS = ("grpo", "psr", "nsr", "fade")
KINDS = ("peak", "rising", "none")  # turned, still rising, no detectable gain


def outcomes(board, tracker: Tracker, budgets: list[int]) -> dict[int, list[str]]:
    """Per budget, every run's outcome had it stopped there: "peak" (a timed peak that turned, a
    plateau at the end within the eval's noise included), "rising" (a detected gain still rising
    at its last eval by more than the noise) or "none" (no detectable gain)."""
    runs = [logged_counts(tracker.client, run.run_id) for run in board.runs]
    out = {}
    for budget in budgets:
        out[budget] = []
        for steps, correct, n in runs:
            kept = correct[: sum(step <= budget for step in steps)]
            every = steps[1] - steps[0] if len(steps) > 1 else 10
            result = time_to_peak(kept, n, back=rise_back(every))
            out[budget].append("rising" if result.still_rising else "peak" if result.detected else "none")
    return out


def table(by_budget: dict[int, list[str]]) -> list[str]:
    rows = [
        "| budget B (steps) | peak reached and turned | still rising | no detectable gain |",
        "|---|---|---|---|",
    ]
    for budget, kinds in by_budget.items():
        cells = [kinds.count(kind) / len(kinds) for kind in KINDS]
        rows.append(f"| {budget} | " + " | ".join(f"{value:.0%}" for value in cells) + " |")
    return rows


def estimator_study(args: argparse.Namespace, trainer: dict) -> tuple[str, str, dict, dict, str]:
    """The sign axis' extremes and FADE (``ESTIMATORS``) on the given tasks."""
    tasks = args.tasks or ["arithmetic"]
    seeds = args.seeds or 2
    name = f"budget-{'-'.join(tasks)}-{args.steps}-lr{args.lr:g}" + (
        "" if args.schedule == "constant" else f"-{args.schedule}"
    )
    matrix = {"estimator": list(ESTIMATORS), "seed": list(range(seeds)), "model": ["tiny"], "task": tasks}
    description = (
        f"{', '.join(ESTIMATORS)} x {seeds} seeds, {args.steps} steps, lr {args.lr:g} ({args.schedule}),"
        f" {', '.join(tasks)}, tiny model"
    )
    return name, description, matrix, {"trainer": trainer}, ESTIMATORS[0]


def suite_studies(args: argparse.Namespace, trainer: dict) -> list[tuple[str, str, dict, dict, str]]:
    """Each shipped suite as it is (estimators, seeds, models, overrides) at the study's budget,
    with --seeds and --tasks in place of its own when given."""
    studies = []
    for ref in args.suites:
        suite = yaml.safe_load(resolve_path(ref).read_text())
        matrix = dict(suite["matrix"])
        if args.seeds:
            matrix["seed"] = list(range(args.seeds))
        if args.tasks:
            matrix["task"] = list(args.tasks)
        overrides = {key: value for key, value in (suite.get("overrides") or {}).items() if key != "tracking"}
        overrides["trainer"] = {**(overrides.get("trainer") or {}), **trainer}
        description = (
            f"suite {suite['name']}, {len(matrix['estimator'])} estimators x {len(matrix['seed'])} seeds on"
            f" {', '.join(matrix.get('task') or ['its default task'])}, {args.steps} steps, lr {args.lr:g}"
            f" ({args.schedule})"
        )
        studies.append((f"budget-{suite['name']}", description, matrix, overrides, suite["reference"]))
    return studies


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, help="seeds per cell (default: 2, or each suite's own)")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--tasks", nargs="+", help="tasks (default: arithmetic, or each suite's own)")
    parser.add_argument(
        "--suites", nargs="+", metavar="SUITE", help="run these shipped suites (one MLflow experiment)"
    )
    parser.add_argument(
        "--schedule", default="constant", help="trainer.lr_schedule; a decaying one is judged at --steps only"
    )
    parser.add_argument("--ray", action="store_true", help="two one-thread Ray workers, as the claims run")
    parser.add_argument("--workdir", type=Path, default=Path("calibration-runs"))
    parser.add_argument("--results", type=Path)
    parser.add_argument("--plot", type=Path, help="pass@1 curves (per suite: its name added)")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    trainer = {"steps": args.steps, "lr": args.lr, "lr_schedule": args.schedule, "checkpoint_every": 0}
    options = ["threads=1", "--ray"] if args.ray else []
    # a decaying schedule depends on the budget: its runs say nothing of a shorter one
    cuts = (60, 100, 150, 200, 250, 300, 400, 500) if args.schedule == "constant" else ()
    budgets = [b for b in cuts if b < args.steps] + [args.steps]
    studies = suite_studies(args, trainer) if args.suites else [estimator_study(args, trainer)]
    # the suites share one experiment, so a cell two suites have in common runs once
    experiment = f"budget-{args.steps}-lr{args.lr:g}-{args.schedule}" if args.suites else ""
    boards, results = {}, {}
    for name, description, matrix, overrides, reference in studies:
        boards[name], tracker = run_suite(
            args.workdir.resolve(), name, description, matrix, overrides, experiment, options, reference
        )
        results[name] = outcomes(boards[name], tracker, budgets)
    command = "python benchmarks/budget.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    lines = [
        f"\n### Budget study, {datetime.date.today().isoformat()}\n",
        f"`{command}` ({(time.perf_counter() - start) / 60:.1f} min, runs included); each run's evals cut"
        " at B steps.",
    ]
    for name, description, *_ in studies:
        lines += [f"\n{name} ({len(boards[name].runs)} runs): {description}\n", *table(results[name])]
    if len(studies) > 1:  # every suite's runs as the suites run them: a shared cell counts in each
        together = {b: [kind for name in results for kind in results[name][b]] for b in budgets}
        lines += [f"\nall {len(studies)} suites ({len(together[budgets[0]])} runs)\n", *table(together)]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.results:
        with args.results.open("a") as out:
            out.write(text)
    if args.plot:
        for name, board in boards.items():
            path = args.plot if len(boards) == 1 else args.plot.with_stem(f"{args.plot.stem}-{name}")
            plots.plot_pass_at_1(board, path)
    # per suite and budget, the protocol's shares
    return {
        name: {b: {k: v.count(k) / len(v) for k in KINDS} for b, v in r.items()}
        for name, r in results.items()
    }


if __name__ == "__main__":
    main()
