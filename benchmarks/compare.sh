#!/usr/bin/env bash
# Timing regression gate for the estimators and the loop's overhead (pytest-benchmark groups
# estimators-4096x16, step and config-error).
#
#   benchmarks/compare.sh save     # on the reference commit: store the timings under .benchmarks/
#   benchmarks/compare.sh          # on a change: run again, compare, fail when one is 25% slower
#
# The gate compares the minimum of each benchmark: on 2-core machines a mean:5% compare fails on
# identical re-runs, min:25% holds. Run both on the same machine. Learning regressions
# are advbench check's job, not this one's.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "save" ]]; then
    python -m pytest tests/benchmarks --benchmark-enable --benchmark-autosave -q
else
    python -m pytest tests/benchmarks --benchmark-enable --benchmark-compare --benchmark-compare-fail=min:25% -q
fi
