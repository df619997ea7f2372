"""Plots that read MLflow (or a leaderboard's Board built from it): trajectories and curves.

- ``plot_axes_groups``: runs on the sign x difficulty plane, averaged over the runs of a group;
- ``plot_pass_at_1``: eval pass@1 during training per estimator, mean over seeds with a min-max band;
- ``plot_pass_at_k``: pass@k against k after training;
- ``plot_accuracy_diversity``: final pass@1 against final pass@k_max, seeds and means;
- ``plot_claim``: the runs' values of the metrics a claim's predicates name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from advbench.harness.metrics import smooth
from advbench.harness.tracking import metric_history

if TYPE_CHECKING:
    from advbench.harness.claims import ClaimResult
    from advbench.harness.leaderboard import Board


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, out: Path) -> Path:
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    _pyplot().close(fig)
    return out


def _label_axes(ax: Any, xlabel: str, ylabel: str, title: str, legend_loc: str) -> None:
    """The leaderboard plots' common finish: axis labels, title, a light grid, a small legend."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc=legend_loc)


def _colours(labels: Sequence[str]) -> dict[str, str]:
    cycle = _pyplot().rcParams["axes.prop_cycle"].by_key()["color"]
    return {label: cycle[i % len(cycle)] for i, label in enumerate(labels)}


def resolve_runs(client: Any, experiment_id: str, ref: str) -> list[Any]:
    """The training runs that ``ref`` names: a run id or run name, or a parent whose children are runs."""
    try:
        runs = [client.get_run(ref)]
    except Exception:
        runs = client.search_runs([experiment_id], filter_string=f"attributes.run_name = '{ref}'")
    if not runs:
        raise ValueError(f"no MLflow run with id or name '{ref}'")
    run = runs[0]
    if run.data.tags.get("advbench.kind") in ("invocation", "suite"):
        children = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{run.info.run_id}'",
            order_by=["attributes.start_time ASC"],
        )
        return children
    return [run]


def plot_axes(client: Any, runs: list[Any], out: Path, window: int = 5) -> Path:
    """One trajectory per MLflow run on the sign x difficulty plane."""
    groups = {}
    for run in runs:
        _, balance = metric_history(client, run.info.run_id, "axes/sign_balance")
        _, difficulty = metric_history(client, run.info.run_id, "axes/mean_difficulty")
        groups[run.info.run_name] = [(balance, difficulty)]
    return plot_axes_groups(groups, out, window)


def plot_axes_groups(groups: dict[str, list[Any]], out: Path, window: int = 5) -> Path:
    """Trajectories (moving average over ``window`` steps) of sign balance against mean difficulty.

    ``groups`` maps a label to its runs: (sign_balance, mean_difficulty) pairs of per-step arrays, or
    objects with those two attributes; a group's trajectory is the mean over its runs.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5.5))
    colours = _colours(list(groups))
    # Estimators of one geometry (GRPO, Dr. GRPO, RLOO) draw the same path: each gets a line style
    # and its name at its end point, so a trajectory hidden under another is still found.
    styles = ["-", "--", ":", "-."]
    for i, (label, runs) in enumerate(groups.items()):
        pairs = [(r.sign_balance, r.mean_difficulty) if hasattr(r, "sign_balance") else r for r in runs]
        pairs = [(b, d) for b, d in pairs if len(b)]
        if not pairs:
            continue
        n = min(len(b) for b, _ in pairs)
        balance = np.mean([b[:n] for b, _ in pairs], axis=0)
        difficulty = np.mean([d[:n] for _, d in pairs], axis=0)
        w = min(window, n if n % 2 else n - 1) or 1
        x, y = smooth(balance, w), smooth(difficulty, w)
        ax.plot(x, y, styles[i % len(styles)], color=colours[label], alpha=0.8, lw=1.6, label=label)
        ax.scatter(x[0], y[0], marker="o", color=colours[label], s=30)
        ax.scatter(x[-1], y[-1], marker="s", color=colours[label], s=40)
        ax.annotate(
            label, (x[-1], y[-1]), xytext=(6, 8 * (i % 3) - 8), textcoords="offset points",
            fontsize=7, color=colours[label],
        )  # fmt: skip
    ax.axvline(0.0, color="grey", lw=0.8, ls="--")
    ax.set_xlim(-1.05, 1.05)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("sign balance (M+ - M-) / (M+ + M-)   <- negative mass | positive mass ->")
    ax.set_ylabel("mean difficulty of the gradient mass (1 - pass rate)")
    ax.set_title("Gradient mass on the sign x difficulty plane (o start, ■ end)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    else:  # e.g. verl's runs, which log no advantages' axes
        ax.text(0.0, 0.5, "no run here logged the two axes", ha="center", va="center", color="grey")
    return _save(fig, out)


def plot_pass_at_1(board: Board, out: Path, window: int = 3) -> Path:
    """Smoothed eval pass@1 per estimator and stratum: the mean over seeds, a band from min to max."""
    from advbench.harness.leaderboard import smoothed_mean_curve

    plt = _pyplot()
    strata = board.strata
    fig, axes = plt.subplots(1, len(strata), figsize=(6.5 * len(strata), 4.5), squeeze=False)
    colours = _colours(board.labels)
    for ax, stratum in zip(axes[0], strata, strict=True):
        for label in board.labels:
            runs = board.of(label, stratum)
            if not runs:
                continue
            steps, mean, low, high = smoothed_mean_curve(runs, window)
            ax.plot(steps, mean, color=colours[label], label=f"{label} ({len(runs)} seeds)")
            ax.fill_between(steps, low, high, color=colours[label], alpha=0.15, lw=0)
            # every eval, unsmoothed: the smoothed curve's points are window centres, so without
            # these the first and last evals (the start and the budget's end) would not show
            n = min(len(r.pass_at_1) for r in runs)
            raw = np.mean([r.pass_at_1[:n] for r in runs], axis=0)
            ax.plot(runs[0].eval_steps[:n], raw, ".", color=colours[label], alpha=0.5, ms=4)
        last = max((float(r.eval_steps[-1]) for r in board.runs if len(r.eval_steps)), default=1.0)
        ax.set_xlim(0, last)
        _label_axes(
            ax, "training step", f"eval pass@1 (smoothed over {window} evals)",
            f"{stratum[0]} / {stratum[1]}", "lower right",
        )  # fmt: skip
    fig.suptitle(
        "Eval pass@1 during training\nline: smoothed mean over seeds, band: min..max, dots: every eval",
        fontsize=10,
    )
    return _save(fig, out)


def plot_pass_at_k(board: Board, out: Path) -> Path:
    """pass@k after training against k (log scale), mean over every run of an estimator, min-max band."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    colours = _colours(board.labels)
    for label in board.labels:
        runs = board.of(label)
        if not runs:
            continue
        ks = sorted(set.intersection(*(set(r.pass_at_k()) for r in runs)))
        values = np.array([[r.pass_at_k()[k] for k in ks] for r in runs])
        ax.plot(ks, values.mean(0), "o-", color=colours[label], label=label, ms=4)
        ax.fill_between(ks, values.min(0), values.max(0), color=colours[label], alpha=0.15, lw=0)
    ax.set_xscale("log", base=2)
    _label_axes(
        ax, "k", "pass@k (unbiased, final eval)",
        "pass@k after training (mean over runs, band = min..max)", "lower right",
    )  # fmt: skip
    return _save(fig, out)


def plot_accuracy_diversity(board: Board, out: Path) -> Path:
    """Final pass@1 (accuracy) against final pass@k_max (coverage): seeds as dots, means as squares."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5))
    colours = _colours(board.labels)
    for label in board.labels:
        runs = board.of(label)
        if not runs:
            continue
        x = np.array([r.pass_at_k()[1] for r in runs])
        y = np.array([r.pass_at_k()[r.k_max] for r in runs])
        ax.scatter(x, y, color=colours[label], alpha=0.35, s=18)
        ax.scatter(x.mean(), y.mean(), color=colours[label], marker="s", s=60, label=label, edgecolor="black")
    k_max = max(r.k_max for r in board.runs)
    _label_axes(
        ax, "final pass@1 (accuracy)", f"final pass@{k_max} (diversity / coverage)",
        "Accuracy-diversity plane (dots: seeds, squares: means)", "best",
    )  # fmt: skip
    return _save(fig, out)


def plot_gpu_benchmark(results: list[dict], engines: Sequence[str], out: Path) -> Path:
    """benchmarks/gpu.py's results: rollout tokens/s per engine and scale (log scale), and the
    training step's MFU per scale (its tokens/s where the device's peak is unknown)."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    scales = [row["scale"] for row in results]
    colours = _colours(list(engines))
    width = 0.8 / max(1, len(engines))
    for i, engine in enumerate(engines):
        speeds = [row[engine].get("tokens_per_s", 0.0) for row in results]
        positions = np.arange(len(scales)) + (i - (len(engines) - 1) / 2) * width
        left.bar(positions, speeds, width, label=engine, color=colours[engine])
    left.set_yscale("log")
    left.set_xticks(np.arange(len(scales)), scales)
    left.set_ylabel("generated tokens / s")
    left.set_title("rollout throughput (missing bar: engine unavailable)")
    left.legend(fontsize=8)
    with_mfu = all("mfu" in row["train"] for row in results)
    values = [100 * row["train"]["mfu"] if with_mfu else row["train"]["tokens_per_s"] for row in results]
    right.bar(scales, values, color="tab:gray")
    if not with_mfu:
        right.set_yscale("log")
    right.set_ylabel("MFU (%)" if with_mfu else "trained tokens / s")
    right.set_title("training step" + ("" if with_mfu else " (no peak FLOP/s known: no MFU)"))
    return _save(fig, out)


def plot_claim(result: ClaimResult, out: Path) -> Path:
    """A claim's metrics, one panel each: every run's value (a dot per seed, a marker per task) for
    each estimator the claim names, the mean of each as a bar; a range or a number it is compared
    with as a dashed line."""
    plt = _pyplot()
    metrics = list(result.values)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.8), squeeze=False)
    markers = ["o", "s", "^", "D", "v"]
    for ax, metric in zip(axes[0], metrics, strict=True):
        per_label = result.values[metric]
        strata = sorted({s for values in per_label.values() for s, _, _ in values})
        colours = _colours(strata)
        for x, values in enumerate(per_label.values()):
            for i, stratum in enumerate(strata):
                ys = [v for s, _, v in values if s == stratum]
                offset = (i - (len(strata) - 1) / 2) * 0.18
                ax.scatter(
                    np.full(len(ys), x + offset),
                    ys,
                    color=colours[stratum],
                    marker=markers[i % len(markers)],
                    s=22,
                    label=stratum.split("/")[0] if x == 0 else None,
                )
            ax.hlines(np.mean([v for _, _, v in values]), x - 0.3, x + 0.3, color="#222", lw=2)
        for predicate in result.claim.predicates:
            if predicate.metric != metric:
                continue
            for level in predicate.bounds or ([predicate.value] if predicate.value is not None else []):
                ax.axhline(level, color="#888", ls="--", lw=1)
        ax.set_xticks(range(len(per_label)), list(per_label), rotation=20)
        _label_axes(ax, "", metric, metric, "best")
    fig.suptitle(f"{result.claim.key}: {result.verdict}  (dots: runs; bars: means)", fontsize=10)
    return _save(fig, out)
