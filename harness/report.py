"""The leaderboard page of a suite: its ranking and runs as Markdown, an HTML page, a JSON summary
and plots under ``leaderboards/SUITE/``, rendered from harness/leaderboard.py's numbers; and the
claims page (``leaderboards/claims/``) from harness/claims.py's verdicts."""

from __future__ import annotations

import html
import json
import math
from datetime import datetime, timezone
from pathlib import Path

from advbench.harness import claims, leaderboard, plots, stats
from advbench.harness.claims import ClaimResult, ClaimsFile
from advbench.harness.leaderboard import (
    Board,
    CellRun,
    Row,
    missing_strata,
    rank,
    smallest_detectable,
    summary_json,
)


def _fmt_median(
    value: tuple[float | None, int],
    seeds: int,
    missed: str = "censored",
    got: str = "reached",
    also: str = "",
) -> str:
    median, hits = value
    counts = f"{hits}/{seeds} {got}" + (f", {also}" if also else "")
    if median is None:  # fewer than half of the runs got there: no median step
        return f"{missed} ({counts})"
    return f"{median:.0f} ({counts})"


def _fmt_time_to_peak(row: Row, reference: Row | None = None) -> str:
    """The median step of peak, how many runs were timed, and how many of those were still rising
    (timed at their last point, so the step is censored by the budget), as the runs table marks them.
    A row whose peak is detectably below the reference's says so ("lower peak"), and "earlier,
    lower" when it also peaks earlier: an earlier, lower peak is not faster learning."""
    missed = "not timed" if row.gained * 2 >= row.seeds else "no gain"  # most gained: too few evals
    also = f"{row.rising} rising" if row.rising else ""
    text = _fmt_median(row.time_to_peak, row.seeds, missed=missed, got="timed", also=also)
    if row.verdict == "worse":
        mine, theirs = row.time_to_peak[0], reference.time_to_peak[0] if reference else None
        earlier = mine is not None and theirs is not None and mine < theirs
        text += ", earlier, lower peak" if earlier else ", lower peak"
    return text


def _fmt_improvement(row: Row) -> str:
    """P(> reference) with its interval; with too few seeds to test, no interval: a bootstrap over
    2 runs against 2 gives [1.00, 1.00] one time in six by chance, which reads as certainty."""
    if row.improvement is None:
        return "-"
    if row.comparison is not None and row.comparison.detectable == float("inf"):
        return f"{row.improvement:.2f} (too few seeds for an interval)"
    return f"{row.improvement:.2f} [{row.improvement_ci[0]:.2f}, {row.improvement_ci[1]:.2f}]"


def _fmt_detectable(row: Row) -> str:
    if row.comparison is None:
        return "-"
    if row.comparison.detectable == float("inf"):
        return "none (too few seeds)"
    return f"{row.comparison.detectable:.3f}" + (" (paired)" if row.comparison.paired else "")


def cpu_name() -> str:
    """The CPU a measurement ran on, as Linux names it: results that move with the CPU family (RL
    runs, timings) carry it."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        import platform

        return platform.machine() or "an unknown CPU"


def store_label(uri: str) -> str:
    """The tracking store as a committed page names it: a local SQLite file by its path relative to
    the working directory (or its name alone), never the absolute path of the machine it ran on."""
    if not uri.startswith("sqlite:////"):
        return uri
    path = Path(uri.removeprefix("sqlite:///"))
    try:
        return f"sqlite:///{path.relative_to(Path.cwd())}"
    except ValueError:
        return f"sqlite:///{path.name}"


def ranking_table(board: Board, rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    k_max = max(r.k_max for r in board.runs)
    ci = f"{stats.LEVEL:.0%} CI"
    reference_row = next((row for row in rows if row.label == board.reference), None)
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
        "detectable difference",
        "entropy",
    ]
    table = []
    for row in rows:
        table.append(
            [
                str(row.tier),
                row.label,
                str(row.seeds),
                f"{row.peak}",
                f"{row.gain:+.3f}",
                f"{row.final_pass_at_kmax}",
                f"{row.final_pass_at_1:.3f}",
                _fmt_time_to_peak(row, reference_row),
                _fmt_median(row.thresholds[0.8], row.seeds),
                _fmt_improvement(row),
                row.verdict,
                _fmt_detectable(row),
                f"{row.entropy:.3f}",
            ]
        )
    return header, _unfilled(board, header, table)


def _unfilled(board: Board, header: list[str], table: list[list[str]]) -> list[list[str]]:
    """The table with the columns its runs cannot fill (``board.unfilled``) as "n/a" (the plain
    "final pass@1", the curve's last point, is always filled)."""
    blank = [
        i
        for i, column in enumerate(header)
        if column.startswith(tuple(board.unfilled)) and column != "final pass@1"
    ]
    return [[("n/a" if i in blank else cell) for i, cell in enumerate(row)] for row in table]


def cells_table(board: Board) -> tuple[list[str], list[list[str]]]:
    k_max = max(r.k_max for r in board.runs)
    header = ["estimator", "task", "model", "seed", "start pass@1", "peak pass@1", "step of peak",
              f"final pass@{k_max}", "entropy", "MLflow run"]  # fmt: skip
    table = []
    for label in board.labels:
        for r in sorted(board.of(label), key=lambda r: (r.stratum, r.seed)):
            table.append(
                [
                    label,
                    r.task,
                    r.model,
                    str(r.seed),
                    f"{r.summary.initial_pass_at_1:.3f}",
                    f"{r.summary.peak_pass_at_1:.3f}",
                    r.summary.time_to_peak_label(),
                    f"{r.pass_at_k()[r.k_max]:.3f}",
                    f"{r.summary.final_entropy:.3f}",
                    r.run_id,
                ]
            )
    return header, _unfilled(board, header, table)


def _markdown(header: list[str], table: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *map(line, table)])


def _html_table(header: list[str], table: list[list[str]], cls: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _notes(board: Board, rows: list[Row]) -> list[str]:
    overridden = [
        f"Run with overrides on every cell: {' '.join(board.overrides)}. The description above is the "
        "suite file's and does not include them."
    ][: bool(board.overrides)]
    notes = [
        *overridden,
        "Statistics over seeds (Agarwal et al. 2021): interquartile mean and mean pooled over the suite's "
        f"(task, model) strata; {stats.LEVEL:.0%} percentile intervals from a stratified bootstrap "
        f"({stats.REPS} resamples of seeds within each stratum).",
        "Peak pass@1 is the peak of the eval curve smoothed over complete windows; time-to-peak is "
        "the first eval within tolerance of it, the tolerance being the paired per-prompt standard "
        "error of the difference to the peak (docs/concepts/time-to-peak.md). A run whose gain over "
        "its first eval is within noise (one-sided, Bonferroni over the smoothed points) has no peak "
        "to time: 'no gain'; the median counts it as never. 'Gain over start' is cross-fitted (peak "
        "chosen on half of the prompts, read on the other half), so it averages zero on runs that "
        "learn nothing. "
        "R_ref is the suite's best median peak per stratum; "
        "'steps to 80%' is the median first step reaching start + 0.8 (R_ref - start), with the runs "
        "that reached it. 'Lower peak' marks a row whose peak is detectably below the reference's "
        "(the 'vs' test says 'worse'), 'earlier, lower peak' one that also peaks earlier: an earlier, "
        "lower peak is not faster learning; steps to 80% of R_ref compare speed to a bar both must "
        "reach.",
        f"P(> {board.reference}) is the probability that a run of the estimator has a higher peak "
        f"pass@1 than a run of {board.reference}: a description of the effect, not the test. The verdict "
        f"'vs {board.reference}' is a permutation test on peak pass@1 (exact where the relabellings are "
        f"few, else {stats.REPS} sampled): paired seed by seed when both have the same seeds (same seed: "
        "same eval prompts and eval sampling stream) and the pairs can reach the level, else runs "
        f"relabelled within each stratum; its p-values are Holm-adjusted over the {_compared(rows)} "
        f"estimator(s) compared with {board.reference}, so the chance of any false 'better' or 'worse' "
        f"on the page is at most {1 - stats.LEVEL:.0%}. 'Too few seeds': no outcome of these seed counts "
        "could pass Holm's first step. 'Detectable difference': the smallest true difference in peak "
        f"pass@1 these seeds find with {stats.POWER:.0%} power at that step (t approximation with the "
        "runs' own spread).",
        "Tier 1 holds the best row (highest peak IQM) and every row not detectably below it (the same "
        "test against the best, Holm over those rows); tier 2 the rows detectably below it.",
    ]
    detectable = smallest_detectable(rows)
    if detectable is not None:
        notes.append(
            f"Smallest difference in peak pass@1 this board's seeds could detect against {board.reference}: "
            + (
                f"{detectable:.3f} (median over its comparisons)."
                if detectable != float("inf")
                else "none: too few seeds."
            )
        )
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
    if board.unfilled:
        notes.append(
            "Columns these runs cannot fill (n/a): "
            + "; ".join(f"{column}: {why}" for column, why in board.unfilled.items())
            + "."
        )
    notes += budget_note(board.runs)
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


def _compared(rows: list[Row]) -> int:
    return sum(row.comparison is not None for row in rows)


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: right; }
th { background: #f3f3f3; } table.ranking td:nth-child(2) { text-align: left; font-weight: 600; }
table.cells td:first-child, table.claims td:first-child, table.tests td:first-child {
  text-align: left; font-weight: 600; }
.figures { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
figure { margin: 0; } figure img { width: 100%; border: 1px solid #eee; }
figcaption { text-align: center; color: #555; } .notes li { margin: 0.3rem 0; color: #444; }
.holds { color: #1a7f37; font-weight: 700; } .contradicted { color: #b42318; font-weight: 700; }
.inconclusive { color: #8a6d00; font-weight: 700; }
.not-comparable { color: #57606a; font-weight: 700; }
"""


def _html_page(title: str, body: str) -> str:
    """A standalone page: the leaderboards' and the claims' one style."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style></head><body>
{body}
</body></html>
"""


def write(board: Board, out: Path, rows: list[Row] | None = None) -> dict[str, Path]:
    """Render the leaderboard into ``out``: leaderboard.md, index.html, leaderboard.json and plots.

    ``rows``: the board's ranking when the caller has it already (``rank`` bootstraps; once is enough).
    """
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

    store = store_label(board.tracking_uri)
    generated = f"Generated {stamp} from {store}; reference: {board.reference}."
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
    page = _html_page(
        f"advbench leaderboard: {board.suite}",
        f"""<h1>Leaderboard: {html.escape(board.suite)}</h1>
<p>{html.escape(board.description)}</p>
<p>Generated {stamp} from <code>{html.escape(store)}</code>;
reference estimator: <b>{html.escape(board.reference)}</b>.</p>
<h2>Ranking by peak pass@1</h2>
{_html_table(rank_header, rank_rows, "ranking")}
<ul class="notes">{"".join(f"<li>{html.escape(n)}</li>" for n in notes)}</ul>
<h2>Plots</h2><div class="figures">{figure_html}</div>
<h2>Runs</h2>
{_html_table(cell_header, cell_rows, "cells")}""",
    )
    paths["html"].write_text(page)
    paths["json"].write_text(json.dumps(summary_json(board, rows), indent=1) + "\n")
    return paths


# ---------------------------------------------------------------------------------------------
# the claims page (harness/claims.py's verdicts)


def _test_rows(result: ClaimResult) -> tuple[list[str], list[list[str]]]:
    header = [
        "test",
        "effect [95% CI]",
        "per task",
        "p",
        "p (Holm)",
        "pairing",
        "detectable effect",
        "outcome",
    ]
    rows = []
    for test in result.tests:
        c = test.comparison
        detectable = f"{c.detectable:.3g}" if math.isfinite(c.detectable) else "none (too few seeds)"
        rows.append(
            [
                test.text(),
                f"{test.effect:+.3g} [{test.interval[0]:+.3g}, {test.interval[1]:+.3g}]",
                ", ".join(f"{name.split('/')[0]} {value:+.3g}" for name, value in test.per_stratum.items()),
                f"{c.p_value:.3g}",
                f"{test.adjusted_p:.3g}",
                "by seed" if c.paired else "unpaired",
                detectable,
                test.outcome,
            ]
        )
    return header, rows


def claims_table(results: list[ClaimResult]) -> tuple[list[str], list[list[str]]]:
    """One row per claim: its verdict and what decided it."""
    header = ["claim", "verdict", "tests holding", "runs", "seeds", "wall time"]
    rows = []
    for r in results:
        seeds = sorted({run.seed for run in r.board.runs})
        rows.append(
            [
                r.claim.key,
                r.verdict,
                f"{sum(t.holds for t in r.tests)}/{len(r.tests)}"
                + (f" (missing: {', '.join(r.missing)})" if r.missing else ""),
                f"{len(r.board.runs)}/{len(r.claim.suite.cells)}",
                str(len(seeds)),
                f"{r.seconds / 60:.1f} min" if r.seconds else "not run here (--no-run)",
            ]
        )
    return header, rows


# The share of a page's runs whose peak should turn within the budget: below it the page
# says its time-to-peak is censored.
UNCENSORED_TARGET = 0.8

CLAIMS_NOTES = [
    "Each test is a permutation test at 5% (two-sided) of the mean difference over the suite's "
    "strata (tasks): paired seed by seed when both estimators have the same seeds (same seed: same "
    "warm start, eval prompts and eval sampling stream) and the pairs can reach 5%; against a number, "
    "a sign-flip test of the runs' values minus it. Effect: of - than (or of - the number), with a "
    "95% stratified-bootstrap interval; the interval describes, the test decides.",
    "A claim holds when every one of its tests holds at 5% (an intersection-union test: no "
    "correction is needed to say 'all of them'); it is contradicted when a test is significant in "
    "the other direction after Holm's correction over the claim's tests; else it is inconclusive. "
    "Each claim is its own hypothesis at 5%: over five claims, about one in four pages would show a "
    "false 'holds' somewhere if none held.",
    "Detectable effect: the smallest true effect the test finds with 80% power at 5% (t approximation "
    "with the runs' own spread); 'none' where no outcome of these seed counts could reach 5%.",
    "not_less / not_greater are non-inferiority tests: 'no lower' holds when of > than - margin "
    "significantly, and is contradicted when of < than - margin significantly.",
    "A time test (time_to_peak) holds only where the peaks are comparable: when the arm that peaks "
    "earlier has a detectably lower peak pass@1 (permutation test at 5%), its outcome is 'earlier, "
    "lower: not faster' and it does not hold; steps to 80% of R_ref compare speed to a shared bar.",
]


def budget_note(runs: list[CellRun]) -> list[str]:
    """How the runs ended at their budget: a turned peak, still rising, or no detectable gain; and,
    when fewer than ``UNCENSORED_TARGET`` of them turned, what the budget does to time-to-peak."""
    runs = list({run.run_id: run for run in runs}.values())
    if not runs:
        return []
    gained = [r for r in runs if r.summary.gain_detected]
    timed = [r for r in gained if r.summary.time_to_peak_step is not None]
    turned = sum(not r.summary.still_rising for r in timed)
    rising = sum(r.summary.still_rising for r in timed)
    none = len(runs) - len(gained)
    short = len(gained) - len(timed)  # a gain, but too few evals to time a peak
    note = (
        f"Budget: of the {len(runs)} distinct runs, {turned} ({turned / len(runs):.0%}) reached a peak "
        f"that turned, {rising} ({rising / len(runs):.0%}) were still rising at their last eval and "
        f"{none} ({none / len(runs):.0%}) had no detectable gain."
    )
    if short:
        note += f" {short} gained but had too few evals to time a peak."
    if turned < UNCENSORED_TARGET * len(runs):
        note += (
            f" Fewer than {UNCENSORED_TARGET:.0%} turned: where runs still rise the budget ended before "
            "learning did and their time-to-peak is censored (timed against a maximum the budget cut "
            "short); compare the steps to 80% of R_ref (a bar a run reaches is timed whatever the "
            "budget), or run longer (benchmarks/budget.py measures how long)."
        )
    return [note]


def _claim_record(r: ClaimResult) -> dict:
    """A claim's verdict, tests and per-run values as claims.json holds them."""
    return {
        "claim": r.claim.key,
        "title": r.claim.title,
        "verdict": r.verdict,
        "tests_verdict": r.tests_verdict,
        "learning_rates": {
            label: {"lr": c.lr, "means": {f"{lr:g}": v for lr, v in c.means.items()}}
            for label, c in r.claim.rates.items()
        },
        "not_comparable": r.claim.not_comparable,
        "suite": r.claim.suite.name,
        "runs": len(r.board.runs),
        "cells": len(r.claim.suite.cells),
        "seconds": r.seconds,
        "missing": r.missing,
        "tests": [
            {
                "test": t.text(),
                "effect": t.effect,
                "interval": list(t.interval),
                "per_stratum": t.per_stratum,
                "p_value": t.comparison.p_value,
                "holm_p_value": t.adjusted_p,
                "paired": t.comparison.paired,
                "detectable": t.comparison.detectable if math.isfinite(t.comparison.detectable) else None,
                "outcome": t.outcome,
            }
            for t in r.tests
        ],
        "values": r.values,
    }


def _rates_text(r: ClaimResult) -> str:
    """Which learning rate each arm got and how (a claims file's lr_grid), or nothing."""
    if not r.claim.rates:
        return ""
    parts = []
    for label, choice in r.claim.rates.items():
        means = ", ".join(
            f"{lr:g}: {value:.3f}" if value is not None else f"{lr:g}: unfinished"
            for lr, value in choice.means.items()
        )
        chosen = (
            f"{choice.lr:g}"
            if choice.lr is not None
            else "its configured rate (the grid's runs are unfinished)"
        )
        parts.append(f"{label} {chosen} ({means})")
    return (
        "Learning rates (the best of the grid per arm, mean over the tuning seeds): " + "; ".join(parts) + "."
    )


def _claim_section(r: ClaimResult, out: Path) -> tuple[str, str]:
    """A claim's part of the page (Markdown, HTML): verdict, tests, plot, and its suite's leaderboard
    written beside it."""
    plot = plots.plot_claim(r, out / f"{r.claim.key}.png") if r.values else None
    board_link = ""
    if r.board.runs:
        try:
            write(r.board, out / r.claim.key)
            board_link = f"{r.claim.key}/index.html"
        except leaderboard.NonFiniteCurve as exc:
            board_link = f"(no leaderboard: {exc})"
    header, rows = _test_rows(r)
    facts = (
        f"Suite `{r.claim.suite.name}`: {len(r.board.runs)}/{len(r.claim.suite.cells)} runs finished, "
        f"{len({run.seed for run in r.board.runs})} seeds; source: {r.claim.source}."
    )
    missing = f"Missing: {', '.join(r.missing)}." if r.missing else ""
    rates = _rates_text(r)
    verdict = f"Verdict: {r.verdict}."
    if r.claim.not_comparable:
        verdict = (
            f"Verdict: not comparable: {r.claim.not_comparable}. On our own operationalisation, which "
            f"is not the paper's, the tests say: {r.tests_verdict}."
        )
    markdown = "\n\n".join(
        filter(
            None,
            [
                f"## {r.claim.title}",
                f"**{verdict}** {r.claim.statement}",
                facts,
                rates,
                _markdown(header, rows) if rows else "",
                missing,
                f"![{r.claim.key}]({plot.name})" if plot else "",
                f"The suite's leaderboard: [{r.claim.key}/]({board_link})" if board_link else "",
            ],
        )
    )
    page = (
        f"<h2>{html.escape(r.claim.title)}</h2>"
        f'<p><span class="{r.verdict.replace(" ", "-")}">{html.escape(verdict)}</span> '
        f"{html.escape(r.claim.statement)}</p>"
        f"<p>{html.escape(facts)}</p>"
        + (f"<p>{html.escape(rates)}</p>" if rates else "")
        + (_html_table(header, rows, "tests") if rows else "")
        + (f"<p>{html.escape(missing)}</p>" if missing else "")
        + (f'<figure><img src="{html.escape(plot.name)}" alt="{r.claim.key}"></figure>' if plot else "")
        + (
            f'<p>The suite\'s leaderboard: <a href="{board_link}">{r.claim.key}/</a></p>'
            if board_link
            else ""
        )
    )
    return markdown, page


def write_claims(
    declared: ClaimsFile, results: list[ClaimResult], out: Path, command: str
) -> dict[str, Path]:
    """leaderboards/claims/: claims.md, index.html, claims.json, one plot per claim, and each claim
    suite's leaderboard in a folder of its own."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")  # noqa: UP017  py3.10
    summary_header, summary_rows = claims_table(results)
    used = sorted({p.metric for r in results for p in r.claim.predicates})
    metric_notes = [f"{name}: {claims.METRICS[name].description}." for name in used]
    sections = [_claim_section(r, out) for r in results]
    store = store_label(results[0].board.tracking_uri) if results else ""
    generated = f"Generated {stamp} by `{command}` from {store}."
    notes = CLAIMS_NOTES + metric_notes + budget_note([run for r in results for run in r.board.runs])
    grid = declared.lr_grid
    if grid is not None:
        notes.append(
            f"A fair learning rate per arm: every arm (an estimator variant on one task) trained at "
            f"each of {', '.join(f'{lr:g}' for lr in grid.rates)} on seeds "
            f"{', '.join(map(str, grid.seeds))}, which no test scores; its scored runs use the rate with "
            f"the best mean {grid.metric} there (each claim lists the rates and means)."
        )
    markdown = "\n\n".join(
        [
            f"# Claims: {declared.name}",
            declared.description,
            generated,
            _markdown(summary_header, summary_rows),
            "\n".join(f"- {n}" for n in notes),
            *(md for md, _ in sections),
        ]
    )
    paths = {"markdown": out / "claims.md", "html": out / "index.html", "json": out / "claims.json"}
    paths["markdown"].write_text(markdown + "\n")
    paths["html"].write_text(
        _html_page(
            f"advbench claims: {declared.name}",
            f"<h1>Claims: {html.escape(declared.name)}</h1><p>{html.escape(declared.description)}</p>"
            f"<p>{html.escape(generated)}</p>"
            + _html_table(summary_header, summary_rows, "claims")
            + f'<ul class="notes">{"".join(f"<li>{html.escape(n)}</li>" for n in notes)}</ul>'
            + "".join(page for _, page in sections),
        )
    )
    records = [_claim_record(r) for r in results]
    paths["json"].write_text(json.dumps({"name": declared.name, "claims": records}, indent=1) + "\n")
    return paths
