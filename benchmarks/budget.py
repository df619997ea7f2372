"""How long a comparison must train for its runs to reach an uncensored peak (issue 15, part 2).

Runs a few estimators of the shipped comparison suites (the sign axis' extremes and FADE) on the
tiny model for a long budget, then asks of every shorter budget B: had the runs stopped at step B,
which share would have shown a peak that is not at its last point (a detected gain, not "still
rising")? The time-to-peak protocol is applied to the evals up to B from each run's logged
per-prompt counts, so one long run answers for every shorter budget.

    python benchmarks/budget.py --steps 300 --seeds 2 --plot benchmarks/budget-curves.png

Writes a table (stdout, and --results) and the pass@1 curves of the runs (--plot).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

from calibration import run_suite

from advbench.harness import plots
from advbench.harness.evaluation import CORRECT_COUNTS
from advbench.harness.metrics import time_to_peak
from advbench.harness.tracking import Tracker

ESTIMATORS = ("grpo", "psr", "nsr", "fade")


def eval_counts(tracker: Tracker, run_id: str) -> tuple[list[int], list[list[int]], int]:
    """(eval steps, per-prompt correct counts per eval, samples per prompt) as the run logged them."""
    with tempfile.TemporaryDirectory() as tmp:
        path = tracker.client.download_artifacts(run_id, CORRECT_COUNTS, tmp)
        data = json.loads(Path(path).read_text())
    steps = sorted(int(step) for step in data["correct"])
    return steps, [data["correct"][str(step)] for step in steps], int(data["n"])


def censoring(board, tracker: Tracker, budgets: list[int]) -> dict[int, dict[str, float]]:
    """Per budget: the share of runs with a timed, turned peak, still rising, and with no gain."""
    runs = [eval_counts(tracker, run.run_id) for run in board.runs]
    out = {}
    for budget in budgets:
        outcomes = []
        for steps, correct, n in runs:
            result = time_to_peak(correct[: sum(step <= budget for step in steps)], n)
            outcomes.append("rising" if result.still_rising else "peak" if result.detected else "none")
        out[budget] = {kind: outcomes.count(kind) / len(outcomes) for kind in ("peak", "rising", "none")}
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--tasks", nargs="+", default=["arithmetic"])
    parser.add_argument(
        "--schedule", default="constant", help="trainer.lr_schedule; a decaying one is judged at --steps only"
    )
    parser.add_argument("--ray", action="store_true", help="two one-thread Ray workers, as the claims run")
    parser.add_argument("--workdir", type=Path, default=Path("calibration-runs"))
    parser.add_argument("--results", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tasks = "-".join(args.tasks)
    name = f"budget-{tasks}-{args.steps}-lr{args.lr:g}" + (
        "" if args.schedule == "constant" else f"-{args.schedule}"
    )
    matrix = {
        "estimator": list(ESTIMATORS),
        "seed": list(range(args.seeds)),
        "model": ["tiny"],
        "task": list(args.tasks),
    }
    trainer = {"steps": args.steps, "lr": args.lr, "lr_schedule": args.schedule, "checkpoint_every": 0}
    description = (
        f"budget study: {', '.join(ESTIMATORS)} x {args.seeds} seeds, {args.steps} steps, lr {args.lr:g}"
        f" ({args.schedule})"
    )
    options = ["threads=1", "--ray"] if args.ray else []
    board, tracker = run_suite(
        args.workdir.resolve(), name, description, matrix, {"trainer": trainer}, options=options
    )
    # a decaying schedule depends on the budget: its runs say nothing of a shorter one
    cuts = (60, 100, 150, 200, 250, 300, 400, 500) if args.schedule == "constant" else ()
    budgets = [b for b in cuts if b < args.steps] + [args.steps]
    shares = censoring(board, tracker, budgets)
    command = "python benchmarks/budget.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    lines = [
        f"\n### Budget study, {datetime.date.today().isoformat()} (issue 15)\n",
        f"`{command}` ({(time.perf_counter() - start) / 60:.1f} min, runs included): {description}, "
        f"{', '.join(args.tasks)}, tiny model; each run's evals cut at B steps.\n",
        "| budget B (steps) | peak reached and turned | still rising | no detectable gain |",
        "|---|---|---|---|",
        *(f"| {b} | {s['peak']:.0%} | {s['rising']:.0%} | {s['none']:.0%} |" for b, s in shares.items()),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.results:
        with args.results.open("a") as out:
            out.write(text)
    if args.plot:
        plots.plot_pass_at_1(board, args.plot)
    return shares


if __name__ == "__main__":
    main()
