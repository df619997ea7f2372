"""The ``advbench`` command line.

    advbench run [-c FILE] [key=value ...]   train and evaluate; lists sweep (estimator=[grpo,rloo])
    advbench list                            registered estimators, losses, tasks and models
    advbench axes RUN                        plot a run's (or a parent's runs') sign x difficulty path

The config is resolved and validated before torch, transformers or MLflow are imported, so a bad
config fails fast with the key and the valid choices. Re-running a finished run (same resolved
config, same tracking store) does not train again: its stored summary is reported.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime

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

from harness.config import ConfigError, RunConfig, group_choices, load

console = Console(stderr=True, soft_wrap=True)  # progress and messages


def _results_console() -> Console:
    """stdout for results; wide enough for the tables when piped to a file or CI log."""
    out = Console()
    return out if out.is_terminal else Console(width=160)


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging

    import mlflow  # noqa: F401  configures its loggers on import; quiet them after
    import transformers

    for name in ("mlflow", "alembic"):  # schema migrations of a new store are not news
        logging.getLogger(name).setLevel(logging.WARNING)

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _summary_row(cfg: RunConfig, summary: dict[str, float], status: str) -> list[str]:
    final_k = max(int(k.rsplit("_", 1)[1]) for k in summary if k.startswith("summary/final_pass_at_"))
    rising = " (rising)" if summary.get("summary/still_rising") else ""
    return [
        cfg.estimator,
        cfg.loss["name"],
        cfg.task.name,
        str(cfg.seed),
        f"{summary['summary/initial_pass_at_1']:.3f}",
        f"{summary['summary/peak_pass_at_1']:.3f}",
        f"{int(summary['summary/time_to_peak_step'])}{rising}",
        f"{summary[f'summary/final_pass_at_{final_k}']:.3f}",
        f"{summary['summary/final_entropy']:.3f}",
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


def cmd_run(args: argparse.Namespace) -> int:
    runs = load(args.overrides, args.config)  # validated before anything heavy is imported
    _quiet_libraries()
    from harness import checkpoint
    from harness.loop import train
    from harness.tracking import Tracker

    tracker = Tracker(runs[0].tracking)
    name = args.name or f"run-{datetime.now():%Y%m%d-%H%M%S}"
    parent = tracker.start_parent(
        name, tags={"advbench.command": " ".join(["advbench", "run", *sys.argv[2:]])}
    )
    console.print(
        f"[bold]advbench[/] {len(runs)} run(s) under MLflow parent run '{name}' ({runs[0].tracking.uri})"
    )
    rows: list[list[str]] = []
    status = "FINISHED"
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    )
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            for cfg in runs:
                done = tracker.find_finished(cfg)
                if done is not None:
                    summary = {k: v for k, v in done.data.metrics.items() if k.startswith("summary/")}
                    console.print(
                        f"{cfg.run_name}: finished before in MLflow run {done.info.run_id}; not run again"
                    )
                    rows.append(_summary_row(cfg, summary, "cached"))
                    continue
                bar = progress.add_task(cfg.run_name, total=cfg.trainer.steps, info="")

                def on_warmstart(step: int, loss: float, _bar=bar, _cfg=cfg) -> None:
                    total = _cfg.model.warmstart.steps
                    progress.update(_bar, info=f"warm start {step}/{total} loss {loss:.3f}")

                last_eval = {"text": ""}  # the latest eval's pass@1, shown until the next eval

                def on_step(step: int, metrics: dict[str, float], _bar=bar, _last_eval=last_eval) -> None:
                    if "eval/pass_at_1" in metrics:
                        _last_eval["text"] = f" | eval pass@1 {metrics['eval/pass_at_1']:.3f}"
                    info = f"reward {metrics['train/reward_mean']:.3f} entropy {metrics['train/entropy']:.3f}"
                    progress.update(_bar, completed=step, info=info + _last_eval["text"])

                state = checkpoint.load(cfg)
                child = tracker.resume_child(state["mlflow_run_id"], parent) if state else None
                if child is None:  # nothing to resume, or its MLflow run is gone: start afresh
                    state = None
                    checkpoint.remove(cfg)
                    child = tracker.start_child(parent, cfg)
                else:
                    console.print(
                        f"{cfg.run_name}: resuming MLflow run {child.run_id} after step {state['step']}"
                    )
                try:
                    result = train(cfg, child, on_step=on_step, on_warmstart=on_warmstart, resume=state)
                except BaseException:
                    child.finish(
                        "FAILED" if not isinstance(sys.exc_info()[1], KeyboardInterrupt) else "KILLED"
                    )
                    raise
                child.finish()
                rows.append(_summary_row(cfg, result.summary, ""))
    except BaseException:
        status = "FAILED"
        raise
    finally:
        parent.finish(status)
        if rows:
            _results_console().print(_summary_table(rows, runs[0].eval.n))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    import estimators
    from harness import losses

    table = Table(title="advbench registry", show_lines=False)
    table.add_column("kind")
    table.add_column("name")
    table.add_column("description")
    table.add_column("source")
    for name in estimators.names():
        est = estimators.get(name)
        table.add_row("estimator", name, escape(est.description), escape(est.source))
    for name in losses.names():
        table.add_row("loss", name, escape(losses.get(name).description), "")
    from omegaconf import OmegaConf

    from harness.config import CONFIG_DIR

    for group in ("task", "model", "rollout"):
        for name in group_choices(group):
            text = (CONFIG_DIR / group / f"{name}.yaml").read_text()
            first_comment = next(
                (line.lstrip("# ") for line in text.splitlines() if line.startswith("#")), ""
            )
            node = OmegaConf.load(CONFIG_DIR / group / f"{name}.yaml")
            detail = node.get("dataset", "") if group == "task" else ""
            table.add_row(group, name, escape(first_comment), escape(str(detail)))
    _results_console().print(table)
    return 0


def cmd_axes(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mlflow.tracking import MlflowClient

    from harness.plots import plot_axes, resolve_runs

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
    run.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. estimator=rloo trainer.steps=200"
    )
    run.set_defaults(func=cmd_run)
    axes = sub.add_parser("axes", help="plot runs' trajectories on the sign x difficulty plane")
    axes.add_argument("run", help="an MLflow run id or name; a parent run plots all its runs")
    axes.add_argument("--out", help="PNG path (default axes-RUN.png)")
    axes.add_argument("--tracking-uri", default="sqlite:///advbench.db")
    axes.add_argument("--experiment", default="advbench")
    axes.set_defaults(func=cmd_axes)
    lst = sub.add_parser("list", help="list registered estimators, losses, tasks and models")
    lst.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may come before or after options (`run estimator=x --name y seed=1`): argparse
    # stops a positional list at the first option, so the key=value items after it arrive as extras.
    args, extra = parser.parse_known_args(argv)
    if extra and (args.command != "run" or any("=" not in item for item in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    start = time.perf_counter()
    try:
        return args.func(args)
    except ConfigError as exc:
        console.print(f"[bold red]config error[/] ({time.perf_counter() - start:.2f} s): {escape(str(exc))}")
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
