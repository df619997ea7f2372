import math

import pytest
import torch

import estimators
from estimators import AdvantageBatch, TrainingSignals
from estimators.fade import fade_phase

# Group pass rates .25 and .5
REWARDS = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
fade = estimators.get("fade")


def test_exploration_start_is_hard_focus_with_balanced_signs():
    # x = 0: w = (1 - p) = .75, .5 normalised to mean 1 -> 1.2, .8; lambda_neg = 1
    signals = TrainingSignals(entropy=1.0, initial_entropy=1.0)
    out = fade(AdvantageBatch(REWARDS), signals)
    expected = torch.tensor([[0.75, -0.25, -0.25, -0.25], [0.5, 0.5, -0.5, -0.5]]) * torch.tensor(
        [[1.2], [0.8]]
    )
    assert torch.allclose(out, expected, atol=1e-6)
    assert signals.diagnostics == {
        "fade_phase": 0.0,
        "fade_alpha": 0.0,
        "fade_beta": 1.0,
        "fade_lambda_neg": 1.0,
    }


def test_half_way_moves_focus_and_suppresses_negatives():
    # H/H0 = .75, rho = .5: x = .25/.5 = .5 -> alpha .5, beta 1, lambda_neg .75
    signals = TrainingSignals(entropy=0.75, initial_entropy=1.0)
    out = fade(AdvantageBatch(REWARDS), signals)
    w = torch.tensor([math.sqrt(0.25) * 0.75, math.sqrt(0.5) * 0.5])
    w = w / w.mean()
    centred = torch.tensor([[0.75, -0.25, -0.25, -0.25], [0.5, 0.5, -0.5, -0.5]])
    expected = w.unsqueeze(1) * torch.where(centred > 0, centred, 0.75 * centred)
    assert torch.allclose(out, expected, atol=1e-6)
    assert signals.diagnostics["fade_phase"] == pytest.approx(0.5)
    assert signals.diagnostics["fade_lambda_neg"] == pytest.approx(0.75)


def test_phase_is_clipped_and_defaults_to_exploration():
    assert fade_phase(TrainingSignals(entropy=0.4, initial_entropy=1.0), 0.5) == 1.0
    assert fade_phase(TrainingSignals(entropy=1.3, initial_entropy=1.0), 0.5) == 0.0
    assert fade_phase(None, 0.5) == 0.0
    # fully exploiting with the defaults: w = p (1 - p), negatives at lambda_min = .5
    out = fade(AdvantageBatch(REWARDS), TrainingSignals(entropy=0.1, initial_entropy=1.0))
    assert out[1, 2].item() == pytest.approx(-0.5 * 0.5 * (0.25 / ((0.1875 + 0.25) / 2)))
