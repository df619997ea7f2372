"""The embedded default must stay learnable: GRPO on the default config and budget raises eval
pass@1 by at least 0.10 over the warm start, averaged over 2 seeds (issue 2's bar).

Measured 2026-11-25 on the CPU machine: +0.152 (seed 0) and +0.130 (seed 1). This is the
learning-regression gate until `advbench check` (issue 5) judges learning with statistics.
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
        gains.append(summary.peak_pass_at_1 - summary.initial_pass_at_1)
    assert np.mean(gains) >= 0.10, gains
