import torch

from advbench.harness.rollout import logprobs_and_entropy, response_mask_until_eos


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


def test_step_recorder_gives_what_the_stacked_logits_give():
    """HFEngine records log-probs step by step (O(B x V) memory) instead of keeping every step's
    logits; on the same draws it must give exactly what generate's output_logits give."""
    from transformers import LlamaConfig, LlamaForCausalLM, TemperatureLogitsWarper

    from advbench.harness.rollout import _StepRecorder

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, eos_token_id=1, pad_token_id=0,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    prompts = torch.randint(2, 50, (6, 4))
    args = dict(input_ids=prompts, max_new_tokens=7, do_sample=True, top_k=0, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(1)
    out = model.generate(**args, temperature=0.7, return_dict_in_generate=True, output_logits=True)
    reference = logprobs_and_entropy(torch.stack(out.logits, dim=1), out.sequences[:, 4:], 0.7)
    # the recorder sees raw logits: the temperature warper comes after it, generate adds none
    recorder = _StepRecorder(0.7)
    torch.manual_seed(1)
    sequences = model.generate(
        **args, temperature=1.0, logits_processor=[recorder, TemperatureLogitsWarper(0.7)]
    )
    assert torch.equal(sequences, out.sequences)
    recorded = recorder.finish(sequences[:, 4:])
    assert torch.equal(recorded[0], reference[0]) and torch.equal(recorded[1], reference[1])


def test_the_configs_engines_are_the_registered_ones():
    import dataclasses

    from advbench.harness import rollout
    from advbench.harness.config import RolloutConfig

    (engine,) = [f for f in dataclasses.fields(RolloutConfig) if f.name == "engine"]
    assert sorted(engine.metadata["choices"]) == rollout.ENGINES.names() == ["hf", "paged", "vllm"]


def test_shared_prompt_prefill_samples_what_a_prefill_per_row_samples(setup):
    """HFEngine prefills each prompt once and repeats its cache for the n samples; with the same
    draws it must give the tokens, log-probs and entropies of prefilling every row, left padding
    included (prompts of several lengths, one of two characters)."""
    from advbench.harness.rollout import HFEngine, SamplingParams

    _, _, policy, prompts, _ = setup
    prompts = [*prompts[:5], prompts[5][-2:]]
    encoded = policy.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    assert (encoded["attention_mask"] == 0).any()  # left padding is exercised
    sampling = SamplingParams(max_new_tokens=8)
    outputs = []
    for share in (False, True):
        engine = HFEngine(policy, share_prompts=share)
        assert engine.share_prompts is share
        torch.manual_seed(3)
        outputs.append(engine.generate(prompts, 5, sampling))
    per_row, shared = outputs
    assert torch.equal(shared.response_ids, per_row.response_ids)
    assert torch.equal(shared.response_mask, per_row.response_mask)
    torch.testing.assert_close(shared.logprobs, per_row.logprobs, rtol=0, atol=1e-5)
    torch.testing.assert_close(shared.entropy, per_row.entropy, rtol=0, atol=1e-5)
    assert shared.texts == per_row.texts


def test_a_static_cache_prefills_every_row(setup):
    from advbench.harness.rollout import HFEngine

    policy = setup[2]
    assert HFEngine(policy).share_prompts
    assert not HFEngine(policy, cache="static").share_prompts
