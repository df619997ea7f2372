"""Hypothesis strategies for reward batches, shared by the estimator tests.

A strategy returns (rewards [P, G], valid [P, G]); ``full_batch`` adds what token-level and
greedy-baseline estimators read (lengths, response mask, log-probs, greedy rewards), so every
registered estimator can be called on it.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from advbench.estimators import AdvantageBatch

T = 5  # response tokens in the generated batches


@st.composite
def group_batches(draw, min_group: int = 1, max_group: int = 9, binary: bool | None = None):
    """rewards [P, G] (binary or real) and a valid mask."""
    prompts = draw(st.integers(1, 6))
    group = draw(st.integers(min_group, max_group))
    is_binary = draw(st.booleans()) if binary is None else binary
    # Non-binary rewards on a grid of 1/8: verifier scores are discrete, and a grid keeps float32
    # arithmetic exact under integer shifts (arbitrary floats are covered by the finiteness test).
    values = st.sampled_from([0.0, 1.0]) if is_binary else st.integers(-40, 40).map(lambda v: v / 8)
    rewards = torch.tensor(
        draw(st.lists(st.lists(values, min_size=group, max_size=group), min_size=prompts, max_size=prompts)),
        dtype=torch.float32,
    )
    valid = torch.tensor(
        draw(
            st.lists(
                st.lists(st.booleans(), min_size=group, max_size=group), min_size=prompts, max_size=prompts
            )
        )
    )
    return rewards, valid


@st.composite
def degenerate_batches(draw):
    """The cases that break naive code: all equal, all zero, a group of one, nothing valid."""
    kind = draw(st.sampled_from(["equal", "zero", "single", "none_valid", "one_valid"]))
    prompts, group = draw(st.integers(1, 4)), draw(st.integers(1, 8))
    if kind == "single":
        group = 1
    value = draw(st.floats(-3, 3, allow_nan=False, width=32))
    rewards = torch.full((prompts, group), 0.0 if kind == "zero" else value)
    valid = torch.ones(prompts, group, dtype=torch.bool)
    if kind == "none_valid":
        valid[:] = False
    if kind == "one_valid":
        valid[:] = False
        valid[:, 0] = True
        rewards = torch.randn(
            prompts, group, generator=torch.Generator().manual_seed(draw(st.integers(0, 99)))
        )
    return rewards, valid


def full_batch(rewards: torch.Tensor, valid: torch.Tensor, seed: int = 0, perm: torch.Tensor | None = None):
    """An AdvantageBatch with every optional field, drawn from ``seed``; ``perm`` reorders each group."""
    generator = torch.Generator().manual_seed(seed)
    prompts, group = rewards.shape
    lengths = torch.randint(1, T + 1, (prompts, group), generator=generator)
    mask = torch.arange(T).expand(prompts, group, T) < lengths.unsqueeze(-1)
    logprobs = -torch.rand(prompts, group, T, generator=generator) * mask
    # the greedy completion's reward: the first sample's when valid (never an invalid one's NaN)
    greedy = torch.where(valid[:, :1], rewards[:, :1], 0.0) if group else torch.zeros(prompts)
    fields = {
        "rewards": rewards,
        "valid": valid,
        "lengths": lengths,
        "response_mask": mask,
        "logprobs": logprobs,
    }
    if perm is not None:
        fields = {k: v[:, perm] for k, v in fields.items()}
    return AdvantageBatch(**fields, greedy_rewards=greedy.squeeze(1))
