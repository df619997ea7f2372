"""advbench's estimators in other trainers: what the TRL and verl adapters share.

A trainer hands over its batch flat: B completions, each with the id of the prompt (group) it
answers, a reward, and token tensors [B, T]. advbench's estimators take groups, [P, G] and
[P, G, T]. ``Groups`` places each flat sample in that grid (groups of varying size are padded
with invalid slots, which every estimator already handles) and takes the advantages back;
``AdvantageCall`` resolves an estimator by name once, when the trainer is built, and computes one
batch's advantages with the state a stateful estimator carries from step to step.

The adapters themselves: ``advbench.harness.adapters.trl`` (a GRPOTrainer subclass) and
``advbench.harness.adapters.verl`` (entries in verl's advantage and policy-loss registries).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from advbench import estimators
from advbench.harness.errors import ConfigError

TOKEN_FIELDS = ("response_mask", "logprobs", "entropy", "ref_logprobs")


@dataclass(frozen=True)
class Groups:
    """Where each of B flat samples sits in a [P, G] grid: ``prompt[b]`` and ``slot[b]``.

    Groups are numbered in the order they first appear; within a group the samples keep their
    order. G is the largest group; the shorter groups' spare slots are invalid.
    """

    prompt: torch.Tensor  # [B] long
    slot: torch.Tensor  # [B] long
    num_prompts: int
    group_size: int

    @classmethod
    def from_index(cls, index: Sequence[Any] | np.ndarray) -> Groups:
        """From each sample's group id (verl's ``uid`` strings, or any comparable ids)."""
        ids = np.asarray(index)
        if ids.ndim != 1 or ids.size == 0:
            raise ValueError(f"group index must be a non-empty 1-D sequence, got shape {ids.shape}")
        _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
        rank = np.empty_like(first)
        rank[np.argsort(first, kind="stable")] = np.arange(first.size)  # groups in order of appearance
        prompt = rank[inverse.reshape(-1)]
        order = np.argsort(prompt, kind="stable")
        sizes = np.bincount(prompt, minlength=first.size)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        slot = np.empty_like(prompt)
        slot[order] = np.arange(ids.size) - starts[prompt[order]]
        return cls(torch.as_tensor(prompt), torch.as_tensor(slot), int(first.size), int(sizes.max()))

    @classmethod
    def consecutive(cls, num_samples: int, group_size: int) -> Groups:
        """Groups of ``group_size`` consecutive samples (TRL's layout)."""
        if num_samples % group_size:
            raise ValueError(f"{num_samples} samples do not split into groups of {group_size}")
        return cls.from_index(np.arange(num_samples) // group_size)

    @property
    def valid(self) -> torch.Tensor:
        """[P, G] bool: True where a sample sits."""
        return self.grid(torch.ones(self.prompt.numel(), dtype=torch.bool), fill=False)

    def grid(self, flat: torch.Tensor, fill: float | bool = 0) -> torch.Tensor:
        """[B, ...] -> [P, G, ...], empty slots ``fill``."""
        out = torch.full(
            (self.num_prompts, self.group_size, *flat.shape[1:]), fill, dtype=flat.dtype, device=flat.device
        )
        out[self.prompt.to(flat.device), self.slot.to(flat.device)] = flat
        return out

    def flat(self, grid: torch.Tensor) -> torch.Tensor:
        """[P, G, ...] -> [B, ...]: each sample's entry back in the trainer's order."""
        return grid[self.prompt.to(grid.device), self.slot.to(grid.device)]


class AdvantageCall:
    """One advbench estimator, resolved by name when the trainer is built, called once per batch.

    A stateful estimator's state (FADE's moving averages) and the first step's entropy are kept
    here from call to call; ``state_dict``/``load_state_dict`` are what a trainer's checkpoint holds.
    """

    def __init__(
        self, name: str, params: Mapping[str, Any] | None = None, unsupported: Mapping[str, str] | None = None
    ):
        try:
            self.estimator = estimators.get(name)
        except KeyError as exc:
            raise ConfigError(exc.args[0]) from None
        self.params = dict(params or {})
        try:
            self.estimator.make_params(self.params)
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc)) from None
        self.needs = self.estimator.required(**self.params)
        for need, why in (unsupported or {}).items():
            if need in self.needs:
                raise ConfigError(f"estimator '{name}' needs {need}, which {why}")
        self.state = self.estimator.new_state()
        self.initial_entropy: float | None = None

    @property
    def name(self) -> str:
        return self.estimator.name

    def __call__(
        self,
        groups: Groups,
        rewards: torch.Tensor,
        valid: torch.Tensor | None = None,
        tokens: Mapping[str, torch.Tensor] | None = None,
        signals: estimators.TrainingSignals | None = None,
        greedy_rewards: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat advantages ([B] or [B, T]) and the flat [B] bool of the samples that train.

        ``rewards`` and ``valid`` are [B]; ``tokens`` maps TOKEN_FIELDS names to [B, T] tensors
        (the response mask among them whenever lengths matter); ``greedy_rewards`` is [P] (ReMax's
        baseline, one per group). ``signals`` gets this call's
        state and initial entropy filled in, and its diagnostics back from the estimator.
        """
        valid = torch.ones_like(rewards, dtype=torch.bool) if valid is None else valid.bool()
        tokens = dict(tokens or {})
        missing = [need for need in self.needs if need in TOKEN_FIELDS and need not in tokens]
        if missing:
            raise ValueError(f"estimator '{self.name}' needs {', '.join(missing)} [B, T], not given")
        token_grids = {key: groups.grid(value) for key, value in tokens.items() if key in TOKEN_FIELDS}
        if "response_mask" in token_grids:
            token_grids["response_mask"] = token_grids["response_mask"].bool()
        mask = tokens.get("response_mask")
        batch = estimators.AdvantageBatch(
            rewards=groups.grid(rewards.float()),
            valid=groups.grid(valid, fill=False),
            lengths=None if mask is None else groups.grid(mask.sum(-1)),
            greedy_rewards=greedy_rewards,
            **token_grids,
        )
        signals = signals if signals is not None else estimators.TrainingSignals()
        if signals.entropy is not None and self.initial_entropy is None:
            self.initial_entropy = signals.entropy
        signals.initial_entropy, signals.state = self.initial_entropy, self.state
        advantages = self.estimator(batch, signals, **self.params)
        self.state = signals.state
        kept = self.estimator.selected(batch, **self.params)
        return groups.flat(advantages), groups.flat(kept)

    def state_dict(self) -> dict[str, Any]:
        return {
            "estimator": self.name,
            "initial_entropy": self.initial_entropy,
            "state": dataclasses.asdict(self.state) if self.state is not None else None,
        }

    def load_state_dict(self, saved: Mapping[str, Any]) -> None:
        if saved.get("estimator") != self.name:
            raise ValueError(
                f"the checkpoint holds estimator '{saved.get('estimator')}''s state, not '{self.name}''s"
            )
        self.initial_entropy = saved.get("initial_entropy")
        self.state = self.estimator.load_state(saved.get("state"))
