"""The leaderboard of a suite: numbers with confidence intervals over seeds, and a ranking.

Reads MLflow only: the suite's parent run holds its cells (``cells.json``: config hash, label,
task, model, seed), and each cell's finished run is found by its config hash. ``collect`` gathers
them into a ``Board``; ``rank`` turns it into a ranking with stratified-bootstrap confidence
intervals and the probability of improvement over the suite's reference. The numbers only: the
page (Markdown, HTML, plots under ``leaderboards/SUITE/``) is harness/report.py's.

Strata are the suite's (task, model) pairs; seeds are the samples within a stratum.

``collect_trainer_runs`` builds the same board from other trainers' runs in one experiment: TRL
runs made with advbench's adapter (its own metric names) and verl runs (through a mapping of
verl's names, with the columns they cannot fill named: ``Board.unfilled``).
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from advbench.harness import stats
from advbench.harness.metrics import RunSummary, smooth, smoothed_index, steps_to_threshold
from advbench.harness.tracking import metric_history

THRESHOLDS = (0.5, 0.8, 0.9)  # steps-to-threshold fractions of the way from start to R_ref


@dataclass
class CellRun:
    """One finished cell: its summary and the curves the plots need."""

    label: str
    task: str
    model: str
    seed: int
    run_id: str
    summary: RunSummary
    eval_steps: np.ndarray
    pass_at_1: np.ndarray  # the raw eval curve
    sign_balance: np.ndarray
    mean_difficulty: np.ndarray

    @property
    def stratum(self) -> tuple[str, str]:
        return (self.task, self.model)

    @property
    def k_max(self) -> int:
        return max(self.pass_at_k())

    def pass_at_k(self) -> dict[int, float]:
        return self.summary.final_pass_at_k


@dataclass
class Board:
    suite: str
    description: str
    reference: str
    labels: list[str]
    runs: list[CellRun]
    missing: list[dict[str, Any]] = field(default_factory=list)  # cells without a finished run
    tracking_uri: str = ""
    overrides: list[str] = field(default_factory=list)  # key=value given to `advbench suite` for every cell
    # columns (by the start of their header) that these runs cannot fill, and why (other trainers' runs)
    unfilled: dict[str, str] = field(default_factory=dict)

    @property
    def strata(self) -> list[tuple[str, str]]:
        return sorted({run.stratum for run in self.runs})

    def of(self, label: str, stratum: tuple[str, str] | None = None) -> list[CellRun]:
        return [r for r in self.runs if r.label == label and (stratum is None or r.stratum == stratum)]

    def strata_of(self, label: str, value) -> list[np.ndarray]:
        """Per stratum, the per-seed values ``value(run)`` of ``label`` (strata it has no run in: skipped)."""
        out = []
        for stratum in self.strata:
            runs = self.of(label, stratum)
            if runs:
                out.append(np.array([value(r) for r in runs], dtype=float))
        return out


# ---------------------------------------------------------------------------------------------
# reading MLflow


def find_suite_run(tracker: Any, suite_name: str) -> Any:
    """The newest parent run of the suite ``suite_name`` in ``tracker``'s experiment."""
    parent = tracker.find_suite(suite_name)
    if parent is None:
        raise LookupError(
            f"no suite '{suite_name}' in MLflow experiment '{tracker.cfg.experiment}' at {tracker.cfg.uri}; "
            f"run it first: advbench suite {suite_name}"
        )
    return parent


def collect(tracker: Any, parent: Any) -> Board:
    """The finished runs of the cells of a suite's parent run (an MLflow Run)."""
    from mlflow.artifacts import load_text

    suite_name = parent.data.tags.get("advbench.suite", parent.info.run_name)
    cells = json.loads(load_text(f"{parent.info.artifact_uri}/cells.json"))
    runs, missing = collect_cells(tracker, cells["cells"])
    return Board(
        suite=suite_name,
        description=parent.data.tags.get("mlflow.note.content", ""),
        reference=parent.data.tags.get("advbench.reference", cells["labels"][0]),
        labels=cells["labels"],
        runs=runs,
        missing=missing,
        tracking_uri=tracker.cfg.uri,
        overrides=command_overrides(parent.data.tags.get("advbench.command", "")),
    )


def collect_cells(tracker: Any, cells: list[dict[str, Any]]) -> tuple[list[CellRun], list[dict[str, Any]]]:
    """The finished run of each cell (a suite record: hash, label, task, model, seed), and the cells
    that have none."""
    runs, missing = [], []
    for cell in cells:
        found = tracker.find_finished(cell["hash"])
        if found is None:
            missing.append(cell)
            continue
        runs.append(read_run(tracker.client, found, cell["label"], cell["task"], cell["model"], cell["seed"]))
    return runs, missing


def read_run(client: Any, run: Any, label: str, task: str, model: str, seed: Any) -> CellRun:
    """A finished MLflow run as a board's cell: its summary and the curves the plots need."""
    run_id = run.info.run_id
    steps, pass_at_1 = metric_history(client, run_id, "eval/pass_at_1")
    _, balance = metric_history(client, run_id, "axes/sign_balance")
    _, difficulty = metric_history(client, run_id, "axes/mean_difficulty")
    return CellRun(
        label=label,
        task=task,
        model=model,
        seed=int(seed),
        run_id=run_id,
        summary=_current_protocol(client, run),
        eval_steps=steps,
        pass_at_1=pass_at_1,
        sign_balance=balance,
        mean_difficulty=difficulty,
    )


def _current_protocol(client: Any, run: Any) -> RunSummary:
    """The run's stored summary, its time-to-peak figures recomputed from its logged per-prompt
    counts with the protocol as it is now (evaluation.retimed); as stored when it logged none."""
    from advbench.harness.evaluation import logged_counts, retimed

    summary = RunSummary.from_metrics(run.data.metrics)
    try:
        counts = logged_counts(client, run.info.run_id)
    except Exception:  # no counts logged (another trainer's run): the stored summary
        return summary
    return retimed(summary, *counts, run.data.params)


# What a verl run's MLflow metrics cannot give (verl logs its validation as means over samples).
VERL_UNFILLED = {
    "gain over start": "it is cross-fitted over per-prompt counts, which verl does not log",
    "final pass@": "verl logs best@N as a bootstrap over its samples, not the unbiased pass@k",
    "time-to-peak": "its tolerance is the paired per-prompt standard error; verl logs no per-prompt counts",
    "step of peak": "as time-to-peak",
    "entropy": "verl logs the training batch's entropy (actor/entropy), not an eval's",
}
VERL_PASS_AT_1 = re.compile(r"^val-core/(?P<source>.+)/(?P<var>acc|reward)/mean_at_(?P<n>\d+)$")


def collect_trainer_runs(tracker: Any, reference: str | None = None) -> Board:
    """The finished runs of other trainers in ``tracker``'s experiment, as one board.

    A TRL run made with ``harness.adapters.trl.AdvbenchEval`` logs advbench's own metric names,
    per-prompt counts and summary, and the tags read here (label, task, model, seed): every column
    fills as for a suite's run. A verl run (``trainer.logger=[mlflow]``) is read through
    ``verl_run``; the columns it cannot fill are the board's ``unfilled``, which the page names.
    A label's runs on one (task, model) are its seeds there.
    """
    experiment = tracker.cfg.experiment
    found = tracker.client.search_runs(
        [tracker.experiment_id], filter_string="attributes.status = 'FINISHED'", max_results=10_000
    )
    runs, trainers = [], set()
    for run in sorted(found, key=lambda r: r.info.start_time):
        tags = run.data.tags
        if tags.get("advbench.trainer") == "trl" and "summary/peak_pass_at_1" in run.data.metrics:
            keys = ("label", "task", "model", "seed")
            runs.append(read_run(tracker.client, run, *(tags[f"advbench.{key}"] for key in keys)))
            trainers.add("trl")
        elif "algorithm/adv_estimator" in run.data.params and (cell := verl_run(tracker.client, run, runs)):
            runs.append(cell)
            trainers.add("verl")
    if not runs:
        raise LookupError(
            f"no finished run of TRL (with advbench's evaluation, harness.adapters.trl.AdvbenchEval) or "
            f"of verl (with validation) in MLflow experiment '{experiment}' at {tracker.cfg.uri}"
        )
    labels = sorted({run.label for run in runs})
    if reference is not None and reference not in labels:
        raise LookupError(
            f"reference '{reference}' has no run in '{experiment}'; labels: {', '.join(labels)}"
        )
    return Board(
        suite=experiment,
        description=f"runs of {' and '.join(sorted(trainers))} in MLflow experiment '{experiment}'",
        reference=reference or labels[0],
        labels=labels,
        runs=sorted(runs, key=lambda r: (r.label, r.task, r.model, r.seed)),
        tracking_uri=tracker.cfg.uri,
        unfilled=VERL_UNFILLED if "verl" in trainers else {},
    )


def verl_run(client: Any, run: Any, earlier: list[CellRun], window: int = 3) -> CellRun | None:
    """A verl run as a board's cell, or None without validation metrics.

    Mapping: label = ``algorithm.adv_estimator`` (advbench's prefix dropped), with ``+<loss_mode>``
    unless verl's vanilla loss; task = the validation data source (``advbench/`` dropped); model =
    the last part of ``actor_rollout_ref.model.path``; seed = ``data.seed`` (unset: the run's place
    among the label's earlier runs there). pass@1 curve = ``val-core/<source>/acc/mean@N`` (or its
    ``reward``, verl's fallback for a reward function without ``acc``), with the smoothed peak of
    the time-to-peak protocol; the rest of the summary is what ``VERL_UNFILLED`` does not name (the
    fields it names hold placeholders that neither the page nor ``summary_json`` shows).
    """
    params = run.data.params
    curves = [m for key in run.data.metrics if (m := VERL_PASS_AT_1.match(key))]
    if not curves:
        return None
    chosen = min(curves, key=lambda m: (m["var"] != "acc", m["source"]))
    steps, curve = metric_history(client, run.info.run_id, chosen.string)
    loss = params.get("actor_rollout_ref/actor/policy_loss/loss_mode", "vanilla")
    label = params["algorithm/adv_estimator"].removeprefix("advbench_")
    label += "" if loss == "vanilla" else "+" + loss.removeprefix("advbench_")
    task = chosen["source"].removeprefix("advbench/")
    model = Path(params.get("actor_rollout_ref/model/path", "unknown")).name
    seed = params.get("data/seed", "None")
    if not seed.lstrip("-").isdigit():
        seed = sum(1 for r in earlier if (r.label, r.task, r.model) == (label, task, model))
    smoothed = smooth(curve, window)
    summary = RunSummary(
        initial_pass_at_1=float(curve[0]),
        peak_pass_at_1=float(smoothed.max()),
        peak_tolerance=0.0,
        gain=float(smoothed.max() - curve[0]),  # not cross-fitted: for the ranking's arithmetic, never shown
        gain_detected=False,
        still_rising=False,
        final_entropy=0.0,  # unknown (VERL_UNFILLED): never shown
        final_pass_at_k={1: float(curve[-1])},
    )
    empty = np.array([], dtype=float)
    return CellRun(label, task, model, int(seed), run.info.run_id, summary, steps, curve, empty, empty)


def command_overrides(command: str) -> list[str]:
    """The key=value items of a recorded `advbench suite ...` command line (not its options)."""
    try:
        words = shlex.split(command)
    except ValueError:  # a command recorded with unbalanced quotes: show it rather than guess
        return [command] if "=" in command else []
    return [w for w in words[2:] if "=" in w and not w.startswith("-")]


# ---------------------------------------------------------------------------------------------
# ranking


@dataclass
class Row:
    label: str
    seeds: int
    peak: stats.Estimate  # IQM of the smoothed peak pass@1
    peak_mean: float
    gain: stats.Estimate  # mean of peak - start
    final_pass_at_1: float
    final_pass_at_kmax: stats.Estimate
    time_to_peak: tuple[float | None, int]  # (median step, None when fewer than half timed; runs timed)
    rising: int  # runs timed at their last smoothed point: still rising when the budget ended
    gained: int  # runs with a detectable gain (timed, or with too few evals to time a peak)
    time_to_90: tuple[float | None, int]  # the same for 90% of each run's own gain
    thresholds: dict[float, tuple[float | None, int]]  # q -> (median steps or None, runs reaching it)
    entropy: float
    improvement: float | None = None  # P(this > reference) on peak pass@1
    improvement_ci: tuple[float, float] | None = None
    comparison: stats.Comparison | None = None  # the permutation test against the reference
    adjusted_p: float | None = None  # its p-value, Holm-adjusted over every row compared with the reference
    verdict: str = ""  # vs the reference: better | worse | within noise | too few seeds | reference
    tier: int = 0  # 1: not detectably below the best row; 2: detectably below it (Holm over the rows)


def reference_peaks(board: Board) -> dict[tuple[str, str], float]:
    """R_ref per stratum: the best median peak pass@1 over the suite's estimators."""
    out = {}
    for stratum in board.strata:
        medians = [
            float(np.median([r.summary.peak_pass_at_1 for r in runs]))
            for label in board.labels
            if (runs := board.of(label, stratum))
        ]
        out[stratum] = max(medians)
    return out


def _threshold_step(run: CellRun, reference: float, q: float) -> int | None:
    return steps_to_threshold(run.eval_steps, run.pass_at_1, run.summary.initial_pass_at_1, reference, q)


class NonFiniteCurve(ValueError):
    """A run's eval curve or summary holds NaN or inf: the board cannot rank it."""


def check_finite(board: Board) -> None:
    """Refuse a board with a non-finite eval pass@1 or peak, naming the run and the steps."""
    for run in board.runs:
        bad = ~np.isfinite(np.asarray(run.pass_at_1, dtype=float))
        peak = run.summary.peak_pass_at_1
        if bad.any() or not math.isfinite(peak):
            steps = ", ".join(str(int(s)) for s in np.asarray(run.eval_steps)[bad]) or "(the summary's peak)"
            raise NonFiniteCurve(
                f"run {run.run_id} ({run.label}, {run.task}/{run.model}, seed {run.seed}) has a non-finite "
                f"eval pass@1 at step(s) {steps}; the leaderboard cannot rank it: re-run that cell or "
                "delete its MLflow run"
            )


def missing_strata(board: Board) -> dict[str, list[tuple[str, str]]]:
    """Per label, the suite's strata (task, model) in which it has no finished run."""
    return {
        label: missing
        for label in board.labels
        if board.of(label) and (missing := [s for s in board.strata if not board.of(label, s)])
    }


def rank(board: Board, seed: int = 0) -> list[Row]:
    """Rows ordered by the IQM of peak pass@1, with confidence intervals and the verdict vs the reference.

    A partly finished suite ranks what it has: each row pools the strata it has runs in, and a row
    that shares no stratum with the reference gets no verdict ("no shared stratum")."""
    check_finite(board)
    rng = np.random.default_rng(seed)
    refs = reference_peaks(board)
    rows = [_row(board, label, refs, rng) for label in board.labels if board.of(label)]
    rows.sort(key=lambda row: -row.peak.value)
    reference = board.reference if board.of(board.reference) else None
    _judge(board, rows, reference, rng)
    _tiers(board, rows, rng)
    return rows


def censored_median(steps: list[float | None]) -> tuple[float | None, int]:
    """Median step with the runs that never got there (None) counted as never, and how many did.

    The median is undefined (None) once half of the runs never got there."""
    median = float(np.median([s if s is not None else math.inf for s in steps]))
    return (median if math.isfinite(median) else None), sum(s is not None for s in steps)


def _peak(run: CellRun) -> float:
    return run.summary.peak_pass_at_1


def _row(board: Board, label: str, refs: dict[tuple[str, str], float], rng: np.random.Generator) -> Row:
    """One estimator's numbers: bootstrap intervals over its strata, medians over its seeds."""
    runs = board.of(label)

    def interval(value: Callable[[CellRun], float], statistic: stats.Aggregate) -> stats.Estimate:
        return stats.estimate(board.strata_of(label, value), statistic, rng)

    thresholds = {
        q: censored_median([_threshold_step(r, refs[r.stratum], q) for r in runs]) for q in THRESHOLDS
    }
    return Row(
        label=label,
        seeds=len(runs),
        peak=interval(_peak, stats.iqm),
        peak_mean=stats.aggregate(board.strata_of(label, _peak)),
        gain=interval(lambda r: r.summary.gain, stats.mean),
        final_pass_at_1=stats.aggregate(board.strata_of(label, lambda r: r.pass_at_k()[1])),
        final_pass_at_kmax=interval(lambda r: r.pass_at_k()[r.k_max], stats.mean),
        time_to_peak=censored_median([r.summary.time_to_peak_step for r in runs]),
        rising=sum(r.summary.still_rising for r in runs),
        gained=sum(r.summary.gain_detected for r in runs),
        time_to_90=censored_median([r.summary.time_to_90_step for r in runs]),
        thresholds=thresholds,
        entropy=stats.aggregate(board.strata_of(label, lambda r: r.summary.final_entropy)),
    )


def shared_strata(board: Board, x: str, y: str) -> list[tuple[str, str]]:
    return [s for s in board.strata if board.of(x, s) and board.of(y, s)]


def compare(board: Board, x: str, y: str, rng: np.random.Generator, alpha: float) -> stats.Comparison:
    """Peak pass@1 of label x against label y over their shared strata, its smallest detectable
    difference at ``alpha`` (paired as ``aligned`` decides)."""
    _, xs, ys, paired = aligned(board, x, y, alpha)
    return stats.compare(xs, ys, rng, paired=paired, alpha=alpha)


def aligned(
    board: Board, x: str, y: str, alpha: float, value: Callable[[CellRun], float] | None = None
) -> tuple[list[tuple[str, str]], list[np.ndarray], list[np.ndarray], bool]:
    """Labels x and y on their shared strata: those strata, each label's ``value`` per run (default
    peak pass@1) seed-ordered within each stratum, and whether to pair them seed by seed: when every
    shared stratum has the same seeds for both (same seed: same eval prompts and eval sampling
    stream) and there are enough pairs to reach alpha."""
    value = value or _peak
    common = shared_strata(board, x, y)
    runs = {label: [sorted(board.of(label, s), key=lambda r: r.seed) for s in common] for label in (x, y)}
    same_seeds = all(
        [r.seed for r in a] == [r.seed for r in b] for a, b in zip(runs[x], runs[y], strict=True)
    )
    # Paired when the design pairs the runs and the sign-flip test can reach alpha at all (with 4
    # pairs its smallest p is 1/8): chosen from the seed counts alone, never from the outcomes.
    pairs = sum(len(group) for group in runs[x])
    paired = same_seeds and stats.smallest_sign_flip_p(pairs) <= alpha
    xs, ys = ([np.array([value(r) for r in group]) for group in runs[label]] for label in (x, y))
    return common, xs, ys, paired


def _judge(board: Board, rows: list[Row], reference: str | None, rng: np.random.Generator) -> None:
    """Each row's verdict against the reference: permutation tests, Holm over the rows compared."""
    alpha = 1 - stats.LEVEL
    compared = []
    for row in rows:
        if reference is None or row.label == reference:
            row.verdict = "reference" if row.label == reference else ""
        elif not shared_strata(board, row.label, reference):
            row.verdict = "no shared stratum"
        else:
            compared.append(row)
    for row in compared:  # detectable differences at Holm's first step, alpha / m
        row.comparison = compare(board, row.label, reference, rng, alpha / len(compared))
        _, x, y, _ = aligned(board, row.label, reference, alpha)
        row.improvement = stats.probability_of_improvement(x, y)
        row.improvement_ci = stats.improvement_interval(x, y, rng)
    for row, adjusted in zip(compared, stats.holm([r.comparison.p_value for r in compared]), strict=True):
        row.adjusted_p = adjusted
        if row.comparison.smallest_p > alpha / len(compared):
            row.verdict = "too few seeds"  # no outcome of these seeds passes Holm's first step
        elif adjusted < alpha:
            row.verdict = "better" if row.comparison.difference > 0 else "worse"
        else:
            row.verdict = "within noise"


def _tiers(board: Board, rows: list[Row], rng: np.random.Generator) -> None:
    """Tier 1: the best row (highest peak IQM) and every row not detectably below it; tier 2: the
    rest. Each row is tested against the best, Holm over those tests."""
    if not rows:
        return
    alpha = 1 - stats.LEVEL
    best = rows[0]
    tested = [row for row in rows[1:] if shared_strata(board, row.label, best.label)]
    tests = [compare(board, row.label, best.label, rng, alpha / len(tested)) for row in tested]
    adjusted = stats.holm([t.p_value for t in tests])
    for row in rows:
        row.tier = 1
    for row, test, p in zip(tested, tests, adjusted, strict=True):
        row.tier = 2 if p < alpha and test.difference < 0 else 1


def smallest_detectable(rows: list[Row]) -> float | None:
    """The board's smallest detectable difference in peak pass@1: the median over its comparisons
    with the reference (None when nothing was compared)."""
    values = [row.comparison.detectable for row in rows if row.comparison is not None]
    return float(np.median(values)) if values else None


def summary_json(board: Board, rows: list[Row]) -> dict[str, Any]:
    """Per estimator label, the numbers ``advbench check`` compares (means over seeds and strata);
    None for what the board's runs cannot give (``Board.unfilled``)."""
    hidden = {
        "gain over start": "gain",
        "final pass@": "final_pass_at_kmax",
        "time-to-peak": "time_to_peak_step",
    }
    blank = {hidden[column] for column in board.unfilled if column in hidden}
    numbers = {
        row.label: {
            "peak_pass_at_1": round(row.peak_mean, 6),
            "gain": round(row.gain.value, 6),
            "final_pass_at_1": round(row.final_pass_at_1, 6),
            "final_pass_at_kmax": round(row.final_pass_at_kmax.value, 6),
            "time_to_peak_step": row.time_to_peak[0],
            "seeds": row.seeds,
        }
        for row in rows
    }
    return {
        "suite": board.suite,
        "estimators": {
            label: {k: (None if k in blank else v) for k, v in n.items()} for label, n in numbers.items()
        },
    }


def smoothed_mean_curve(
    runs: list[CellRun], window: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps, and the mean, min and max over seeds of the smoothed pass@1 curves (common evals only)."""
    n = min(len(r.eval_steps) for r in runs)
    curves = np.stack([smooth(r.pass_at_1[:n], window) for r in runs])
    steps = np.asarray(runs[0].eval_steps[:n])[smoothed_index(n, window)]
    return steps, curves.mean(0), curves.min(0), curves.max(0)
