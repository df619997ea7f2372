"""The ``advbench`` command line.

    advbench run [-c FILE] [key=value ...]   train and evaluate; lists sweep (estimator=[grpo,rloo])
    advbench list                            registered estimators, losses, tasks and models
    advbench suite SUITE [--ray [ADDR]]      run a suite's cells (skips finished ones, resumes died ones)
    advbench leaderboard SUITE               ranking with confidence intervals, plots, HTML and Markdown
    advbench leaderboard EXPERIMENT --runs   the same for TRL and verl runs in an MLflow experiment
    advbench check SUITE --baseline FILE     run a suite, compare with a stored baseline; --update it
    advbench axes RUN                        plot a run's (or a parent's runs') sign x difficulty path
    advbench claims [FILE] [--only CLAIM]    run declared claims, write their verdicts (leaderboards/claims)

The config is resolved and validated before torch, transformers or MLflow are imported, so a bad
config fails fast with the key and the valid choices. Re-running a finished run (same resolved
config, same tracking store) does not train again: its stored summary is reported.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from advbench.harness.config import ConfigError, RunConfig, config_hash, group_choices, load
from advbench.harness.errors import disk_full
from advbench.harness.metrics import RunSummary
from advbench.harness.runner import (
    CellOutcome,
    cell_lock,
    check_cache_dirs,
    check_devices,
    quiet_libraries,
)

console = Console(stderr=True, soft_wrap=True)  # progress and messages


class _ResultsConsole(Console):
    """A reader that leaves early (`advbench list | grep -q NAME`, `| head`) has what it wanted:
    end with success, as ripgrep does, where rich's default exits with status 1 (which fails a
    `set -o pipefail` script). Later writes go to /dev/null, as in rich's own handler."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0)


def _results_console() -> Console:
    """stdout for results; when piped to a file or CI log, wide enough for the tables unless
    COLUMNS says how wide (rich reads it)."""
    out = _ResultsConsole()
    return out if out.is_terminal or os.environ.get("COLUMNS") else _ResultsConsole(width=160)


def _summary_row(cfg: RunConfig, summary: RunSummary, status: str) -> list[str]:

    final = summary.final_pass_at_k
    final_k = max(final)
    return [
        cfg.estimator,
        cfg.loss["name"],
        cfg.task.name,
        str(cfg.seed),
        f"{summary.initial_pass_at_1:.3f}",
        f"{summary.peak_pass_at_1:.3f}",
        summary.time_to_peak_label(),
        f"{final[final_k]:.3f}",
        f"{summary.final_entropy:.3f}",
        status,
    ]


def _summary_table(rows: list[list[str]], final_k: int) -> Table:
    table = Table(title="advbench: eval pass@1 (smoothed) per run")
    for name, justify in [
        ("estimator", "left"),
        ("loss", "left"),
        ("task", "left"),
        ("seed", "right"),
        ("start pass@1", "right"),
        ("peak pass@1", "right"),
        ("step of peak", "right"),
        (f"final pass@{final_k}", "right"),
        ("entropy", "right"),
        ("note", "left"),
    ]:
        table.add_column(name, justify=justify)
    for row in rows:
        table.add_row(*row)
    return table


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=False,
    )


@dataclass
class _CellDisplay:
    """A cell's progress bar, and plain lines where rich draws none (a log file, CI): one at each
    eval and every quarter of the warm start."""

    progress: Progress
    cfg: RunConfig

    def __post_init__(self) -> None:
        self.bar = self.progress.add_task(self.cfg.run_name, total=self.cfg.trainer.steps, info="")
        self.plain = not console.is_terminal
        self.started = time.perf_counter()
        self.last_eval = ""  # the latest eval's pass@1, shown until the next eval

    def say_plainly(self, text: str) -> None:
        elapsed = time.perf_counter() - self.started
        console.print(f"{self.cfg.run_name}: {text} ({elapsed:.0f} s)", highlight=False)

    def on_warmstart(self, step: int, loss: float) -> None:
        text = f"warm start {step}/{self.cfg.model.warmstart.steps} loss {loss:.3f}"
        self.progress.update(self.bar, info=text)
        if self.plain and step % max(1, self.cfg.model.warmstart.steps // 4) == 0:
            self.say_plainly(text)

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        if "eval/pass_at_1" in metrics:
            self.last_eval = f" | eval pass@1 {metrics['eval/pass_at_1']:.3f}"
        info = f"reward {metrics['train/reward_mean']:.3f} entropy {metrics['train/entropy']:.3f}"
        self.progress.update(self.bar, completed=step, info=info + self.last_eval)
        if self.plain and "eval/pass_at_1" in metrics:
            self.say_plainly(f"step {step}/{self.cfg.trainer.steps} {info}{self.last_eval}")

    def ended(self, outcome: CellOutcome) -> None:
        if outcome.status == "cached":
            self.progress.update(self.bar, completed=self.cfg.trainer.steps, info="finished before")


def _run_here(progress: Progress, cfg: RunConfig, tracker, parent) -> CellOutcome:
    """One cell in this process, with a progress bar of its steps."""
    from advbench.harness.runner import run_cell

    display = _CellDisplay(progress, cfg)
    outcome = run_cell(cfg, tracker, parent, display.on_step, display.on_warmstart, say=console.print)
    display.ended(outcome)
    return outcome


def _run_pack_here(
    progress: Progress, cells: list[RunConfig], tracker, parent
) -> tuple[list[CellOutcome], list[tuple[RunConfig, str]]]:
    """One pack in this process, with a progress bar per cell."""
    from advbench.harness.runner import run_pack

    displays = {id(cfg): _CellDisplay(progress, cfg) for cfg in cells}
    first = displays[id(cells[0])]
    outcomes, failures = run_pack(
        cells,
        tracker,
        parent,
        on_step=lambda cfg, step, metrics: displays[id(cfg)].on_step(step, metrics),
        on_warmstart=first.on_warmstart,
        say=console.print,
    )
    for outcome in outcomes:  # run_pack reports each cell with the config it was given
        displays[id(outcome.cfg)].ended(outcome)
    return outcomes, failures


def _run_cells(
    cells: list[RunConfig],
    tracker,
    parent,
    ray_address: str | None = None,
    keep_going: bool = False,
    pack: int = 0,
    cells_per_gpu: int = 1,
) -> tuple[list[CellOutcome], list[tuple[RunConfig, str]]]:
    """Run cells here (one after the other) or as Ray tasks; the failures, when ``keep_going``.
    Cells marked packed (trainer.packed) run in packs of at most ``pack`` (harness/pack.py)."""
    from advbench.harness.runner import units

    outcomes: list[CellOutcome] = []
    failures: list[tuple[RunConfig, str]] = []
    with _progress() as progress:
        if ray_address is not None:
            from advbench.harness.runner import run_cells_ray

            bar = progress.add_task(f"{len(cells)} cells on Ray", total=len(cells), info="")

            def on_done(outcome: CellOutcome) -> None:
                outcomes.append(outcome)
                progress.update(bar, advance=1, info=f"{outcome.cfg.run_name} {outcome.status}")

            def on_failed(cfg: RunConfig, error: str) -> None:
                failures.append((cfg, error))
                progress.update(bar, advance=1, info=f"{cfg.run_name} failed")

            run_cells_ray(units(cells, pack), parent.run_id, ray_address, on_done, on_failed, cells_per_gpu)
            if failures and not keep_going:
                raise RuntimeError(f"{len(failures)} cell(s) failed on Ray: {failures[0][1]}")
            return outcomes, failures
        for unit in units(cells, pack):
            try:
                if unit[0].trainer.packed:
                    done, failed = _run_pack_here(progress, unit, tracker, parent)
                    outcomes.extend(done)
                    if failed and not keep_going:
                        raise RuntimeError(f"{failed[0][0].run_name} failed in its pack: {failed[0][1]}")
                    failures.extend(failed)
                else:
                    outcomes.append(_run_here(progress, unit[0], tracker, parent))
            except Exception as exc:
                if not keep_going or disk_full(exc):  # the next cell could not write either
                    raise
                failures.extend((cfg, f"{type(exc).__name__}: {exc}") for cfg in unit)
                console.print_exception(max_frames=4)
                names = ", ".join(cfg.run_name for cfg in unit)
                console.print(f"[red]{escape(names)} failed[/]; going on with the other cells")
    return outcomes, failures


def _print_summary(outcomes: list[CellOutcome], final_k: int) -> None:
    if outcomes:
        rows = [_summary_row(o.cfg, o.summary, "cached" if o.status == "cached" else "") for o in outcomes]
        _results_console().print(_summary_table(rows, final_k))


def cmd_run(args: argparse.Namespace) -> int:
    runs = load(args.overrides, args.config)  # validated before anything heavy is imported
    if args.pack:
        from advbench.harness.suites import mark_packable

        runs = mark_packable(runs)
    check_cache_dirs(runs)
    quiet_libraries()
    check_devices(runs)
    from advbench.harness.tracking import Tracker, browse_hint

    tracker = Tracker(runs[0].tracking)
    name = args.name or f"run-{datetime.now():%Y%m%d-%H%M%S}"
    parent = tracker.start_parent(
        name, tags={"advbench.command": " ".join(["advbench", "run", *sys.argv[2:]])}
    )
    console.print(
        f"[bold]advbench[/] {len(runs)} run(s) under MLflow parent run '{name}' ({runs[0].tracking.uri})"
    )
    outcomes: list[CellOutcome] = []
    status = "FAILED"
    try:
        outcomes, _ = _run_cells(runs, tracker, parent, pack=args.pack or 0)
        status = "FINISHED"
    finally:
        _finish_parent(parent, status)
        _print_summary(outcomes, runs[0].eval.n)
    console.print(browse_hint(runs[0].tracking.uri, tracker.experiment_id), highlight=False)
    return 0


def _finish_parent(parent, status: str) -> None:
    """Mark the invocation's parent run ended; on a full disk only if the store can still take it
    (the error being raised says what happened)."""
    failure = sys.exc_info()[1]
    if failure is None or not disk_full(failure):
        parent.finish(status)
        return
    with contextlib.suppress(Exception):
        parent.finish(status)


def _run_suite(args: argparse.Namespace):
    """Expand, record and run a suite; its outcomes and failures."""
    from advbench.harness.suites import load_suite

    return _run_loaded_suite(load_suite(args.suite, args.overrides, args.pack), args.ray, args.cells_per_gpu)


def _run_loaded_suite(suite, ray: str | None, cells_per_gpu: int = 1):
    """Record and run an expanded suite: (suite, tracker, parent run, outcomes, failures)."""
    if ray is None:
        check_cache_dirs(suite.cells)
    quiet_libraries()
    if ray is None:
        check_devices(suite.cells)
    from advbench.harness.tracking import Tracker

    tracker = Tracker(suite.cells[0].tracking)
    command = " ".join(["advbench", *sys.argv[1:]])
    with cell_lock(suite.cells[0], f"suite-{suite.hash}"):  # two processes at once: still one parent run
        parent = tracker.start_suite(suite, tags={"advbench.command": command})
    where = "on Ray" if ray is not None else "here, one after the other"
    console.print(
        f"[bold]advbench suite {escape(suite.name)}[/]: {len(suite.cells)} cells ({len(suite.labels)} "
        f"estimators), {where}; MLflow parent run {parent.run_id} ({suite.cells[0].tracking.uri})"
    )
    status = "FAILED"
    try:
        outcomes, failures = _run_cells(
            suite.cells, tracker, parent, ray, keep_going=True, pack=suite.pack, cells_per_gpu=cells_per_gpu
        )
        status = "FINISHED" if not failures else "FAILED"
    finally:
        _finish_parent(parent, status)
    return suite, tracker, parent, outcomes, failures


def cmd_suite(args: argparse.Namespace) -> int:
    suite, tracker, _, outcomes, failures = _run_suite(args)
    _print_summary(outcomes, suite.cells[0].eval.n)
    for cfg, error in failures:
        console.print(f"[red]failed[/] {escape(cfg.run_name)}: {escape(error)}")
    ran = sum(o.status != "cached" for o in outcomes)
    console.print(
        f"suite {escape(suite.name)}: {len(outcomes)}/{len(suite.cells)} cells finished "
        f"({ran} run now, {len(outcomes) - ran} before), {len(failures)} failed. "
        f"Leaderboard: advbench leaderboard {escape(suite.name)}"
    )
    from advbench.harness.tracking import browse_hint

    console.print(browse_hint(suite.cells[0].tracking.uri, tracker.experiment_id), highlight=False)
    return 1 if failures else 0


def _tracker_for(ref: str, args: argparse.Namespace):
    """The tracking store of a suite: its file's, or the --tracking-uri / --experiment given."""
    from advbench.harness.config import TrackingConfig
    from advbench.harness.suites import suite_file

    name, cfg = ref, TrackingConfig()
    path = suite_file(ref)
    if path is not None:
        from advbench.harness.suites import load_suite

        suite = load_suite(path, args.overrides)
        name, cfg = suite.name, suite.cells[0].tracking
    # replaced, not assigned: the dataclass checks the URI as it checks one from a config
    cfg = dataclasses.replace(
        cfg, uri=args.tracking_uri or cfg.uri, experiment=args.experiment or cfg.experiment
    )
    quiet_libraries()
    from advbench.harness.tracking import Tracker

    return name, Tracker(cfg)


def _rank(board):
    """The board's ranking, or None after saying why it cannot be ranked (a run's NaN eval curve)."""
    from advbench.harness import leaderboard

    try:
        return leaderboard.rank(board)
    except leaderboard.NonFiniteCurve as exc:
        console.print(f"[bold red]leaderboard error[/]: {escape(str(exc))}")
        return None


def _leaderboard_folder(name: str) -> Path:
    """leaderboards/<name>, for a name that cannot lead out of it (``../..``, an absolute path)."""
    from advbench.harness.suites import SUITE_NAME

    if not SUITE_NAME.fullmatch(name):
        raise ConfigError(
            f"leaderboard name {name!r} cannot name a folder under leaderboards/ (letters, digits, "
            "'-', '_', '.'); give the output folder with --out"
        )
    return Path("leaderboards") / name


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from advbench.harness import leaderboard, report
    from advbench.harness.suites import suite_file

    if args.reference and not args.runs:
        raise ConfigError("--reference chooses the label of --runs; a suite's reference is in its file")
    if args.runs:
        args.experiment = args.experiment or args.suite
    if not args.out and suite_file(args.suite) is None:
        _leaderboard_folder(args.suite)  # before the store is opened: a name leading out of leaderboards/
    name, tracker = _tracker_for(args.suite, args)
    try:
        if args.runs:
            board = leaderboard.collect_trainer_runs(tracker, args.reference)
        else:
            board = leaderboard.collect(tracker, leaderboard.find_suite_run(tracker, name))
        ranking = _rank(board)
        if ranking is None:
            return 2
        paths = report.write(board, Path(args.out or _leaderboard_folder(name)), ranking)
    except LookupError as exc:  # no such suite, or none of its runs finished
        raise ConfigError(str(exc)) from None
    header, rows = report.ranking_table(board, ranking)
    shown = [i for i, column in enumerate(header) if not column.startswith(("final pass@1", "steps to"))]
    table = Table(title=f"advbench leaderboard: {name} ({len(board.runs)} runs; all columns in the HTML)")
    for i in shown:
        table.add_column(escape(header[i]), justify="left" if header[i] == "estimator" else "right")
    for row in rows:
        table.add_row(*(escape(row[i]) for i in shown))
    _results_console().print(table)
    if board.missing:
        console.print(f"[yellow]{len(board.missing)} cell(s) have no finished run[/]; they are left out")
    console.print(f"wrote {paths['html']}, {paths['markdown']} and the plots beside them")
    return 0


def cmd_claims(args: argparse.Namespace) -> int:
    from advbench.harness import claims

    if args.metrics:
        table = Table(title="metrics a claim's predicate can name")
        table.add_column("metric")
        table.add_column("what it is, per run")
        for name, metric in claims.METRICS.items():
            table.add_row(name, metric.description)
        _results_console().print(table)
        return 0
    # every claim, suite and predicate checked before anything runs
    declared = claims.load_claims(args.claims, args.overrides, args.only, args.seeds, args.pack)
    console.print(
        f"[bold]advbench claims {escape(declared.name)}[/]: {len(declared.claims)} claim(s), "
        f"{len({config_hash(c) for claim in declared.claims for c in claim.suite.cells})} cell(s) in all "
        "(cells the claims share run once)"
    )
    results, failed = [], 0
    if declared.lr_grid is not None:
        declared, failed = _tune_rates(declared, args)
    for claim in declared.claims:
        start = time.perf_counter()
        if args.no_run:
            quiet_libraries()
            from advbench.harness.tracking import Tracker

            tracker = Tracker(claim.suite.cells[0].tracking)
            parent = None
        else:
            console.print(f"[bold]claim {escape(claim.key)}[/]: suite {escape(claim.suite.name)}")
            _, tracker, parent, _, failures = _run_loaded_suite(claim.suite, args.ray)
            failed += len(failures)
        seconds = 0.0 if args.no_run else time.perf_counter() - start  # --no-run: nothing was run
        result = claims.run_claim(claim, tracker, parent, seconds=seconds)
        results.append(result)
        console.print(f"claim {escape(claim.key)}: [bold]{result.verdict}[/]")
    from advbench.harness import report

    out = Path(args.out or Path("leaderboards") / "claims")
    paths = report.write_claims(declared, results, out, command=" ".join(["advbench", *sys.argv[1:]]))
    header, rows = report.claims_table(results)
    table = Table(title=f"advbench claims: {declared.name}")
    for column in header:
        table.add_column(escape(column), justify="left")
    for row in rows:
        table.add_row(*map(escape, row))
    _results_console().print(table)
    console.print(f"wrote {paths['html']} and {paths['markdown']}")
    return 1 if failed else 0


def _tune_rates(declared, args: argparse.Namespace):
    """The claims file's lr grid: every arm trained at every rate on the tuning seeds (skipped with
    --no-run: what the store has is read), then each arm's scored runs set to its best rate."""
    from advbench.harness import claims
    from advbench.harness.suites import Suite

    grid, failed = declared.lr_grid, 0
    cells = claims.tuning_cells(declared)
    rates = ", ".join(f"{r:g}" for r in grid.rates)
    console.print(
        f"[bold]learning rates[/]: {len(cells)} tuning run(s), rates {rates} on seeds "
        f"{', '.join(map(str, grid.seeds))} (not scored), chosen by mean {grid.metric}"
    )
    pack = max((claim.suite.pack for claim in declared.claims), default=0)
    tuning = Suite(
        f"{declared.name}-lr-grid", declared.path, "the lr grid's tuning runs", "", [], cells, pack
    )
    if args.no_run:
        quiet_libraries()
        from advbench.harness.tracking import Tracker

        tracker = Tracker(cells[0].tracking)
    else:
        _, tracker, _, _, failures = _run_loaded_suite(tuning, args.ray)
        failed = len(failures)
    declared = claims.with_rates(declared, tracker)
    for claim in declared.claims:
        chosen = ", ".join(
            f"{label} {choice.lr:g}" if choice.lr is not None else f"{label} not tuned (runs missing)"
            for label, choice in claim.rates.items()
        )
        console.print(f"claim {escape(claim.key)}: {escape(chosen)}")
    return declared, failed


def cmd_check(args: argparse.Namespace) -> int:
    from advbench.harness import check, leaderboard

    baseline_path = Path(args.baseline)
    old = None
    if not args.update:
        try:
            old = check.load_baseline(baseline_path)
        except (FileNotFoundError, ValueError) as exc:
            raise ConfigError(str(exc)) from None
    suite, tracker, parent, _, failures = _run_suite(args)
    board = leaderboard.collect(tracker, tracker.client.get_run(parent.run_id))
    if _rank(board) is None:
        return 2
    current = check.runs_of(board)
    for cfg, error in failures:
        console.print(f"[red]failed[/] {escape(cfg.run_name)}: {escape(error)}")
    if args.update:
        if failures:
            console.print("[red]not updating the baseline: some cells failed[/]")
            return 1
        command = " ".join(["advbench", *sys.argv[1:]])
        try:
            written = check.write_baseline(baseline_path, suite.name, current, command)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        console.print(f"wrote baseline {baseline_path} ({len(current)} estimators)")
        console.print(check.describe_noise(written), highlight=False)
        return 0
    findings = check.compare(old, current)
    _print_findings(findings, f"advbench check: {suite.name} against {baseline_path}")
    console.print(check.describe_noise(old), highlight=False)
    bad = check.failures(findings)
    for f in bad:
        change = "no result" if f.current is None else f"{f.baseline:.3f} -> {f.current:.3f} ({f.delta:+.3f})"
        console.print(
            f"[bold red]REGRESSED[/] {escape(f.label)} {f.metric}: {change}, threshold {f.threshold:.3f}"
        )
    if any(f.status == "improved" for f in findings):
        console.print(
            "[green]some metrics improved beyond their threshold[/]: rerun with --update to raise the bar"
        )
    if bad or failures:
        worst = (
            ", ".join(f"{f.label} {f.metric} {f.delta:+.3f}" for f in bad if f.delta is not None)
            or "results missing"
        )
        console.print(f"[bold red]check failed[/]: {len(bad)} of {len(findings)} rows regressed ({worst})")
        return 1
    console.print(f"[bold green]check passed[/]: {len(findings)} comparisons within their thresholds")
    return 0


def _print_findings(findings, title: str) -> None:
    """Per estimator and metric: baseline, now, change, the threshold and the detectable regression."""
    table = Table(title=title)
    columns = ("estimator", "metric", "baseline", "now", "change", "threshold", "detects", "verdict")
    for column in columns:
        table.add_column(column, justify="left" if column in ("estimator", "metric", "verdict") else "right")
    style = {"regressed": "bold red", "missing": "bold red", "improved": "green", "new": "yellow", "ok": ""}

    def number(value, sign=""):
        if value is None or value != value:
            return "-"
        return f"{0.0 if abs(value) < 5e-4 else value:{sign}.3f}"  # no "-0.000" for a rounding's sign

    for f in findings:
        table.add_row(
            escape(f.label),
            f.metric,
            number(f.baseline),
            number(f.current),
            number(f.delta, "+"),
            number(-f.threshold, "+") if f.threshold else "-",
            number(-f.detectable, "+") if f.detectable else "-",
            f"[{style[f.status]}]{f.status}[/]" if style[f.status] else f.status,
        )
    _results_console().print(table)


def _first_sentence(yaml_text: str) -> str:
    """The first sentence of a config file's leading comment (which may run over several lines)."""
    lines = []
    for line in yaml_text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").strip())
    text = " ".join(lines)
    end = re.search(r"(?<=[A-Za-z0-9)])\. ", text)  # not the dots of "..."
    return text if end is None else text[: end.start() + 1]


def cmd_list(args: argparse.Namespace) -> int:
    from advbench import estimators
    from advbench.harness import losses, plugins

    plugins.load(args.plugin)

    from omegaconf import OmegaConf
    from rich import box

    from advbench.harness.config import find_config

    def table(title: str, third: str) -> Table:
        # one table per kind, no kind column: at 80 columns the descriptions keep most of the width
        t = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", expand=True)
        t.add_column("name", no_wrap=True)
        t.add_column("description", ratio=3)
        if third == "dataset":  # one short word: its natural width
            t.add_column(third, no_wrap=True)
        else:
            t.add_column(third, ratio=1, overflow="fold")  # a long DOI folds rather than being cut
        return t

    tables = [table("estimators (estimator=NAME estimator.KNOB=V)", "source")]
    for name in estimators.names():
        est = estimators.get(name)
        tables[0].add_row(name, escape(est.description), escape(est.source))
    tables.append(table("policy losses (loss=NAME loss.KNOB=V)", "source"))
    for name in losses.names():
        tables[1].add_row(name, escape(losses.get(name).description), escape(losses.get(name).source))
    titles = {"task": "tasks (task=NAME)", "model": "models (model=NAME)", "rollout": "rollout engines"}
    for group, title in titles.items():
        tables.append(table(title, "dataset" if group == "task" else ""))
        for name in group_choices(group):
            text = find_config(group, name).read_text()
            detail = OmegaConf.create(text).get("dataset", "") if group == "task" else ""
            tables[-1].add_row(name, escape(_first_sentence(text)), escape(str(detail)))
    out = _results_console()
    for t in tables:
        out.print(t)
    return 0


def cmd_axes(args: argparse.Namespace) -> int:
    from mlflow.tracking import MlflowClient

    from advbench.harness.plots import plot_axes, resolve_runs

    client = MlflowClient(tracking_uri=args.tracking_uri)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        raise ConfigError(f"no MLflow experiment '{args.experiment}' at {args.tracking_uri}")
    runs = resolve_runs(client, experiment.experiment_id, args.run)
    out = plot_axes(client, runs, Path(args.out or f"axes-{args.run}.png"))
    console.print(f"wrote {out} ({len(runs)} run(s))")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="advbench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train and evaluate the configured run(s)")
    run.add_argument("-c", "--config", help="a YAML file merged over configs/base.yaml")
    run.add_argument("--name", help="name of the MLflow parent run")
    add_pack_argument(run)
    add_plugin_argument(run)
    run.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. estimator=rloo trainer.steps=200"
    )
    run.set_defaults(func=cmd_run)
    axes = sub.add_parser("axes", help="plot runs' trajectories on the sign x difficulty plane")
    axes.add_argument("run", help="an MLflow run id or name; a parent run plots all its runs")
    axes.add_argument("--out", help="PNG path (default axes-RUN.png)")
    axes.add_argument("--tracking-uri", default="sqlite:///advbench.db", help="the MLflow store of the runs")
    axes.add_argument("--experiment", default="advbench", help="the MLflow experiment of the runs")
    axes.set_defaults(func=cmd_axes)

    def add_suite_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("suite", help="a suite file, or the name of one under suites/ (smoke)")
        p.add_argument(
            "--ray",
            nargs="?",
            const="local",
            metavar="ADDRESS",
            help="run cells as Ray tasks: on the cluster at ADDRESS ('auto': the running one), "
            "or on a new local one when no address is given",
        )
        p.add_argument(
            "--cells-per-gpu",
            type=int,
            default=1,
            metavar="K",
            help="with --ray: K solo cells share one GPU (Ray's fractional GPUs), for models a pack "
            "cannot hold (a local checkpoint); a pack keeps a GPU to itself",
        )
        add_pack_argument(p)
        p.add_argument("overrides", nargs="*", help="key=value overrides applied to every cell")
        add_plugin_argument(p)

    suite = sub.add_parser("suite", help="run every cell of a suite (skips finished, resumes died)")
    add_suite_arguments(suite)
    suite.set_defaults(func=cmd_suite)
    board = sub.add_parser("leaderboard", help="write a suite's leaderboard (Markdown, HTML, plots)")
    board.add_argument("suite", help="a suite name (as recorded in MLflow) or suite file")
    board.add_argument("--out", help="output folder (default leaderboards/SUITE)")
    board.add_argument("--tracking-uri", help="MLflow tracking URI (default: the suite's)")
    board.add_argument("--experiment", help="MLflow experiment (default: the suite's)")
    board.add_argument(
        "--runs",
        action="store_true",
        help="SUITE names an MLflow experiment of TRL runs (advbench's adapter) or verl runs "
        "(docs/guides/beyond-one-machine.md): rank those instead of a suite's cells",
    )
    board.add_argument("--reference", help="with --runs: the label compared against (default: the first)")
    board.set_defaults(func=cmd_leaderboard, overrides=[])
    chk = sub.add_parser("check", help="run a suite and compare it with a stored baseline")
    add_suite_arguments(chk)
    chk.add_argument("--baseline", required=True, help="baseline JSON (every run's metrics and their noise)")
    chk.add_argument(
        "--update", action="store_true", help="write the current results and their noise as the baseline"
    )
    chk.set_defaults(func=cmd_check)
    add_claims_parser(sub)
    lst = sub.add_parser("list", help="list registered estimators, losses, tasks and models")
    add_plugin_argument(lst)
    lst.set_defaults(func=cmd_list)
    return parser


def add_claims_parser(sub) -> None:
    cl = sub.add_parser("claims", help="run declared claims (suites + predicates), write their verdicts")
    cl.add_argument(
        "claims", nargs="?", default="seeds", help="a claims file, or the name of one under suites/claims/"
    )
    cl.add_argument(
        "--only", action="append", default=[], metavar="CLAIM", help="run this claim (repeatable)"
    )
    cl.add_argument("--seeds", type=int, default=0, help="keep the first N seeds of every suite (0: all)")
    cl.add_argument("--out", help="output folder (default leaderboards/claims)")
    cl.add_argument("--no-run", action="store_true", help="judge the runs MLflow has; run nothing")
    cl.add_argument("--metrics", action="store_true", help="list the metrics a predicate can name")
    cl.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS", help="run cells as Ray tasks")
    add_pack_argument(cl)
    cl.add_argument("overrides", nargs="*", help="key=value overrides applied to every cell")
    cl.set_defaults(func=cmd_claims)


def add_pack_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pack",
        type=int,
        metavar="N",
        help="train compatible cells (same scale, task and batch shape) N at a time as one batched "
        "model (docs/concepts/packs.md); a packed run is a run of its own, recorded as packed; "
        "0: none (default: the suite file's pack key, else 0)",
    )


def add_plugin_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE_OR_PATH",
        help="a module (name or .py path) that registers estimators or losses (docs/guides/plugins.md); "
        "repeatable; installed plugins load without it",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may come before or after options (`run estimator=x --name y seed=1`): argparse
    # stops a positional list at the first option, so the key=value items after it arrive as extras.
    args, extra = parser.parse_known_args(argv)
    if extra and (
        args.command not in ("run", "suite", "check", "claims") or any("=" not in item for item in extra)
    ):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    if getattr(args, "plugin", None) and args.command != "list":  # travels with every run's config
        args.overrides = [*args.overrides, "plugins=[" + ",".join(repr(p) for p in args.plugin) + "]"]
    if args.command == "claims" and "=" in args.claims:  # no file named: the item is an override
        args.overrides, args.claims = [args.claims, *args.overrides], "seeds"
    if getattr(args, "ray", None) and "=" in args.ray:  # `--ray key=value`: the item is an override
        args.overrides, args.ray = [args.ray, *args.overrides], "local"
    start = time.perf_counter()
    try:
        status = args.func(args)
        sys.stdout.flush()  # inside the try: a reader that already left is met here, not at exit
        return status
    except BrokenPipeError:  # the same for what is printed without rich (_ResultsConsole)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ConfigError as exc:
        console.print(f"[bold red]config error[/] ({time.perf_counter() - start:.2f} s): {escape(str(exc))}")
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return 130
    except Exception as exc:
        if not disk_full(exc):
            raise
        console.print(
            f"[bold red]no space left on the device[/] ({escape(' '.join(str(exc).split())[:160])}): "
            "the run stopped; its last checkpoint is kept, so once there is room the same command "
            "resumes it"
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
