"""Every registered estimator on one batch of P=4096 prompts x G=16 completions (T=32 tokens), CPU.

Run:  pytest tests/benchmarks/test_estimators.py --benchmark-enable --benchmark-json=est.json
The table and what it says are in docs/results/performance.md (target: well under 1 ms per 1000 groups).
"""

import pytest
import torch

from advbench import estimators
from advbench.estimators import AdvantageBatch, TrainingSignals

P, G, T = 4096, 16, 32


@pytest.fixture(scope="module")
def batch():
    generator = torch.Generator().manual_seed(0)
    rewards = (torch.rand(P, G, generator=generator) < 0.4).float()
    lengths = torch.randint(1, T + 1, (P, G), generator=generator)
    mask = torch.arange(T).expand(P, G, T) < lengths.unsqueeze(-1)
    return AdvantageBatch(
        rewards,
        lengths=lengths,
        response_mask=mask,
        logprobs=-torch.rand(P, G, T, generator=generator) * mask,
        greedy_rewards=(torch.rand(P, generator=generator) < 0.4).float(),
    )


@pytest.mark.benchmark(group="estimators-4096x16")
@pytest.mark.parametrize("name", estimators.names())
def test_estimator(benchmark, batch, name):
    est = estimators.get(name)
    signals = TrainingSignals(step=5, total_steps=100, entropy=0.8, initial_entropy=1.0)
    out = benchmark(est, batch, signals)
    assert torch.isfinite(out).all() and out.shape[:2] == (P, G)
