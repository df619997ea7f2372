"""The leaderboard of a suite: numbers with confidence intervals over seeds, a ranking, plots.

Reads MLflow only: the suite's parent run holds its cells (``cells.json``: config hash, label,
task, model, seed), and each cell's finished run is found by its config hash. ``collect`` gathers
them into a ``Board``; ``rank`` turns it into a ranking with stratified-bootstrap confidence
intervals and the probability of improvement over the suite's reference; ``write`` renders a
Markdown table, an HTML page and its plots under ``leaderboards/SUITE/``.

Strata are the suite's (task, model) pairs; seeds are the samples within a stratum.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from advbench.harness import stats
from advbench.harness.metrics import final_pass_at_k, smooth, steps_to_threshold
from advbench.harness.tracking import metric_history

THRESHOLDS = (0.5, 0.8, 0.9)  # steps-to-threshold fractions of the way from start to R_ref
BOOTSTRAP_REPS = 5000
CONFIDENCE = 0.95  # every interval's level; a verdict's test is at 1 - CONFIDENCE


@dataclass
class CellRun:
    """One finished cell: its summary and the curves the plots need."""

    label: str
    task: str
    model: str
    seed: int
    run_id: str
    summary: dict[str, float]
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
        return final_pass_at_k(self.summary)


@dataclass
class Board:
    suite: str
    description: str
    reference: str
    labels: list[str]
    runs: list[CellRun]
    missing: list[dict[str, Any]] = field(default_factory=list)  # cells without a finished run
    tracking_uri: str = ""

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
    runs, missing = [], []
    for cell in cells["cells"]:
        found = tracker.find_finished(cell["hash"])
        if found is None:
            missing.append(cell)
            continue
        run_id = found.info.run_id
        client = tracker.client
        steps, pass_at_1 = metric_history(client, run_id, "eval/pass_at_1")
        _, balance = metric_history(client, run_id, "axes/sign_balance")
        _, difficulty = metric_history(client, run_id, "axes/mean_difficulty")
        runs.append(
            CellRun(
                label=cell["label"],
                task=cell["task"],
                model=cell["model"],
                seed=int(cell["seed"]),
                run_id=run_id,
                summary={k: v for k, v in found.data.metrics.items() if k.startswith("summary/")},
                eval_steps=steps,
                pass_at_1=pass_at_1,
                sign_balance=balance,
                mean_difficulty=difficulty,
            )
        )
    return Board(
        suite=suite_name,
        description=parent.data.tags.get("mlflow.note.content", ""),
        reference=parent.data.tags.get("advbench.reference", cells["labels"][0]),
        labels=cells["labels"],
        runs=runs,
        missing=missing,
        tracking_uri=tracker.cfg.uri,
    )


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
    time_to_peak: float  # median steps
    thresholds: dict[float, tuple[float | None, int]]  # q -> (median steps or None, runs reaching it)
    entropy: float
    improvement: float | None = None  # P(this > reference) on peak pass@1
    improvement_ci: tuple[float, float] | None = None
    verdict: str = ""  # vs the reference: better | worse | within noise | too few seeds | reference
    tier: int = 0  # 1 = statistically tied with the best


def reference_peaks(board: Board) -> dict[tuple[str, str], float]:
    """R_ref per stratum: the best median peak pass@1 over the suite's estimators."""
    out = {}
    for stratum in board.strata:
        medians = [
            float(np.median([r.summary["summary/peak_pass_at_1"] for r in runs]))
            for label in board.labels
            if (runs := board.of(label, stratum))
        ]
        out[stratum] = max(medians)
    return out


def _threshold_step(run: CellRun, reference: float, q: float) -> int | None:
    return steps_to_threshold(
        run.eval_steps, run.pass_at_1, run.summary["summary/initial_pass_at_1"], reference, q
    )


class NonFiniteCurve(ValueError):
    """A run's eval curve or summary holds NaN or inf: the board cannot rank it."""


def check_finite(board: Board) -> None:
    """Refuse a board with a non-finite eval pass@1 or peak, naming the run and the steps."""
    for run in board.runs:
        bad = ~np.isfinite(np.asarray(run.pass_at_1, dtype=float))
        peak = run.summary.get("summary/peak_pass_at_1", math.nan)
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
    rows: list[Row] = []
    labels = [label for label in board.labels if board.of(label)]
    for label in labels:
        runs = board.of(label)

        def peak(r: CellRun) -> float:
            return r.summary["summary/peak_pass_at_1"]

        thresholds = {}
        for q in THRESHOLDS:
            reached = [_threshold_step(r, refs[r.stratum], q) for r in runs]
            hits = [s for s in reached if s is not None]
            # median with the censored runs counted as never: undefined once half never get there
            median = float(np.median([s if s is not None else math.inf for s in reached]))
            thresholds[q] = (median if math.isfinite(median) else None, len(hits))
        rows.append(
            Row(
                label=label,
                seeds=len(runs),
                peak=stats.estimate(board.strata_of(label, peak), stats.iqm, rng, BOOTSTRAP_REPS, CONFIDENCE),
                peak_mean=stats.aggregate(board.strata_of(label, peak)),
                gain=stats.estimate(
                    board.strata_of(label, lambda r: peak(r) - r.summary["summary/initial_pass_at_1"]),
                    stats.mean,
                    rng,
                    BOOTSTRAP_REPS,
                    CONFIDENCE,
                ),
                final_pass_at_1=stats.aggregate(board.strata_of(label, lambda r: r.pass_at_k()[1])),
                final_pass_at_kmax=stats.estimate(
                    board.strata_of(label, lambda r: r.pass_at_k()[r.k_max]),
                    stats.mean,
                    rng,
                    BOOTSTRAP_REPS,
                    CONFIDENCE,
                ),
                time_to_peak=float(np.median([r.summary["summary/time_to_peak_step"] for r in runs])),
                thresholds=thresholds,
                entropy=stats.aggregate(board.strata_of(label, lambda r: r.summary["summary/final_entropy"])),
            )
        )
    rows.sort(key=lambda row: -row.peak.value)

    reference = board.reference if board.of(board.reference) else None
    for row in rows:
        if reference is None or row.label == reference:
            row.verdict = "reference" if row.label == reference else ""
            continue
        common = [s for s in board.strata if board.of(row.label, s) and board.of(reference, s)]
        if not common:
            row.verdict = "no shared stratum"
            continue

        def peaks(label: str, strata=common) -> list[np.ndarray]:
            return [
                np.array([r.summary["summary/peak_pass_at_1"] for r in board.of(label, s)]) for s in strata
            ]

        x, y = peaks(row.label), peaks(reference)
        row.improvement = stats.probability_of_improvement(x, y)
        row.improvement_ci = stats.improvement_interval(x, y, rng, BOOTSTRAP_REPS, CONFIDENCE)
        low, high = row.improvement_ci
        row.verdict = "better" if low > 0.5 else "worse" if high < 0.5 else "within noise"
        if row.verdict != "within noise" and stats.smallest_p_value(x, y) > 1 - CONFIDENCE:
            row.verdict = "too few seeds"  # the bootstrap over 2 or 3 seeds claims more than they hold

    tier, leader = 1, None
    for row in rows:  # a new tier starts where the CI no longer overlaps the tier leader's
        if leader is not None and not row.peak.overlaps(leader.peak):
            tier, leader = tier + 1, row
        leader = leader or row
        row.tier = tier
    return rows


# ---------------------------------------------------------------------------------------------
# rendering


def _fmt_threshold(value: tuple[float | None, int], seeds: int) -> str:
    median, hits = value
    if median is None:  # fewer than half of the runs got there: no median step
        return f"censored ({hits}/{seeds} reached)"
    return f"{median:.0f} ({hits}/{seeds} reached)"


def ranking_table(board: Board, rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    k_max = max(r.k_max for r in board.runs)
    ci = f"{CONFIDENCE:.0%} CI"
    header = [
        "tier",
        "estimator",
        "seeds",
        f"peak pass@1 IQM [{ci}]",
        f"gain over start [{ci}]",
        f"final pass@{k_max} [{ci}]",
        "final pass@1",
        "time-to-peak (median step)",
        "steps to 80% of R_ref",
        f"P(> {board.reference}) [{ci}]",
        f"vs {board.reference}",
        "entropy",
    ]
    table = []
    for row in rows:
        improvement = (
            f"{row.improvement:.2f} [{row.improvement_ci[0]:.2f}, {row.improvement_ci[1]:.2f}]"
            if row.improvement is not None
            else "-"
        )
        table.append(
            [
                str(row.tier),
                row.label,
                str(row.seeds),
                f"{row.peak}",
                f"{row.gain:+.3f}",
                f"{row.final_pass_at_kmax}",
                f"{row.final_pass_at_1:.3f}",
                f"{row.time_to_peak:.0f}",
                _fmt_threshold(row.thresholds[0.8], row.seeds),
                improvement,
                row.verdict,
                f"{row.entropy:.3f}",
            ]
        )
    return header, table


def cells_table(board: Board) -> tuple[list[str], list[list[str]]]:
    k_max = max(r.k_max for r in board.runs)
    header = ["estimator", "task", "model", "seed", "start pass@1", "peak pass@1", "step of peak",
              f"final pass@{k_max}", "entropy", "MLflow run"]  # fmt: skip
    table = []
    for label in board.labels:
        for r in sorted(board.of(label), key=lambda r: (r.stratum, r.seed)):
            rising = " (rising)" if r.summary.get("summary/still_rising") else ""
            table.append(
                [
                    label,
                    r.task,
                    r.model,
                    str(r.seed),
                    f"{r.summary['summary/initial_pass_at_1']:.3f}",
                    f"{r.summary['summary/peak_pass_at_1']:.3f}",
                    f"{r.summary['summary/time_to_peak_step']:.0f}{rising}",
                    f"{r.pass_at_k()[r.k_max]:.3f}",
                    f"{r.summary['summary/final_entropy']:.3f}",
                    r.run_id,
                ]
            )
    return header, table


def _markdown(header: list[str], table: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *map(line, table)])


def _html_table(header: list[str], table: list[list[str]], cls: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _notes(board: Board, rows: list[Row]) -> list[str]:
    notes = [
        "Statistics over seeds (Agarwal et al. 2021): interquartile mean and mean pooled over the suite's "
        f"(task, model) strata; {CONFIDENCE:.0%} percentile intervals from a stratified bootstrap "
        f"({BOOTSTRAP_REPS} resamples of seeds within each stratum).",
        "Peak pass@1 is the peak of the smoothed eval curve; time-to-peak is the first eval within "
        "tolerance of it (DESIGN.md). R_ref is the suite's best median peak per stratum; "
        "'steps to 80%' is the median first step reaching start + 0.8 (R_ref - start), with the runs "
        "that reached it.",
        f"P(> {board.reference}) is the probability that a run of the estimator has a higher peak "
        f"pass@1 than a run of {board.reference}; 'within noise' when its interval contains 0.5, "
        "'too few seeds' when it does not but even the most lopsided result of that many seeds "
        f"could not pass an exact permutation test at the {1 - CONFIDENCE:.0%} level (2 against 2 "
        "reach p = 1/3 at best). "
        "Estimators share a tier while their peak intervals overlap the tier leader's.",
    ]
    seeds = {row.seeds for row in rows}
    if seeds and max(seeds) < 5:
        notes.append(
            f"Only {max(seeds)} seed(s) per estimator: intervals are wide and most differences are within "
            "noise; add seeds before drawing conclusions."
        )
    if board.missing:
        notes.append(
            f"{len(board.missing)} cell(s) have no finished run and are left out: "
            + ", ".join(f"{c['label']}/{c['task']}/{c['model']}/s{c['seed']}" for c in board.missing)
        )
    for label, strata in missing_strata(board).items():
        notes.append(
            f"{label} has no finished run on {', '.join(f'{t}/{m}' for t, m in strata)}: its row pools only "
            "the strata it has"
            + (
                ", and it is compared with the reference on the strata both have."
                if label != board.reference
                else "."
            )
        )
    return notes


def write(board: Board, out: Path, rows: list[Row] | None = None) -> dict[str, Path]:
    """Render the leaderboard into ``out``: leaderboard.md, index.html, leaderboard.json and plots.

    ``rows``: the board's ranking when the caller has it already (``rank`` bootstraps; once is enough).
    """
    from advbench.harness import plots

    if not board.runs:
        raise LookupError(f"suite '{board.suite}' has no finished runs yet")
    out.mkdir(parents=True, exist_ok=True)
    rows = rank(board) if rows is None else rows
    figures = {
        "pass@1 during training": plots.plot_pass_at_1(board, out / "pass_at_1.png"),
        "pass@k after training": plots.plot_pass_at_k(board, out / "pass_at_k.png"),
        "accuracy vs diversity": plots.plot_accuracy_diversity(board, out / "accuracy_diversity.png"),
        "sign x difficulty": plots.plot_axes_groups(
            {label: board.of(label) for label in board.labels if board.of(label)}, out / "sign_difficulty.png"
        ),
    }
    rank_header, rank_rows = ranking_table(board, rows)
    cell_header, cell_rows = cells_table(board)
    notes = _notes(board, rows)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")  # noqa: UP017  py3.10

    generated = f"Generated {stamp} from {board.tracking_uri}; reference: {board.reference}."
    markdown = "\n\n".join(
        [
            f"# Leaderboard: {board.suite}",
            "\n\n".join(filter(None, [board.description, generated])),
            "## Ranking (by peak pass@1)",
            _markdown(rank_header, rank_rows),
            "\n".join(f"- {n}" for n in notes),
            "## Plots",
            "\n".join(f"![{title}]({path.name})" for title, path in figures.items()),
            "## Runs",
            _markdown(cell_header, cell_rows),
        ]
    )
    paths = {"markdown": out / "leaderboard.md", "html": out / "index.html", "json": out / "leaderboard.json"}
    paths["markdown"].write_text(markdown + "\n")

    figure_html = "".join(
        f'<figure><img src="{html.escape(p.name)}" alt="{html.escape(t)}"><figcaption>{html.escape(t)}'
        "</figcaption></figure>"
        for t, p in figures.items()
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>advbench leaderboard: {html.escape(board.suite)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }}
th, td {{ border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: right; }}
th {{ background: #f3f3f3; }} table.ranking td:nth-child(2) {{ text-align: left; font-weight: 600; }}
table.cells td:first-child {{ text-align: left; font-weight: 600; }}
.figures {{ display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }}
figure {{ margin: 0; }} figure img {{ width: 100%; border: 1px solid #eee; }}
figcaption {{ text-align: center; color: #555; }} .notes li {{ margin: 0.3rem 0; color: #444; }}
</style></head><body>
<h1>Leaderboard: {html.escape(board.suite)}</h1>
<p>{html.escape(board.description)}</p>
<p>Generated {stamp} from <code>{html.escape(board.tracking_uri)}</code>;
reference estimator: <b>{html.escape(board.reference)}</b>.</p>
<h2>Ranking by peak pass@1</h2>
{_html_table(rank_header, rank_rows, "ranking")}
<ul class="notes">{"".join(f"<li>{html.escape(n)}</li>" for n in notes)}</ul>
<h2>Plots</h2><div class="figures">{figure_html}</div>
<h2>Runs</h2>
{_html_table(cell_header, cell_rows, "cells")}
</body></html>
"""
    paths["html"].write_text(page)
    paths["json"].write_text(json.dumps(summary_json(board, rows), indent=1) + "\n")
    return paths


def summary_json(board: Board, rows: list[Row]) -> dict[str, Any]:
    """Per estimator label, the numbers ``advbench check`` compares (means over seeds and strata)."""
    return {
        "suite": board.suite,
        "estimators": {
            row.label: {
                "peak_pass_at_1": round(row.peak_mean, 6),
                "gain": round(row.gain.value, 6),
                "final_pass_at_1": round(row.final_pass_at_1, 6),
                "final_pass_at_kmax": round(row.final_pass_at_kmax.value, 6),
                "time_to_peak_step": row.time_to_peak,
                "seeds": row.seeds,
            }
            for row in rows
        },
    }


def smoothed_mean_curve(
    runs: list[CellRun], window: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps, and the mean, min and max over seeds of the smoothed pass@1 curves (common evals only)."""
    n = min(len(r.eval_steps) for r in runs)
    curves = np.stack([smooth(r.pass_at_1[:n], window) for r in runs])
    return runs[0].eval_steps[:n], curves.mean(0), curves.min(0), curves.max(0)
