"""Rollout engines: ``generate(prompts, n, sampling) -> Rollout`` and ``sync(policy)``.

Three engines sit behind this one interface (``rollout.engine``):

  hf     transformers ``generate`` on the policy module itself (CPU and GPU). ``rollout.cache=static``
         pre-allocates the KV cache, and ``rollout.compile=true`` (CUDA only) lets transformers
         compile the decode step over it.
  paged  transformers' continuous batching (``generate_batch``: a paged KV cache, requests
         scheduled token by token, finished ones replaced at once). Meant for the GPU; it runs on
         the CPU too, several times slower than hf there (benchmarks/RESULTS.md).
  vllm   vLLM (optional extra ``advbench[vllm]``, CUDA only), colocated in this process; the
         trainer's weights are loaded into it after every optimizer step. It cannot be installed
         on the machines this project is built on: written against vLLM's documented API and
         unverified here (README, "GPU").

The log-prob recorded for each sampled token is log softmax(logits / temperature) over the full
vocabulary, the quantity the trainer recomputes, so the PPO ratio compares like with like. ``hf``
records it from the logits it samples with, step by step; ``paged`` and ``vllm`` report their own (vLLM with
``logprobs_mode=processed_logprobs``), so the rollout/trainer mismatch metrics measure the engine.
With top_p < 1 hf records the untruncated tempered log-prob (as verl and TRL do), paged and vllm
the truncated one. Every engine samples in the precision ``rollout.autocast`` names (default: the
trainer's own, ``model.autocast``); ``bfloat16`` over float32 weights makes a real rollout/trainer
mismatch, and the recorded log-probs are those of the precision sampled in (hf records them from
the bf16-computed logits it samples with). The token entropy of a ``paged`` or ``vllm`` rollout
(which neither engine returns) comes from one no-grad forward of the policy on the sampled tokens:
the trainer's entropy at the sampling weights.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Protocol

import torch

from advbench.harness.config import ConfigError, RolloutConfig
from advbench.harness.models import DTYPES, Policy, autocast


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 16
    greedy: bool = False

    def transformers_args(self) -> dict:
        """These settings as transformers generation arguments (top_k off: sampling is top-p only)."""
        if self.greedy:
            return {"do_sample": False}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": 0}

    @property
    def logprob_temperature(self) -> float:
        """The temperature of the recorded log-probs: greedy ones are of the untempered distribution."""
        return 1.0 if self.greedy else self.temperature


@dataclass
class Rollout:
    """B = len(prompts) * n completions; completion j of prompt i is row i * n + j."""

    prompt_ids: torch.Tensor  # [B, Lp] left-padded
    prompt_mask: torch.Tensor  # [B, Lp] 1 on prompt tokens
    response_ids: torch.Tensor  # [B, T] sampled tokens, padded after EOS
    response_mask: torch.Tensor  # [B, T] bool: the response's tokens, EOS included
    logprobs: torch.Tensor  # [B, T] rollout log-probs of the sampled tokens (0 off the mask)
    entropy: torch.Tensor  # [B, T] entropy of the rollout distribution at each position
    texts: list[str]  # decoded responses, without EOS
    truncated: torch.Tensor  # [B] bool: hit max_new_tokens before EOS

    @property
    def lengths(self) -> torch.Tensor:
        return self.response_mask.sum(-1)


class Engine(Protocol):
    name: str
    policy: Policy  # the policy it samples from (its weights after the last sync)

    def generate(self, prompts: list[str], n: int, sampling: SamplingParams) -> Rollout: ...

    def sync(self, policy: Policy) -> None: ...


class EngineUnavailable(ConfigError):
    """The configured engine cannot run here (no CUDA, or its optional package is not installed)."""


def response_mask_until_eos(response_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """True up to and including the first EOS of each row (all True for a row without EOS)."""
    is_eos = response_ids == eos_token_id
    eos_before = is_eos.cumsum(-1) - is_eos.long()  # EOS tokens strictly before each position
    return eos_before == 0


def logprobs_and_entropy(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of ``tokens`` and entropy under softmax(logits / temperature); [B, T, V] -> [B, T]."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    token_logp = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return token_logp, entropy


def token_logprobs(
    model: torch.nn.Module, batch: Rollout, rows: torch.Tensor, temperature: float, trim: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``model``'s log-prob and entropy of the sampled response tokens of ``rows``, [rows, T].

    ``trim`` drops the columns that are padding for every one of these rows (left of the longest
    prompt, right of the longest response) before the forward, and pads the result back with zeros:
    the same numbers up to float rounding, on fewer tokens.
    """
    prompt_ids, prompt_mask = batch.prompt_ids[rows], batch.prompt_mask[rows]
    response_ids, response_mask = batch.response_ids[rows], batch.response_mask[rows]
    width = response_ids.shape[1]
    if trim:
        first = int(prompt_mask.any(0).long().argmax())
        last = max(1, int(response_mask.sum(-1).max()))
        prompt_ids, prompt_mask = prompt_ids[:, first:], prompt_mask[:, first:]
        response_ids, response_mask = response_ids[:, :last], response_mask[:, :last]
    attention = torch.cat([prompt_mask, response_mask.long()], dim=1)
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)  # as generate numbers left-padded rows
    logits = model(
        input_ids=torch.cat([prompt_ids, response_ids], dim=1),
        attention_mask=attention,
        position_ids=position_ids,
    ).logits
    response_logits = logits[:, prompt_ids.shape[1] - 1 : -1]  # position t predicts response token t
    logprobs, entropy = logprobs_and_entropy(response_logits, response_ids, temperature)
    if logprobs.shape[1] < width:
        pad = (0, width - logprobs.shape[1])
        logprobs, entropy = torch.nn.functional.pad(logprobs, pad), torch.nn.functional.pad(entropy, pad)
    return logprobs, entropy


# Logit elements (tokens x vocabulary) per forward when a rollout is scored by the policy: 4 GiB of
# float32 logits, so a 152k vocabulary scores ~7k tokens at a time and the tiny model everything.
SCORE_LOGITS = 1 << 30


def assemble(
    policy: Policy,
    prompt_ids: list[list[int]],
    responses: list[list[int]],
    logprobs: list[list[float]] | None,
    sampling: SamplingParams,
) -> Rollout:
    """A Rollout from token lists (row i*n+j: sample j of prompt i, ``prompt_ids`` already repeated).

    The entropy (and the log-probs when the engine gave none) come from no-grad forwards of the
    policy on the sampled tokens, as many rows at a time as keep the logits within ``SCORE_LOGITS``.
    """
    tokenizer, device = policy.tokenizer, policy.device
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    rows, prompt_width = len(responses), max(map(len, prompt_ids))
    width = max(1, *map(len, responses))
    prompt = torch.full((rows, prompt_width), pad, dtype=torch.long)
    prompt_mask = torch.zeros((rows, prompt_width), dtype=torch.long)
    response = torch.full((rows, width), pad, dtype=torch.long)
    recorded = torch.zeros((rows, width))
    for i, (p, r) in enumerate(zip(prompt_ids, responses, strict=True)):
        prompt[i, prompt_width - len(p) :], prompt_mask[i, prompt_width - len(p) :] = torch.tensor(p), 1
        response[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        if logprobs is not None:
            recorded[i, : len(r)] = torch.tensor(logprobs[i][: len(r)])
    lengths = torch.tensor([len(r) for r in responses])
    mask = response_mask_until_eos(response, eos) & (torch.arange(width) < lengths.unsqueeze(1))
    batch = Rollout(
        prompt_ids=prompt.to(device),
        prompt_mask=prompt_mask.to(device),
        response_ids=response.to(device),
        response_mask=mask.to(device),
        logprobs=recorded.to(device),
        entropy=torch.zeros((rows, width), device=device),
        texts=decode(tokenizer, response, mask),
        truncated=~((response == eos) & mask).any(-1).to(device),
    )
    scored_logprobs, entropy = [], []
    chunk = max(1, SCORE_LOGITS // ((prompt_width + width) * policy.model.config.vocab_size))
    was_training = policy.model.training
    policy.model.eval()
    with torch.no_grad(), policy.compute():
        for part in torch.arange(rows, device=device).split(chunk):
            lp, ent = token_logprobs(policy.model, batch, part, sampling.logprob_temperature, trim=True)
            scored_logprobs.append(lp)
            entropy.append(ent)
    policy.model.train(was_training)
    batch.entropy = torch.cat(entropy).masked_fill(~batch.response_mask, 0.0)
    if logprobs is None:
        batch.logprobs = torch.cat(scored_logprobs)
    batch.logprobs = batch.logprobs.masked_fill(~batch.response_mask, 0.0)
    return batch


def decode(tokenizer, response_ids: torch.Tensor, mask: torch.Tensor) -> list[str]:
    """The responses' texts: the masked tokens without EOS."""
    eos = tokenizer.eos_token_id
    text_ids = [row[m & (row != eos)] for row, m in zip(response_ids, mask, strict=True)]
    return tokenizer.batch_decode(text_ids, skip_special_tokens=True)


def _prompt_token_lists(tokenizer, prompts: list[str], n: int) -> tuple[list[list[int]], list[list[int]]]:
    """Each prompt's token ids, and the same list with each prompt repeated n times (row i*n+j)."""
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    return prompt_ids, [ids for ids in prompt_ids for _ in range(n)]


def _sample_seeds(count: int) -> list[int]:
    """Per-request seeds drawn from torch's RNG, so a seeded step samples the same with any engine."""
    return torch.randint(0, 2**31 - 1, (count,)).tolist()


# -- hf -----------------------------------------------------------------------------------------


class _StepRecorder:
    """A logits processor that records, at each decoding step, the log-prob of the token sampled
    and the entropy under softmax(raw logits / temperature), and passes the logits on unchanged.

    It keeps one step's [B, V] log-probs until the next step shows which token was sampled, so a
    rollout costs O(B x V) memory beyond the cache, where keeping every step's logits
    (``output_logits``) costs B x T x V floats: for Qwen2.5's 152k vocabulary, 512 completions of
    512 tokens, 159 GB.
    """

    def __init__(self, temperature: float) -> None:
        self.temperature = temperature
        self.pending: torch.Tensor | None = None
        self.logprobs: list[torch.Tensor] = []
        self.entropy: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.pending is not None:  # input_ids now ends with the token sampled at the last step
            self._settle(input_ids[:, -1])
        logp = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        self.entropy.append(-(logp.exp() * logp).sum(-1))
        self.pending = logp
        return scores

    def _settle(self, tokens: torch.Tensor) -> None:
        self.logprobs.append(self.pending.gather(-1, tokens.unsqueeze(-1)).squeeze(-1))
        self.pending = None

    def finish(self, response_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, T] log-probs and entropies of the generated ``response_ids``."""
        self._settle(response_ids[:, len(self.logprobs)])
        return torch.stack(self.logprobs, dim=1), torch.stack(self.entropy, dim=1)


def sampling_precision(cfg: RolloutConfig, policy: Policy) -> str:
    """The autocast dtype the engine samples in, from ``rollout.autocast`` ("none": the weights')."""
    if cfg.autocast == "model":
        return policy.autocast
    if cfg.autocast == "float32":
        if policy.model.dtype != torch.float32:
            raise ConfigError(
                "config key 'rollout.autocast': float32 sampling needs float32 weights, and "
                f"model.dtype is {str(policy.model.dtype).removeprefix('torch.')}"
            )
        return "none"
    return cfg.autocast


class HFEngine:
    """transformers ``generate`` on the policy module itself (colocated: no weights to copy),
    under autocast to ``precision`` ("none": the weights' dtype)."""

    name = "hf"

    def __init__(
        self, policy: Policy, cache: str = "dynamic", compile: bool = False, precision: str | None = None
    ) -> None:
        if compile and policy.device.type != "cuda":
            raise EngineUnavailable(
                "config key 'rollout.compile': compiling the decode step needs CUDA "
                f"(transformers compiles generate only on GPU); the policy is on {policy.device.type}"
            )
        self.policy = policy
        self.precision = policy.autocast if precision is None else precision
        self.cache_args: dict = {"disable_compile": not compile}
        if cache == "static":
            self.cache_args["cache_implementation"] = "static"
        if compile:
            from transformers import CompileConfig

            self.cache_args["compile_config"] = CompileConfig()

    @torch.no_grad()
    def generate(self, prompts: list[str], n: int, sampling: SamplingParams) -> Rollout:
        from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

        tokenizer, model, device = self.policy.tokenizer, self.policy.model, self.policy.device
        encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        prompt_ids = encoded["input_ids"].repeat_interleave(n, dim=0).to(device)
        prompt_mask = encoded["attention_mask"].repeat_interleave(n, dim=0).to(device)
        # The recorder must see the raw logits, so the warpers generate would add first (temperature,
        # top-p) come after it in our own list, in generate's order, and generate is asked for none.
        recorder = _StepRecorder(sampling.logprob_temperature)
        processors = [recorder]
        sample_args = sampling.transformers_args()
        if not sampling.greedy:
            if sampling.temperature != 1.0:
                processors.append(TemperatureLogitsWarper(sampling.temperature))
            if sampling.top_p < 1.0:
                processors.append(TopPLogitsWarper(sampling.top_p))
            sample_args.update(temperature=1.0, top_p=1.0)
        was_training = model.training
        model.eval()
        with autocast(device, self.precision):
            sequences = model.generate(
                input_ids=prompt_ids,
                attention_mask=prompt_mask,
                max_new_tokens=sampling.max_new_tokens,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                logits_processor=LogitsProcessorList(processors),
                **self.cache_args,
                **sample_args,
            )
        model.train(was_training)
        response_ids = sequences[:, prompt_ids.shape[1] :]
        logprobs, entropy = recorder.finish(response_ids)
        mask = response_mask_until_eos(response_ids, tokenizer.eos_token_id)
        ended = ((response_ids == tokenizer.eos_token_id) & mask).any(-1)
        return Rollout(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            response_ids=response_ids,
            response_mask=mask,
            logprobs=logprobs.masked_fill(~mask, 0.0),
            entropy=entropy.masked_fill(~mask, 0.0),
            texts=decode(tokenizer, response_ids, mask),
            truncated=~ended,
        )

    def sync(self, policy: Policy) -> None:
        """Nothing to copy: this engine samples from the module being trained."""
        self.policy = policy


# -- paged (transformers continuous batching) ---------------------------------------------------


CPU_PAGE_TOKENS = 32  # the paged engine's KV page on the CPU (on a GPU: transformers' default)


class PagedEngine:
    """transformers' continuous batching (``model.generate_batch``).

    It decodes on the policy module itself, except under ``model.autocast``: autocast is
    thread-local and continuous batching decodes in a thread of its own, where it would compute in
    the master weights' dtype; so it gets a copy of the model in the compute dtype, which ``sync``
    refreshes after every optimizer step (as vLLM's copy is). Sampling is seeded from torch's RNG
    at each call. Its log-probs are those of the processed (tempered) distribution it sampled
    from; for greedy decoding it reports no usable ones, so those are scored by the policy.
    """

    name = "paged"

    def __init__(self, policy: Policy, precision: str | None = None) -> None:
        import transformers

        if not hasattr(policy.model, "generate_batch"):
            raise EngineUnavailable(
                "config key 'rollout.engine': paged needs transformers' continuous batching "
                f"(generate_batch, transformers 5), and transformers {transformers.__version__} has none"
            )
        self.policy = policy
        self.model = policy.model
        precision = policy.autocast if precision is None else precision
        if precision != "none":
            self.model = copy.deepcopy(policy.model).requires_grad_(False).to(DTYPES[precision])

    @torch.no_grad()
    def generate(self, prompts: list[str], n: int, sampling: SamplingParams) -> Rollout:
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        tokenizer, model = self.policy.tokenizer, self.model
        prompt_ids, expected = _prompt_token_lists(tokenizer, prompts, n)
        generation = GenerationConfig(
            max_new_tokens=sampling.max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            num_return_sequences=n,
            **sampling.transformers_args(),
        )
        sizing = {}
        if self.policy.device.type == "cpu":
            # Sized from "free memory" the CPU cache takes ~10 GiB and seconds to set up; this
            # workload needs at most one run of pages per request.
            pages = -(-(max(map(len, prompt_ids)) + sampling.max_new_tokens) // CPU_PAGE_TOKENS)
            sizing = {"page_size": CPU_PAGE_TOKENS, "num_blocks": len(prompt_ids) * n * pages}
        batching = ContinuousBatchingConfig(
            return_logprobs=not sampling.greedy, seed=_sample_seeds(1)[0], **sizing
        )
        was_training = model.training
        model.eval()
        results = model.generate_batch(
            prompt_ids, generation_config=generation, continuous_batching_config=batching
        )
        model.train(was_training)
        outputs = list(results.values())  # in input order, each prompt's n samples together
        if len(outputs) != len(expected) or any(o.error for o in outputs):
            errors = sorted({o.error for o in outputs if o.error})
            raise RuntimeError(
                f"paged engine: {len(outputs)} of {len(expected)} completions came back; errors: {errors}"
            )
        for output, ids in zip(outputs, expected, strict=True):
            if list(output.prompt_ids) != ids:
                raise RuntimeError("paged engine: completions came back out of prompt order")
        logprobs = None if sampling.greedy else [list(o.logprobs) for o in outputs]
        return assemble(
            self.policy, expected, [list(o.generated_tokens) for o in outputs], logprobs, sampling
        )

    def sync(self, policy: Policy) -> None:
        """Its own copy (under autocast) takes the trainer's weights; otherwise nothing to copy."""
        self.policy = policy
        if self.model is not policy.model:
            self.model.load_state_dict(policy.model.state_dict())  # cast to the copy's dtype


# -- vllm ---------------------------------------------------------------------------------------


class VLLMEngine:
    """vLLM colocated with the trainer on one GPU (optional extra; unverified here, see README).

    The engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so ``sync`` hands the
    trainer's tensors to the model's ``load_weights`` through ``LLM.apply_model`` without copying
    them across processes. Each completion is its own request with its own seed, drawn from
    torch's RNG: a seeded step asks vLLM for the same samples whatever the batch around it.
    """

    name = "vllm"

    def __init__(
        self, policy: Policy, gpu_memory_utilization: float = 0.3, precision: str | None = None
    ) -> None:
        if policy.device.type != "cuda":
            raise EngineUnavailable(
                f"config key 'rollout.engine': vllm needs CUDA; the policy is on {policy.device.type}"
            )
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        # apply_model ships a Python function to the worker; vLLM refuses that unless told the
        # caller is trusted (here: this process, which the worker is part of).
        os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        try:
            import vllm
        except ImportError as exc:
            raise EngineUnavailable(
                "config key 'rollout.engine': vllm is not installed; on a CUDA machine: "
                "pip install 'advbench[vllm]' (or use rollout.engine=paged or hf)"
            ) from exc
        self.vllm = vllm
        self.policy = policy
        precision = policy.autocast if precision is None else precision
        self.llm = vllm.LLM(
            model=str(policy.path),
            tokenizer=str(policy.path),
            dtype=precision if precision != "none" else str(policy.model.dtype).removeprefix("torch."),
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=policy.model.config.max_position_embeddings,
            logprobs_mode="processed_logprobs",
            enable_prefix_caching=True,  # the n requests of a prompt share its KV blocks
        )
        self.sync(policy)  # the trainer's weights, which may have moved on from the saved ones

    def generate(self, prompts: list[str], n: int, sampling: SamplingParams) -> Rollout:
        tokenizer = self.policy.tokenizer
        _, expected = _prompt_token_lists(tokenizer, prompts, n)
        params = [
            self.vllm.SamplingParams(
                n=1,
                temperature=0.0 if sampling.greedy else sampling.temperature,
                top_p=1.0 if sampling.greedy else sampling.top_p,
                max_tokens=sampling.max_new_tokens,
                logprobs=None if sampling.greedy else 0,  # 0: the sampled token's own log-prob
                seed=seed,
            )
            for seed in _sample_seeds(len(expected))
        ]
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in expected], params, use_tqdm=False)
        completions = [output.outputs[0] for output in outputs]
        responses = [list(c.token_ids) for c in completions]
        logprobs = None
        if not sampling.greedy:
            logprobs = [
                [position[token].logprob for token, position in zip(c.token_ids, c.logprobs, strict=True)]
                for c in completions
            ]
        return assemble(self.policy, expected, responses, logprobs, sampling)

    def sync(self, policy: Policy) -> None:
        """Load the trainer's current weights into vLLM's copy of the model."""
        self.policy = policy
        weights = policy.model.state_dict()
        self.llm.apply_model(lambda model: model.load_weights(weights=weights.items()))


def build(cfg: RolloutConfig, policy: Policy) -> Engine:
    """The configured engine around ``policy``; EngineUnavailable when it cannot run here."""
    precision = sampling_precision(cfg, policy)
    if cfg.engine == "hf":
        return HFEngine(policy, cache=cfg.cache, compile=cfg.compile, precision=precision)
    if cfg.engine == "paged":
        return PagedEngine(policy, precision=precision)
    return VLLMEngine(policy, gpu_memory_utilization=cfg.gpu_memory_utilization, precision=precision)
