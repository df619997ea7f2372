"""What the TRL and verl adapters share (harness/adapters): flat batches into groups and back, and
an estimator called by name with its state kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advbench import estimators
from advbench.harness.adapters import AdvantageCall, Groups
from advbench.harness.errors import ConfigError


def test_groups_place_varying_sizes_in_order_of_appearance():
    groups = Groups.from_index(["b", "a", "b", "c", "a", "b"])
    assert (groups.num_prompts, groups.group_size) == (3, 3)
    assert groups.prompt.tolist() == [0, 1, 0, 2, 1, 0]
    assert groups.slot.tolist() == [0, 0, 1, 0, 1, 2]
    assert groups.valid.tolist() == [[True, True, True], [True, True, False], [True, False, False]]
    grid = groups.grid(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), fill=-1)
    assert grid.tolist() == [[1.0, 3.0, 6.0], [2.0, 5.0, -1.0], [4.0, -1.0, -1.0]]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=40), st.integers(1, 5))
def test_groups_round_trip_any_index(index, width):
    groups = Groups.from_index(index)
    values = torch.randn(len(index), width)
    assert torch.equal(groups.flat(groups.grid(values)), values)
    assert int(groups.valid.sum()) == len(index)
    # samples of one group share a row, and only they do
    for b, c in [(b, c) for b in range(len(index)) for c in range(len(index))]:
        assert (groups.prompt[b] == groups.prompt[c]) == (index[b] == index[c])


def test_consecutive_groups_and_their_errors():
    groups = Groups.consecutive(6, 3)
    assert groups.prompt.tolist() == [0, 0, 0, 1, 1, 1] and groups.slot.tolist() == [0, 1, 2, 0, 1, 2]
    with pytest.raises(ValueError, match="do not split into groups of 4"):
        Groups.consecutive(6, 4)
    with pytest.raises(ValueError, match="non-empty"):
        Groups.from_index(np.array([]))


def test_a_call_equals_the_estimator_on_the_grid():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0])
    groups = Groups.consecutive(8, 4)
    advantages, kept = AdvantageCall("grpo")(groups, rewards)
    expected = estimators.get("grpo")(estimators.AdvantageBatch(rewards=rewards.view(2, 4)))
    assert torch.allclose(advantages, expected.view(-1)) and kept.all()


def test_rloo_over_groups_of_varying_size_by_hand():
    # group x: rewards 1, 0, 0 -> leave-one-out baselines 0, 0.5, 0.5; group y: 1, 0 -> 0, 1
    groups = Groups.from_index(["x", "y", "x", "y", "x"])
    advantages, _ = AdvantageCall("rloo")(groups, torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0]))
    assert torch.allclose(advantages, torch.tensor([1.0, 1.0, -0.5, -1.0, -0.5]))


def test_invalid_samples_get_no_advantage_and_psr_keeps_only_correct_ones():
    groups = Groups.consecutive(4, 4)
    rewards, valid = torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.tensor([True, True, True, False])
    advantages, kept = AdvantageCall("grpo")(groups, rewards, valid)
    assert advantages[3] == 0 and kept.tolist() == [True, True, True, False]
    _, kept = AdvantageCall("psr")(groups, rewards, valid)
    assert kept.tolist() == [True, False, True, False]


def test_fade_state_is_carried_and_round_trips():
    call = AdvantageCall("fade")
    groups, rewards = Groups.consecutive(8, 4), torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    for step, entropy in enumerate([1.5, 1.2, 0.4]):
        signals = estimators.TrainingSignals(step=step, total_steps=3, batch_pass_rate=0.5, entropy=entropy)
        call(groups, rewards, signals=signals)
        assert "fade_delta" in signals.diagnostics
    assert call.initial_entropy == 1.5 and call.state.h_target == pytest.approx(0.75)
    saved = call.state_dict()
    fresh = AdvantageCall("fade")
    assert fresh.state != call.state
    fresh.load_state_dict(saved)
    assert fresh.state == call.state and fresh.initial_entropy == 1.5
    with pytest.raises(ValueError, match="'fade''s state, not 'grpo'"):
        AdvantageCall("grpo").load_state_dict(saved)


def test_token_level_estimators_get_their_tokens_or_say_what_is_missing():
    groups = Groups.consecutive(4, 2)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0]]).bool()
    tokens = {"response_mask": mask, "logprobs": torch.zeros(4, 3)}
    advantages, _ = AdvantageCall("reinforce_pp")(groups, torch.tensor([1.0, 0.0, 0.0, 1.0]), tokens=tokens)
    assert advantages.shape == (4, 3) and (advantages[~mask] == 0).all()
    with pytest.raises(ValueError, match="needs ref_logprobs"):  # its KL-in-reward form
        AdvantageCall("reinforce_pp", {"kl_coef": 0.01})(
            groups, torch.tensor([1.0, 0.0, 0.0, 1.0]), tokens=tokens
        )


def test_bad_names_are_refused_with_the_choices():
    with pytest.raises(ConfigError, match="unknown estimator 'fadee'.*did you mean 'fade'.*registered"):
        AdvantageCall("fadee")
    with pytest.raises(ConfigError, match="has no hyperparameter 'epsilon'; its hyperparameters are: eps"):
        AdvantageCall("grpo", {"epsilon": 1e-4})
    with pytest.raises(ConfigError, match="'remax' needs greedy_rewards, which no greedy here"):
        AdvantageCall("remax", unsupported={"greedy_rewards": "no greedy here"})
