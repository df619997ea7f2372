"""reinforce_pp, reinforce_pp_baseline and unlikeliness: estimators that read token-level inputs."""

import torch

from advbench import estimators
from advbench.estimators import AdvantageBatch


def _mask(lengths, width):
    return torch.arange(width).expand(*lengths.shape, width) < lengths.unsqueeze(-1)


def test_reinforce_pp_discounted_returns_whitened_over_tokens():
    # completion A: 3 tokens, reward 1, gamma .5 -> returns .25, .5, 1; completion B: 1 token, reward 0
    lengths = torch.tensor([[3, 1]])
    batch = AdvantageBatch(torch.tensor([[1.0, 0.0]]), lengths=lengths, response_mask=_mask(lengths, 3))
    out = estimators.get("reinforce_pp")(batch, gamma=0.5)
    values = torch.tensor([0.25, 0.5, 1.0, 0.0])
    whitened = (values - values.mean()) / values.std(unbiased=False)
    assert torch.allclose(out[0, 0], whitened[:3], atol=1e-5)
    assert torch.allclose(out[0, 1], torch.tensor([whitened[3], 0.0, 0.0]), atol=1e-5)


def test_reinforce_pp_unbiased_whitening_divides_by_n_minus_1():
    # verl's masked_whiten: both paths (gamma 1 per completion; gamma < 1 per token) honour it
    lengths = torch.tensor([[3, 1]])
    batch = AdvantageBatch(torch.tensor([[1.0, 0.0]]), lengths=lengths, response_mask=_mask(lengths, 3))
    for gamma, values in [
        (1.0, torch.tensor([1.0, 1.0, 1.0, 0.0])),
        (0.5, torch.tensor([0.25, 0.5, 1.0, 0.0])),
    ]:
        out = estimators.get("reinforce_pp")(batch, gamma=gamma, unbiased=True)
        whitened = (values - values.mean()) / values.std(unbiased=True)
        assert torch.allclose(out[0, 0], whitened[:3], atol=1e-5)
        assert torch.allclose(out[0, 1, 0], whitened[3], atol=1e-5)


def test_reinforce_pp_baseline_group_centred_then_whitened():
    lengths = torch.tensor([[3, 1]])
    batch = AdvantageBatch(torch.tensor([[1.0, 0.0]]), lengths=lengths, response_mask=_mask(lengths, 3))
    out = estimators.get("reinforce_pp_baseline")(batch)
    # tokens .5, .5, .5, -.5: mean .25, population std sqrt(.1875)
    std = 0.1875**0.5
    assert torch.allclose(out[0, 0], torch.full((3,), 0.25 / std), atol=1e-5)
    assert torch.allclose(out[0, 1], torch.tensor([-0.75 / std, 0.0, 0.0]), atol=1e-5)


def test_unlikeliness_rewards_the_unlikely_correct_sample_more():
    # sequence log-probs -1 (most likely), -3, -2; sample 0 and 1 correct
    logprobs = torch.tensor([[[-1.0], [-3.0], [-2.0]]])
    batch = AdvantageBatch(
        torch.tensor([[1.0, 1.0, 0.0]]), logprobs=logprobs, response_mask=torch.ones(1, 3, 1)
    )
    out = estimators.get("unlikeliness")(batch, rank_penalty=0.25)
    # rank (samples of the group less likely): 2, 0, 1 -> shaped rewards 1 - .25*2/3, 1, 0
    shaped = torch.tensor([1 - 0.25 * 2 / 3, 1.0, 0.0])
    expected = (shaped - shaped.mean()) / (shaped.std() + 1e-6)
    assert torch.allclose(out[0], expected, atol=1e-5)
    assert out[0, 1] > out[0, 0] > 0 > out[0, 2]
    assert torch.allclose(
        estimators.get("unlikeliness")(batch, rank_penalty=0.0), estimators.get("grpo")(batch), atol=1e-6
    )


def test_unlikeliness_ranks_by_per_token_mean_not_the_sum():
    # sample 0: 4 tokens of -1 (sum -4, mean -1); sample 1: 1 token of -2 (sum -2, mean -2)
    logprobs = torch.tensor([[[-1.0] * 4, [-2.0, 0, 0, 0]]])
    lengths = torch.tensor([[4, 1]])
    batch = AdvantageBatch(
        torch.tensor([[1.0, 1.0]]), logprobs=logprobs, lengths=lengths, response_mask=_mask(lengths, 4)
    )
    out = estimators.get("unlikeliness")(batch, rank_penalty=0.5)
    # by the mean, sample 1 is the less likely one (rank 0): r' = 1 - .5 * 1/2 = .75 for sample 0
    shaped = torch.tensor([0.75, 1.0])
    expected = (shaped - shaped.mean()) / (shaped.std() + 1e-6)
    assert torch.allclose(out[0], expected, atol=1e-5)


def test_reinforce_pp_folds_the_kl_into_the_token_rewards():
    # one completion of 2 tokens, reward 1; k1 = log mu - log ref = .2, .4 on its tokens; a second
    # completion of 1 token, reward 0, k1 = 0. kl_coef .5: token rewards -.1, 1 - .2 | 0
    lengths = torch.tensor([[2, 1]])
    mask = _mask(lengths, 2)
    logprobs = torch.tensor([[[-1.0, -1.0], [-1.0, 0.0]]])
    ref = torch.tensor([[[-1.2, -1.4], [-1.0, 0.0]]])
    batch = AdvantageBatch(
        torch.tensor([[1.0, 0.0]]), lengths=lengths, response_mask=mask, logprobs=logprobs, ref_logprobs=ref
    )
    assert estimators.get("reinforce_pp").required(kl_coef=0.5) == ("ref_logprobs",)
    assert estimators.get("reinforce_pp").required() == ()
    out = estimators.get("reinforce_pp")(batch, kl_coef=0.5)
    returns = torch.tensor([-0.1 + 0.8, 0.8, 0.0])  # G_t = sum of the token rewards from t on
    whitened = (returns - returns.mean()) / returns.std(unbiased=False)
    assert torch.allclose(out[0, 0], whitened[:2], atol=1e-5)
    assert torch.allclose(out[0, 1], torch.tensor([whitened[2], 0.0]), atol=1e-5)
