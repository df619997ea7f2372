"""The estimator contract and its registry.

An estimator is a pure function of tensors:

    advantages = estimator(batch: AdvantageBatch, signals: TrainingSignals | None, params) -> Tensor

with ``advantages`` of shape [P, G] (one value per completion, broadcast over its tokens) or
[P, G, T] (token-level). Registering it makes it a config choice (``estimator=<name>``), with its
hyperparameters dataclass exposed as ``estimator_params.<name>.<field>``.

Three optional parts of an entry, each declared at registration:

  state=SomeDataclass   what the estimator carries from step to step (FADE's moving averages).
                        The caller keeps one instance in ``signals.state`` across steps; the loop
                        saves it in every checkpoint and restores it on resume, so any stateful
                        estimator resumes identically without code of its own.
  trains=fn             ``fn(batch, params) -> [P, G] bool``: which samples enter the update at all.
                        The others are left out of the loss, its normaliser included, as when the
                        authors subset the batch (PSR and NSR; MC-GRPO's pivot sample).
  extra_samples=k       the estimator samples G + k completions per prompt (MC-GRPO's G + 1).

This module imports nothing from ``harness``: the same functions can be handed to another trainer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import hashlib
import importlib
import inspect
import math
import pkgutil
import sys
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

LARGEST_INT = 2**31 - 1  # no count or size a run uses comes near it; a larger one is a typo


def typed_value(value: Any, kind: Any, name: str) -> Any:
    """``value`` as a field of type ``kind`` takes it, or a ValueError in the config's words: numbers
    from their text (a config's ``nan``, ``1e-3``), finite floats only, whole ints up to LARGEST_INT,
    true/false for bools; ``X | None`` takes None or an X. Other types pass through (their dataclass
    checks them)."""
    options = typing.get_args(kind)
    if type(None) in options and len(options) == 2:
        return (
            None
            if value is None
            else typed_value(value, next(o for o in options if o is not type(None)), name)
        )
    if kind is float or kind is int:
        number = value
        if isinstance(value, str):
            try:
                number = float(value) if kind is float else int(value)
            except ValueError:
                raise ValueError(f"{name} must be a number, got '{value}'") from None
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise ValueError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(number):
            raise ValueError(f"{name} must be a finite number, got {value}")
        if kind is float:
            return float(number)
        if number != int(number):
            raise ValueError(f"{name} must be a whole number, got {value}")
        if abs(number) > LARGEST_INT:
            raise ValueError(f"{name} must be at most {LARGEST_INT} in size, got {value}")
        return int(number)
    if kind is bool and not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    if kind is str and not isinstance(value, str):
        raise ValueError(f"{name} must be text, got {value!r}")
    return value


@functools.cache
def _source_files(module_name: str) -> tuple[str, ...]:
    """The source files of ``module_name`` and of every module of its own top-level package or of
    advbench that it reaches through its globals (the helpers it calls, the contract it is
    registered under): a plugin's estimator changes identity with advbench's helpers too."""
    packages = {module_name.split(".")[0], "advbench"}
    files: dict[str, str] = {}
    todo = [sys.modules[module_name]]
    while todo:
        module = todo.pop()
        path = getattr(module, "__file__", None)
        if not path or module.__name__ in files:
            continue
        files[module.__name__] = path
        for value in vars(module).values():
            owner = value if isinstance(value, types.ModuleType) else inspect.getmodule(value)
            if owner is not None and owner.__name__.split(".")[0] in packages:
                todo.append(owner)
    return tuple(sorted(files.values()))


def code_identity(fn: Callable, version: str) -> str:
    """``version:hash`` of a registered function: its version as its author declares it, and a hash
    of the source it can depend on (``_source_files``). A run's identity includes it, so a changed
    estimator or loss is trained again rather than reported from an old run."""
    digest = hashlib.sha256()
    for path in _source_files(fn.__module__):
        with open(path, "rb") as handle:
            digest.update(handle.read())
    return f"{version}:{digest.hexdigest()[:12]}"


def build_params(cls: type, overrides: Mapping[str, Any] | None, owner: str) -> Any:
    """``cls(**overrides)`` for a hyperparameters dataclass: unknown names refused, each value typed
    by ``typed_value`` before the dataclass's own checks run. ``owner`` names it in errors
    ("estimator 'grpo'")."""
    overrides = dict(overrides or {})
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1)
        raise ValueError(
            f"{owner} has no hyperparameter {', '.join(map(repr, unknown))}; "
            f"its hyperparameters are: {', '.join(known) or '(none)'}"
            + (f"; did you mean {close[0]!r}?" if close else "")
        )
    kinds = typing.get_type_hints(cls)
    return cls(**{name: typed_value(value, kinds[name], name) for name, value in overrides.items()})


@dataclass
class AdvantageBatch:
    """What an estimator sees of one training batch: P prompts x G completions.

    rewards:       [P, G] float, the verifier's reward of each completion. The rewards of invalid
                   completions are ignored (set to 0 here), so a NaN on a missing sample never
                   reaches a valid sample's advantage, whatever the estimator.
    valid:         [P, G] bool, False for a missing or filtered completion (default: all valid).
    lengths:       [P, G] response lengths in tokens (default: unknown, None).
    response_mask: [P, G, T] bool, token-level, for estimators that ask for it.
    logprobs:      [P, G, T] rollout (behaviour) log-probs of the sampled tokens.
    entropy:       [P, G, T] token entropy of the rollout policy.
    greedy_rewards: [P] reward of each prompt's greedy completion (only for estimators that
                   register ``needs=("greedy_rewards",)``, e.g. ReMax: the loop then produces it).
    ref_logprobs:  [P, G, T] log-probs of the sampled tokens under the frozen reference policy (for
                   estimators that need ``ref_logprobs``: REINFORCE++'s KL in the reward).
    """

    rewards: torch.Tensor
    valid: torch.Tensor | None = None
    lengths: torch.Tensor | None = None
    response_mask: torch.Tensor | None = None
    logprobs: torch.Tensor | None = None
    entropy: torch.Tensor | None = None
    greedy_rewards: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.rewards.dim() != 2:
            raise ValueError(f"rewards must be [P, G], got shape {tuple(self.rewards.shape)}")
        self.rewards = self.rewards.float()
        if self.valid is None:
            self.valid = torch.ones_like(self.rewards, dtype=torch.bool)
        self.valid = self.valid.bool()
        if self.valid.shape == self.rewards.shape:
            self.rewards = self.rewards.masked_fill(~self.valid, 0.0)
        shape = self.rewards.shape
        for name in ("valid", "lengths"):
            value = getattr(self, name)
            if value is not None and value.shape != shape:
                raise ValueError(
                    f"{name} must have the shape of rewards {tuple(shape)}, got {tuple(value.shape)}"
                )
        for name in ("response_mask", "logprobs", "entropy", "ref_logprobs"):
            value = getattr(self, name)
            if value is not None and (value.dim() != 3 or value.shape[:2] != shape):
                raise ValueError(
                    f"{name} must be [P, G, T] with [P, G] = {tuple(shape)}, got {tuple(value.shape)}"
                )
        if self.greedy_rewards is not None and self.greedy_rewards.shape != shape[:1]:
            raise ValueError(
                f"greedy_rewards must be [P] = {tuple(shape[:1])}, got {tuple(self.greedy_rewards.shape)}"
            )

    @property
    def num_prompts(self) -> int:
        return self.rewards.shape[0]

    @property
    def group_size(self) -> int:
        return self.rewards.shape[1]


@dataclass
class TrainingSignals:
    """What the loop measures and a dynamic estimator may read (e.g. FADE's entropy schedule).

    entropy is the rollout policy's mean token entropy on this step's batch; initial_entropy the
    same at step 0. batch_pass_rate is the fraction of correct completions in this batch.

    diagnostics is the way back: an estimator writes what it wants logged there (FADE's alpha
    and delta), and the loop logs each entry every step as ``estimator/<key>``.

    state is a stateful estimator's own state (an instance of the dataclass it registered with
    ``state=``), kept by the caller from one step to the next and checkpointed by the loop. When
    it is None, the estimator's call starts a fresh one here.
    """

    step: int = 0
    total_steps: int = 1
    batch_pass_rate: float | None = None
    entropy: float | None = None
    initial_entropy: float | None = None
    diagnostics: dict[str, float] = field(default_factory=dict)
    state: Any = None


@dataclass
class NoParams:
    """For estimators without hyperparameters."""


EstimatorFn = Callable[[AdvantageBatch, "TrainingSignals | None", Any], torch.Tensor]
TrainsFn = Callable[[AdvantageBatch, Any], torch.Tensor]


@dataclass(frozen=True)
class Estimator:
    """A registered estimator: call it as ``est(batch, signals=None, **params)``."""

    name: str
    fn: EstimatorFn
    params: type
    description: str
    source: str
    token_level: bool = False
    # Optional AdvantageBatch fields the loop must fill in, or a function of the params giving them.
    needs: tuple[str, ...] | Callable[[Any], tuple[str, ...]] = ()
    state: type | None = None  # dataclass of the state it carries across steps (module docstring)
    trains: TrainsFn | None = None  # which samples enter the update; None: every valid one
    extra_samples: int = 0  # completions sampled per prompt beyond the group size G
    version: str = "1"  # bumped by its author when what it computes changes on purpose

    @property
    def identity(self) -> str:
        """Version and source hash (``code_identity``): part of every run's identity."""
        return code_identity(self.fn, self.version)

    def make_params(self, overrides: Mapping[str, Any] | None = None) -> Any:
        """The hyperparameters dataclass with ``overrides`` applied (``build_params``)."""
        return build_params(self.params, overrides, f"estimator '{self.name}'")

    def required(self, **params: Any) -> tuple[str, ...]:
        """The optional AdvantageBatch fields this estimator reads with these hyperparameters."""
        return tuple(self.needs(self.make_params(params))) if callable(self.needs) else self.needs

    def new_state(self) -> Any:
        """A fresh state for a stateful estimator (its step-0 values); None for a stateless one."""
        return None if self.state is None else self.state()

    def load_state(self, saved: Mapping[str, Any] | None) -> Any:
        """The state from its ``dataclasses.asdict`` form (as checkpoints hold it)."""
        return None if self.state is None or saved is None else self.state(**saved)

    def selected(self, batch: AdvantageBatch, **params: Any) -> torch.Tensor:
        """[P, G] bool: the samples that enter the update (valid, and kept by ``trains``)."""
        return self._kept(batch, self.make_params(params))

    def _kept(self, batch: AdvantageBatch, params: Any) -> torch.Tensor:
        return batch.valid if self.trains is None else batch.valid & self.trains(batch, params).bool()

    def __call__(
        self, batch: AdvantageBatch, signals: TrainingSignals | None = None, **params: Any
    ) -> torch.Tensor:
        made = self.make_params(params)
        if self.state is not None:
            signals = signals if signals is not None else TrainingSignals()
            if signals.state is None:
                signals.state = self.new_state()
        advantages = self.fn(batch, signals, made)
        expected = tuple(batch.rewards.shape)
        if tuple(advantages.shape[:2]) != expected or advantages.dim() not in (2, 3):
            raise ValueError(
                f"estimator '{self.name}' returned shape {tuple(advantages.shape)}, "
                f"expected {expected} or {expected + ('T',)}"
            )
        # Invalid and left-out completions carry no gradient, whatever the formula made of them.
        kept = self._kept(batch, made)
        return advantages.masked_fill(~(kept if advantages.dim() == 2 else kept.unsqueeze(-1)), 0.0)


def import_folder(package: str, path: list[str]) -> None:
    """Import every module of a package's folder: how estimators/, losses/ and tasks/ register
    what they hold (a new entry is a new file; there is no list to keep)."""
    for module in pkgutil.iter_modules(path):
        importlib.import_module(f"{package}.{module.name}")


class Registry(dict):
    """Name -> entry, for every kind of plug-in (estimators here, policy losses in
    harness/losses): one shape, one error for an unknown name, one way to register for a while."""

    def __init__(self, kind: str, plural: str) -> None:
        super().__init__()
        self.kind, self.plural = kind, plural

    def add(self, name: str, entry: Any) -> None:
        if name in self:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self[name] = entry

    def names(self) -> list[str]:
        return sorted(self)

    def entry(self, name: str) -> Any:
        """The entry registered as ``name``; a KeyError naming the closest name and the choices."""
        if name in self:
            return self[name]
        close = difflib.get_close_matches(str(name), self.names(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise KeyError(
            f"unknown {self.kind} '{name}'{hint}; registered {self.plural}: {', '.join(self.names())}"
        )

    @contextlib.contextmanager
    def temporary(self) -> Iterator[None]:
        """Entries added inside the block are removed after it (tests: register, run, forget)."""
        before = set(self)
        try:
            yield
        finally:
            for name in set(self) - before:
                del self[name]


_REGISTRY: Registry = Registry("estimator", "estimators")


def register(
    name: str,
    *,
    params: type = NoParams,
    source: str,
    description: str | None = None,
    token_level: bool = False,
    needs: tuple[str, ...] | Callable[[Any], tuple[str, ...]] = (),
    state: type | None = None,
    trains: TrainsFn | None = None,
    extra_samples: int = 0,
    version: str = "1",
) -> Callable[[EstimatorFn], EstimatorFn]:
    """Register ``fn(batch, signals, params) -> advantages`` under ``name``.

    ``params`` is a dataclass whose fields (with the paper's defaults) become config keys;
    ``description`` defaults to the first line of the function's docstring. ``state``, ``trains``
    and ``extra_samples`` are described in the module docstring; ``version`` is the author's own
    (runs are told apart by it and by a hash of the source, ``code_identity``).
    """
    if not dataclasses.is_dataclass(params):
        raise TypeError(f"params of estimator '{name}' must be a dataclass, got {params!r}")
    if state is not None and not dataclasses.is_dataclass(state):
        raise TypeError(f"state of estimator '{name}' must be a dataclass, got {state!r}")
    if extra_samples < 0:
        raise ValueError(f"extra_samples of estimator '{name}' must be >= 0, got {extra_samples}")

    def decorator(fn: EstimatorFn) -> EstimatorFn:
        doc = inspect.getdoc(fn) or ""
        _REGISTRY.add(
            name,
            Estimator(
                name=name,
                fn=fn,
                params=params,
                description=description or (doc.splitlines()[0] if doc else ""),
                source=source,
                token_level=token_level,
                needs=needs if callable(needs) else tuple(needs),
                state=state,
                trains=trains,
                extra_samples=extra_samples,
                version=version,
            ),
        )
        return fn

    return decorator


def temporary() -> contextlib.AbstractContextManager[None]:
    """Estimators registered inside the block are forgotten after it (tests: register, run, forget)."""
    return _REGISTRY.temporary()


def names() -> list[str]:
    """The registered estimator names, sorted."""
    return _REGISTRY.names()


def get(name: str) -> Estimator:
    """The estimator registered as ``name``; a clear error naming the valid choices otherwise."""
    return _REGISTRY.entry(name)
