"""A flat null on the real model: runs that learn nothing, with real eval noise.

A trained null run either moves the policy (advantages shuffled within groups: it diffuses and
pass@1 falls) or scores the same samples at every eval (lr 0 with one eval stream: no noise at
all). Here the warm-started tiny model is not trained and each of a run's evals draws its own
sampling stream (seed = run x 1000 + eval) on the same eval prompts: the curve is flat in
expectation and noisy as a real eval is. Each run goes through the time-to-peak protocol
(``metrics.time_to_peak``, the leaderboard's settings); the share given a peak step (a gain
detected) and the share flagged "still rising" must stay at or below the level (5%), and the
mean cross-fitted gain within noise of zero.

    python benchmarks/flat_null.py --runs 60 --evals 7
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from advbench.harness import rollout, stats, tasks, warmstart
from advbench.harness.config import load
from advbench.harness.evaluation import evaluate
from advbench.harness.metrics import time_to_peak


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--evals", type=int, default=7, help="evals per run (the smoke budget's 7)")
    parser.add_argument("overrides", nargs="*", help="advbench config overrides (task, model, eval)")
    args = parser.parse_args()
    (cfg,) = load(["eval.greedy=false", *args.overrides])
    task = tasks.build(cfg.task, cfg.cache_dir)
    policy = warmstart.load_policy(cfg.model, task, cfg.cache_dir)
    engine = rollout.build(cfg.rollout, policy)
    prompts = task.prompts("eval")
    started = time.perf_counter()
    outcomes = []
    for run in range(args.runs):
        counts = [
            evaluate(
                engine, task, prompts, cfg.eval, cfg.rollout.max_new_tokens, e, seed=run * 1000 + e
            ).correct
            for e in range(args.evals)
        ]
        outcomes.append(
            time_to_peak(
                counts,
                cfg.eval.n,
                window=cfg.eval.smoothing_window,
                delta_abs=cfg.eval.peak_delta_abs,
                z=cfg.eval.peak_z,
                level=stats.LEVEL,
            )
        )
    gains = np.array([o.gain for o in outcomes])
    detected = sum(o.detected for o in outcomes)
    rising = sum(o.still_rising for o in outcomes)
    starts = np.array([o.start for o in outcomes])
    print(
        f"flat null: {args.runs} runs x {args.evals} evals of {len(prompts)} prompts x {cfg.eval.n} samples"
    )
    print(f"  task {task.name}, untrained warm start, pass@1 at the first eval {starts.mean():.3f}")
    print(f"  gain detected (a step timed): {detected}/{args.runs} ({detected / args.runs:.1%})")
    print(f"  still rising: {rising}/{args.runs} ({rising / args.runs:.1%})")
    se = gains.std(ddof=1) / np.sqrt(len(gains))
    print(f"  mean cross-fitted gain: {gains.mean():+.4f} +- {se:.4f} (SE)")
    print(f"  {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
