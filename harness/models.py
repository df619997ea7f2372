"""Models: the policy a run trains (its model, tokenizer, device and precision) and the built-in
tiny model's definition.

The tiny model is a real transformers architecture (Qwen2 or Llama) with a character tokenizer
fitted to the task's alphabet (a ``tokenizers`` WordLevel model wrapped in PreTrainedTokenizerFast
and saved beside the weights, so any engine can load the pair with ``from_pretrained``). Its warm
start, cache and the loading of a run's policy are harness/warmstart.py's.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from advbench.harness.config import ConfigError, ModelConfig

PAD, EOS = "<pad>", "<eos>"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Policy:
    model: torch.nn.Module  # a transformers causal LM
    tokenizer: object  # a PreTrainedTokenizerFast with left padding and an EOS token
    device: torch.device
    path: Path  # where weights and tokenizer live (the cache entry for the tiny model)
    autocast: str = "none"  # model.autocast: the dtype forward passes compute in, or none

    def compute(self) -> contextlib.AbstractContextManager:
        """The context every forward pass of this policy runs in (autocast, or nothing)."""
        return autocast(self.device, self.autocast)


def autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """torch.autocast to ``dtype`` on ``device``; a no-op for "none"."""
    if dtype == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[dtype])


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config key 'model.device': cuda was asked for, but torch sees no CUDA device")
    return torch.device(name)


# -- the tiny model ------------------------------------------------------------------------------


def fit_tokenizer(texts: list[str]):
    """A character-level tokenizer whose vocabulary is exactly the characters of ``texts``.

    It is a byte-level BPE with no merges (GPT-2's convention: a space is the token 'Ġ'). A plain
    character split would do as much, but transformers 5 picks the tokenizer class of a saved
    model from its architecture (Qwen2Tokenizer for qwen2), and that class re-tokenizes with its
    own byte-level pre-tokenizer: with this vocabulary every loader encodes text the same way.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    alphabet = sorted(
        {char for text in texts for piece, _ in byte_level.pre_tokenize_str(text) for char in piece}
    )
    vocab = {token: i for i, token in enumerate([PAD, EOS, *alphabet])}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = byte_level
    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token=PAD, eos_token=EOS, padding_side="left"
    )


def build_tiny(cfg: ModelConfig, tokenizer) -> torch.nn.Module:
    """A randomly initialised causal LM of the configured architecture and size."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    config_cls, model_cls = {
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
        "llama": (LlamaConfig, LlamaForCausalLM),
    }[cfg.architecture]
    config = config_cls(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    return model_cls(config)


def enable_activation_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each decoder layer's activations in the backward pass (non-reentrant checkpoints).
    transformers 5.x renamed gradient_checkpointing_enable; either name is used, whichever exists."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
