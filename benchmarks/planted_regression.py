"""Plant a regression and show that ``advbench check`` catches it: an estimator's advantages negated.

    python benchmarks/planted_regression.py smoke grpo --baseline suites/baselines/smoke.json \\
        tracking.uri=sqlite:////tmp/planted.db

Runs ``advbench check SUITE`` in this process with ESTIMATOR's sign flipped (use a tracking store of
its own: the flipped cells have the same config hashes as the real ones) and exits with its code,
1 when the check fails as it should.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from advbench import estimators
from advbench.estimators.registry import _REGISTRY
from advbench.harness.cli import main


def flip(name: str) -> None:
    real = estimators.get(name)

    def flipped(batch, signals, params):
        return -real.fn(batch, signals, params)

    _REGISTRY[name] = dataclasses.replace(real, fn=flipped)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite")
    parser.add_argument("estimator")
    parser.add_argument("--baseline", required=True)
    args, overrides = parser.parse_known_args()
    flip(args.estimator)
    sys.exit(main(["check", args.suite, "--baseline", args.baseline, *overrides]))
