"""Plots that read MLflow only: an estimator's trajectory on the sign x difficulty plane."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.metrics import smooth


def _history(client: Any, run_id: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    points = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
    return np.array([p[0] for p in points]), np.array([p[1] for p in points])


def resolve_runs(client: Any, experiment_id: str, ref: str) -> list[Any]:
    """The training runs that ``ref`` names: a run id or run name, or a parent whose children are runs."""
    try:
        runs = [client.get_run(ref)]
    except Exception:
        runs = client.search_runs([experiment_id], filter_string=f"attributes.run_name = '{ref}'")
    if not runs:
        raise ValueError(f"no MLflow run with id or name '{ref}'")
    run = runs[0]
    if run.data.tags.get("advbench.kind") == "invocation":
        children = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{run.info.run_id}'",
            order_by=["attributes.start_time ASC"],
        )
        return children
    return [run]


def plot_axes(client: Any, runs: list[Any], out: Path, window: int = 5) -> Path:
    """Trajectories (moving average over ``window`` steps) of sign balance against mean difficulty."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run in enumerate(runs):
        steps, balance = _history(client, run.info.run_id, "axes/sign_balance")
        _, difficulty = _history(client, run.info.run_id, "axes/mean_difficulty")
        if len(steps) == 0:
            continue
        w = min(window, len(steps) if len(steps) % 2 else len(steps) - 1) or 1
        x, y = smooth(balance, w), smooth(difficulty, w)
        colour = colours[i % len(colours)]
        ax.plot(x, y, "-", color=colour, alpha=0.8, label=run.info.run_name)
        ax.scatter(x[0], y[0], marker="o", color=colour, s=30)
        ax.scatter(x[-1], y[-1], marker="s", color=colour, s=40)
    ax.axvline(0.0, color="grey", lw=0.8, ls="--")
    ax.set_xlim(-1.05, 1.05)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("sign balance (M+ - M-) / (M+ + M-)   <- negative mass | positive mass ->")
    ax.set_ylabel("mean difficulty of the gradient mass (1 - pass rate)")
    ax.set_title("Gradient mass on the sign x difficulty plane (o start, ■ end)")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
