"""Where a suite's time went, run by run, read back from MLflow: step phases, evals, memory.

    python benchmarks/suite_times.py TRACKING_URI EXPERIMENT [OUT.json]

For each training run of the experiment: steps logged, the median seconds per step and the mean
of each phase (rollout, scoring, estimator, update, logging), the run's wall time and what the
steps do not account for (evaluations, start-up, checkpoints), peak memory, and pass@1 at the
start, peak and end. Prints a Markdown table; writes the numbers as JSON when OUT is given. It
sizes suites for a GPU lease (benchmarks/gpu_session.sh) and reads any suite's runs.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

PHASES = ("rollout", "scoring", "estimator", "update", "logging")


def run_times(client, run) -> dict:
    metrics = run.data.metrics
    steps = client.get_metric_history(run.info.run_id, "time/step")
    row = {
        "run": run.info.run_name,
        "status": run.info.status,
        "steps": len(steps),
        "step_s_median": statistics.median(m.value for m in steps) if steps else None,
        "wall_s": ((run.info.end_time or run.info.start_time) - run.info.start_time) / 1000,
        "peak_memory_gib": metrics.get("summary/peak_memory_gib", metrics.get("system/peak_memory_gib")),
        "pass_at_1": {key: metrics.get(f"summary/{key}_pass_at_1") for key in ("initial", "peak", "final")},
    }
    for phase in PHASES:
        history = client.get_metric_history(run.info.run_id, f"time/{phase}")
        row[f"{phase}_s_mean"] = statistics.fmean(m.value for m in history) if history else None
    row["outside_steps_s"] = row["wall_s"] - sum(m.value for m in steps)
    return row


def main(argv: list[str]) -> list[dict]:
    import mlflow

    uri, experiment = argv[0], argv[1]
    mlflow.set_tracking_uri(uri)
    client = mlflow.tracking.MlflowClient()
    runs = mlflow.search_runs(
        experiment_names=[experiment], output_format="list", filter_string="tags.`advbench.kind` = 'run'"
    )
    rows = sorted((run_times(client, run) for run in runs), key=lambda r: r["run"])

    def cell(value, spec=".3f"):
        return "n/a" if value is None else format(value, spec)

    header = ["run", "status", "steps", "step s (median)", "rollout / scoring / update s", "wall s"]
    header += ["outside steps s", "peak GiB", "pass@1 start / peak / final"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for r in rows:
        phases = " / ".join(cell(r[f"{p}_s_mean"]) for p in ("rollout", "scoring", "update"))
        passes = " / ".join(cell(v) for v in r["pass_at_1"].values())
        print(
            f"| {r['run']} | {r['status']} | {r['steps']} | {cell(r['step_s_median'])} | {phases} "
            f"| {r['wall_s']:.0f} | {r['outside_steps_s']:.0f} | {cell(r['peak_memory_gib'], '.2f')} "
            f"| {passes} |"
        )
    if len(argv) > 2:
        Path(argv[2]).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
