"""The embedded default must stay learnable: GRPO on the default config and budget raises eval
pass@1 over the warm start by a gain the time-to-peak protocol detects (beyond the eval's noise),
in both of 2 seeds, and by at least 0.06 on average.

Measured on the CPU machine: +0.152 and +0.130 on 2026-11-25 (64 eval prompts, a warm start at
0.30); +0.084 and +0.080 on 2026-11-29 with the 256-prompt eval set, whose larger
held-out share of the small problem space leaves a weaker warm start (0.175) and a slower climb
(docs/results/statistics.md, "Verdicts you can trust"). A GRPO with its sign flipped loses pass@1.
"""

import numpy as np
import pytest

from advbench.harness.config import load
from advbench.harness.loop import train

pytestmark = pytest.mark.slow


def test_grpo_raises_eval_pass_at_1_on_the_default_task(cache_dir):
    gains = []
    for cfg in load(["estimator=grpo", "seed=[0,1]", f"cache_dir={cache_dir}"]):
        summary = train(cfg).summary
        assert 0.15 <= summary.initial_pass_at_1 <= 0.5  # the warm start's band
        assert summary.gain_detected, summary
        gains.append(summary.peak_pass_at_1 - summary.initial_pass_at_1)
    assert np.mean(gains) >= 0.06, gains
