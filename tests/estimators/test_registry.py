import dataclasses

import pytest
import torch

from advbench import estimators
from advbench.estimators import AdvantageBatch, TrainingSignals
from advbench.estimators.registry import _REGISTRY


def test_first_entries_are_registered_with_description_and_source():
    assert {"grpo", "rloo", "reinforce_batch"} <= set(estimators.names())
    for name in estimators.names():
        est = estimators.get(name)
        assert est.description and est.source, name
        assert dataclasses.is_dataclass(est.params)


def test_unknown_estimator_names_the_choices():
    with pytest.raises(KeyError, match="registered estimators: .*grpo"):
        estimators.get("nope")


def test_unknown_hyperparameter_names_the_valid_ones():
    with pytest.raises(ValueError, match="its hyperparameters are: eps, unbiased_std"):
        estimators.get("grpo")(AdvantageBatch(torch.zeros(1, 2)), epsilon=1.0)


def test_batch_shapes_are_checked():
    with pytest.raises(ValueError, match=r"rewards must be \[P, G\]"):
        AdvantageBatch(torch.zeros(3))
    with pytest.raises(ValueError, match="valid must have the shape"):
        AdvantageBatch(torch.zeros(2, 3), valid=torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"response_mask must be \[P, G, T\]"):
        AdvantageBatch(torch.zeros(2, 3), response_mask=torch.ones(2, 4, 5))


def test_register_a_new_estimator_and_token_level_output():
    @estimators.register("test_token_level", source="test", token_level=True)
    def token_level(batch, signals, params):
        """Reward spread over response tokens."""
        return batch.rewards.unsqueeze(-1) * batch.response_mask.float()

    try:
        batch = AdvantageBatch(
            torch.tensor([[1.0, 2.0]]), valid=torch.tensor([[True, False]]), response_mask=torch.ones(1, 2, 3)
        )
        advantages = estimators.get("test_token_level")(batch, TrainingSignals())
        assert advantages.shape == (1, 2, 3)
        assert torch.equal(advantages[0, 1], torch.zeros(3))  # invalid completion zeroed
        assert estimators.get("test_token_level").description == "Reward spread over response tokens."
        with pytest.raises(ValueError, match="registered twice"):
            estimators.register("test_token_level", source="test")(token_level)
    finally:
        _REGISTRY.pop("test_token_level")


def test_wrong_output_shape_is_refused():
    @estimators.register("test_bad_shape", source="test")
    def bad(batch, signals, params):
        return batch.rewards.sum(dim=1)

    try:
        with pytest.raises(ValueError, match="returned shape"):
            estimators.get("test_bad_shape")(AdvantageBatch(torch.zeros(2, 3)))
    finally:
        _REGISTRY.pop("test_bad_shape")
