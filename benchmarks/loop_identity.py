"""Behaviour kept across a refactor: every non-machine metric of four short runs, step by step,
dumped as JSON; run it on the commit before and after a change and compare the files.

    python benchmarks/loop_identity.py before.json   # on the old commit
    python benchmarks/loop_identity.py after.json    # on the new one; then: cmp before.json after.json

The runs (tiny model, 4 steps, geometry every 2 steps): the default; 2 epochs x 2 minibatches with
micro-batches, TIS and a KL to the reference; ReMax (greedy samples); REINFORCE++ with its
reference KL. Refactors of the loop are checked with it (docs/results/performance.md).
"""

import json
import sys
import tempfile
from pathlib import Path

from advbench.harness.config import load
from advbench.harness.loop import machine_dependent, train

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import FAST  # noqa: E402

CASES = {
    "default": [],
    "multi": [
        "trainer.update_epochs=2",
        "trainer.minibatches=2",
        "trainer.micro_batch_tokens=200",
        "loss.tis_cap=2.0",
        "loss.kl_coef=0.01",
    ],
    "remax": ["estimator=remax"],
    "reinforce_pp": ["estimator=reinforce_pp", "estimator_params.reinforce_pp.kl_coef=0.01"],
}
SHORT = [*FAST, "geometry.every=2"]  # the tests' small run, with the gradient geometry on


def metrics_by_step(overrides: list[str]) -> dict[int, dict[str, float]]:
    (cfg,) = load(overrides)
    seen: dict[int, dict[str, float]] = {}

    def record(step: int, metrics: dict[str, float]) -> None:
        seen[step] = {k: v for k, v in metrics.items() if not machine_dependent(k)}

    train(cfg, on_step=record)
    return seen


def main(out: str) -> None:
    cache = f"cache_dir={tempfile.gettempdir()}/advbench-loop-identity"
    runs = {name: metrics_by_step([*SHORT, cache, *extra]) for name, extra in CASES.items()}
    with open(out, "w") as handle:
        json.dump(runs, handle, sort_keys=True)
    print(f"wrote {out}: {len(runs)} runs")


if __name__ == "__main__":
    main(sys.argv[1])
