"""Runs per hour: packs of N runs (one batched model, harness/pack.py) against one run at a time.

    python benchmarks/packs.py --sizes 4,8,16 --solo 8 --results docs/results/performance.md
    python benchmarks/packs.py --sizes 1,4,16,32 --solo 1 model=50m trainer.steps=20   # a GPU

Every unit is a real run (or pack) of the config the overrides make (default: the embedded
default, GRPO, 150 steps), trained through the same runner a suite uses, into a scratch MLflow
store: the wall time includes warm start loading, evals and logging. Solo: seeds 0..S-1 one after
the other; pack N: GRPO seeds 0..N-1 in one pack. Runs per hour = runs x 3600 / wall seconds.

It also compares the pack of 8 (when measured) with the 8 solo runs of the same seeds: peak pass@1
and final entropy, permutation test. The two sample from different streams (a pack draws each
replica's tokens with its own generator), so the runs differ as new seeds would: this is a check
for gross bugs (a replica that learns nothing, or from another's rows), not a proof of equality.
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

import numpy as np
import torch

from advbench.harness import stats
from advbench.harness.config import load
from advbench.harness.report import cpu_name
from advbench.harness.runner import quiet_libraries, run_cell, run_pack
from advbench.harness.suites import as_packed
from advbench.harness.tracking import Tracker


def configs(overrides: list[str], seeds: range, store: Path, packed: bool):
    cfgs = [
        load([*overrides, "estimator=grpo", f"seed={seed}", f"tracking.uri=sqlite:///{store}"])[0]
        for seed in seeds
    ]
    return [as_packed(cfg) for cfg in cfgs] if packed else cfgs


def measure(overrides: list[str], solo: int, sizes: list[int], cache: Path, json_path: Path | None) -> dict:
    """Each unit's numbers, written to ``json_path`` as they come (a run cut short keeps them)."""
    out: dict = {"solo": {}, "packs": {}}

    def save() -> None:
        if json_path:
            json_path.write_text(json.dumps(out, indent=1))

    with tempfile.TemporaryDirectory() as tmp:
        common = [*overrides, f"cache_dir={cache}", f"tracking.artifact_root={tmp}/artifacts"]

        def store(name: str) -> tuple[Path, Tracker, object]:
            """A store of the unit's own: no unit finds another's finished runs (a pack of 8 after a
            pack of 4 would otherwise report seeds 0-3 as finished and train 4 runs, not 8)."""
            path = Path(tmp) / f"{name}.db"
            cfg = configs(common, range(1), path, packed=False)[0]
            tracker = Tracker(cfg.tracking)
            return path, tracker, tracker.start_parent("pack-benchmark")

        # the warm start is built (or found) once, outside every timing
        first = configs(common, range(1), Path(tmp) / "warm.db", packed=False)[0]
        from advbench.harness import tasks, warmstart

        policy = warmstart.load_policy(first.model, tasks.build(first.task, first.cache_dir), str(cache))
        out["params"] = sum(p.numel() for p in policy.model.parameters())
        del policy
        # untimed: a short solo run and a short pack pay the one-time costs (imports, data sets)
        path, tracker, parent = store("warm")
        warm = [*common, "trainer.steps=1", "eval.every=1"]
        run_cell(configs(warm, range(1), path, packed=False)[0], tracker, parent, say=lambda _: None)
        run_pack(configs(warm, range(2), path, packed=True), tracker, parent, say=lambda _: None)
        if solo:
            path, tracker, parent = store("solo")
            outcomes, started = [], time.perf_counter()
            for cfg in configs(common, range(solo), path, packed=False):
                outcome = run_cell(cfg, tracker, parent, say=lambda _: None)
                assert outcome.status == "ran", outcome.status  # trained here, not found
                outcomes.append(outcome)
            seconds = time.perf_counter() - started
            out["solo"] = _row(solo, seconds, outcomes, tracker.client)
            print(f"solo x{solo}: {seconds:.0f} s", file=sys.stderr)
            save()
        for size in sizes:
            path, tracker, parent = store(f"pack-{size}")
            started = time.perf_counter()
            outcomes, failures = run_pack(
                configs(common, range(size), path, packed=True), tracker, parent, say=lambda _: None
            )
            seconds = time.perf_counter() - started
            if failures:
                raise SystemExit(f"pack of {size}: {failures[0][0].run_name} failed: {failures[0][1]}")
            assert [o.status for o in outcomes] == ["ran"] * size  # every run trained in this pack
            out["packs"][size] = _row(size, seconds, outcomes, tracker.client)
            out["packs"][size].update(
                _throughput(tracker.client, [o.run_id for o in outcomes], out["params"])
            )
            print(f"pack of {size}: {seconds:.0f} s", file=sys.stderr)
            save()
    return out


def _throughput(client, run_ids: list[str], params: int) -> dict:
    """A pack's decode tokens per second (every replica's generated training tokens over the pack's
    rollout time) and its update's model FLOP/s, 6 x parameters per response token trained (a lower
    bound: the prompts' forward and backward are not counted)."""
    from advbench.harness.tracking import metric_history

    tokens = sum(float(metric_history(client, run_id, "train/generated_tokens")[1][-1]) for run_id in run_ids)
    rollout = float(metric_history(client, run_ids[0], "time/rollout")[1].sum())
    update = float(metric_history(client, run_ids[0], "time/update")[1].sum())
    memory = float(metric_history(client, run_ids[0], "system/peak_memory_gib")[1].max())
    return {
        "decode_tokens_per_s": tokens / rollout,
        "update_flops_per_s": 6 * params * tokens / update,
        "peak_memory_gib": memory,  # a GPU's allocated peak in the pack; a CPU's process resident peak
    }


def _row(runs: int, seconds: float, outcomes, client) -> dict:
    from advbench.harness.tracking import metric_history

    summaries = [o.summary for o in outcomes]
    return {
        "runs": runs,
        "seconds": seconds,
        "runs_per_hour": runs * 3600 / seconds,
        # each run's own training samples (its own stream): no shared eval stream in it
        "train_pass_rate": [
            float(metric_history(client, o.run_id, "train/pass_rate")[1][-TRAIN_TAIL:].mean())
            for o in outcomes
        ],
        "peak_pass_at_1": [s.peak_pass_at_1 for s in summaries],
        "gain": [s.gain for s in summaries],
        "final_entropy": [s.final_entropy for s in summaries],
    }


TRAIN_TAIL = 50  # steps: the training pass rate is averaged over each run's last 50


def equivalence(result: dict, size: int = 8) -> list[dict]:
    """Pack of ``size`` against the solo runs of the same seeds (unpaired: other streams)."""
    pack, solo = result["packs"].get(size), result["solo"]
    if not pack or not solo or solo["runs"] < size:
        return []
    rows = []
    # the training pass rate first: each run draws its own training samples, so 8 runs are 8
    # independent draws. Every eval of a kind shares one stream (a pack's is not a solo run's),
    # which shifts all of its runs' pass@1 readings together, by an amount that differs between the
    # start's weights and the peak's: the eval metrics (the gain too) are 1 draw of a stream each.
    for metric in ("train_pass_rate", "gain", "peak_pass_at_1", "final_entropy"):
        if metric not in pack:
            continue
        x, y = np.array(pack[metric]), np.array(solo[metric][:size])
        comparison = stats.compare([x], [y], np.random.default_rng(0))
        rows.append(
            {"metric": metric, "pack": float(x.mean()), "solo": float(y.mean()), "p": comparison.p_value}
        )
    return rows


def markdown(result: dict, command: str, machine: str) -> str:
    solo = result["solo"]
    lines = [
        "| runs at once | runs | wall time | runs per hour | vs one at a time | decode tokens/s "
        "| update MFU | peak memory |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    peak = _peak_flops()
    if solo:
        lines.append(f"| 1 (solo, one after the other) | {solo['runs']} | {solo['seconds']:.0f} s | "
                     f"{solo['runs_per_hour']:.0f} | 1.00x | | | |")  # fmt: skip
    for size, row in sorted(result["packs"].items(), key=lambda kv: int(kv[0])):
        ratio = f"{row['runs_per_hour'] / solo['runs_per_hour']:.2f}x" if solo else "n/a"
        wall, rate = f"{row['seconds']:.0f} s", f"{row['runs_per_hour']:.0f}"
        decode = f"{row['decode_tokens_per_s']:,.0f}" if "decode_tokens_per_s" in row else ""
        mfu = f"{row['update_flops_per_s'] / peak:.1%}" if peak and "update_flops_per_s" in row else "n/a"
        memory = f"{row['peak_memory_gib']:.1f} GiB" if "peak_memory_gib" in row else ""
        cells = [f"pack of {size}", str(row["runs"]), wall, rate, ratio, decode, mfu, memory]
        lines.append("| " + " | ".join(cells) + " |")
    rows = equivalence(result)
    if rows:
        lines += [
            "",
            "A check for gross bugs, not a proof of equality (the pack samples from other streams, so "
            "its runs differ from the solo ones as new seeds would): GRPO seeds 0-7 packed against the "
            "same seeds solo, permutation test. train_pass_rate: each run's training pass rate over "
            "its last 50 steps, drawn from its own sampling stream; the eval metrics share one eval "
            "stream per kind (packed or solo), so their p-values treat one stream's luck as 8 draws.",
            "",
            "| metric | pack of 8 (mean) | solo (mean) | p |",
            "|---|---:|---:|---:|",
            *(f"| {r['metric']} | {r['pack']:.4f} | {r['solo']:.4f} | {r['p']:.2f} |" for r in rows),
        ]
    lines += ["", f"Measured {datetime.date.today():%Y-%m-%d} on {machine}: `{command}`"]
    return "\n".join(lines) + "\n"


def _peak_flops() -> float | None:
    """The device's dense bf16 peak (benchmarks/gpu.py's table); None on a CPU."""
    if not torch.cuda.is_available():
        return None
    from gpu import peak_flops

    return peak_flops(torch.device("cuda"), None)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="4,8,16", help="pack sizes, comma-separated")
    parser.add_argument("--solo", type=int, default=8, help="solo runs one after the other (0: none)")
    parser.add_argument("--cache", type=Path, default=Path("~/.cache/advbench").expanduser())
    parser.add_argument("--json", type=Path, help="write the numbers here")
    parser.add_argument("--results", type=Path, help="print the table; the page to paste it into")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of every run (model=50m, ...)")
    args = parser.parse_args(argv)
    quiet_libraries()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    result = measure(args.overrides, args.solo, sizes, args.cache, args.json)
    command = shlex.join(["python", "benchmarks/packs.py", *(argv if argv is not None else sys.argv[1:])])
    device = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"{cpu_name()}, {torch.get_num_threads()} threads"
    )
    result.update(command=command, machine=device, date=f"{datetime.date.today():%Y-%m-%d}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(markdown(result, command, device))
    return result


if __name__ == "__main__":
    main()
