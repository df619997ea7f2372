"""ReMax (Li et al. 2024, arXiv 2310.10505, Alg. 1): REINFORCE with the greedy completion as baseline.

    A_i = r_i - r_greedy

r_greedy the reward of the prompt's greedy (argmax) completion, which the loop generates for this
estimator (it registers needs=("greedy_rewards",)).
"""

from __future__ import annotations

import torch

from advbench.estimators.registry import AdvantageBatch, NoParams, TrainingSignals, register


@register("remax", source="arXiv 2310.10505 [peer]", needs=("greedy_rewards",))
def remax(batch: AdvantageBatch, signals: TrainingSignals | None, params: NoParams) -> torch.Tensor:
    """Greedy baseline: r_i minus the reward of the prompt's greedy completion."""
    if batch.greedy_rewards is None:
        raise ValueError(
            "remax needs AdvantageBatch.greedy_rewards (the reward of each prompt's greedy completion)"
        )
    return batch.rewards - batch.greedy_rewards.to(batch.rewards.dtype).unsqueeze(1)
