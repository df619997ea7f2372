import torch

from harness.rollout import logprobs_and_entropy, response_mask_until_eos


def test_response_mask_stops_after_the_first_eos():
    eos = 1
    ids = torch.tensor([[5, 6, 1, 0, 0], [5, 1, 1, 1, 1], [5, 6, 7, 8, 9]])
    mask = response_mask_until_eos(ids, eos)
    assert mask.tolist() == [[True, True, True, False, False], [True, True, False, False, False], [True] * 5]


def test_logprobs_and_entropy_at_temperature():
    logits = torch.tensor([[[2.0, 0.0, 0.0]]])
    logp, entropy = logprobs_and_entropy(logits, torch.tensor([[0]]), temperature=2.0)
    probs = torch.softmax(torch.tensor([1.0, 0.0, 0.0]), -1)
    assert torch.allclose(logp, probs[0].log().view(1, 1))
    assert torch.allclose(entropy, -(probs * probs.log()).sum().view(1, 1))
