"""What every task shares: prompts, scores, the time-limited verifier call, the registry of
task sources, and reading data files."""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advbench.estimators.registry import Registry
from advbench.harness.config import ConfigError, TaskConfig

CORRECT = 1.0  # the score of a correct completion
PROJECT_DIR = Path(__file__).resolve().parents[2]  # the repository, in a checkout


@dataclass(frozen=True)
class Prompt:
    text: str  # what the model is given
    answer: str  # the reference answer (for demonstrations and diversity metrics)
    entry: dict[str, Any] = field(repr=False, hash=False, compare=False)  # the verifier's item


class VerifierTimeout(Exception):
    """A verifier ran past task.verifier_timeout."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise VerifierTimeout in this block after ``seconds`` (POSIX, main thread; elsewhere no limit).

    A real-time interval timer interrupts Python code, including a verifier stuck in a loop. Code
    that blocks in C without returning to the interpreter is out of its reach: verifiers that can
    do that (executing model code) run in a separate process instead.
    """
    usable = (
        seconds > 0 and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def expire(signum, frame):
        raise VerifierTimeout(f"verifier ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Score:
    reward: float  # what the estimator sees (raw score or binary, by task.reward)
    correct: bool  # score == 1.0
    error: bool = False  # the verifier raised, hung or gave no number; the sample scored 0
    rejected: bool = False  # code: the program hung, crashed or hit a sandbox limit (scored 0)


class Task:
    """A named source of prompts with a verifier: ``prompts(split)``, ``score(prompt, completion)``.

    Subclasses fill ``self._splits`` ({"train": items, "eval": items}), ``_render(item) -> Prompt``
    and ``_score_fn(answer, item) -> float``; scoring, its time limit and its errors are here.
    """

    def __init__(self, cfg: TaskConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._splits: dict[str, list[dict[str, Any]]] = {}

    def _render(self, entry: dict[str, Any]) -> Prompt:
        raise NotImplementedError

    def tags(self) -> dict[str, str]:
        """What the run should record about how this task scores (an MLflow tag each)."""
        return {}

    def _format(self, fields: dict[str, Any]) -> str:
        """The prompt text: task.template filled with an item's fields; a missing field is a ConfigError."""
        try:
            return self.cfg.template.format(**fields)
        except (KeyError, IndexError) as exc:
            source = self.cfg.path or self.cfg.dataset
            raise ConfigError(
                f"config key 'task.template': '{self.cfg.template}' names {exc}, which items of "
                f"'{source}' lack; available: {', '.join(sorted(fields))}"
            ) from None

    def _score_fn(self, answer: str | None, entry: dict[str, Any]) -> float:
        raise NotImplementedError

    def prompts(self, split: str, n: int | None = None, seed: int | None = None) -> list[Prompt]:
        """The prompts of ``split`` (train | eval): all, or ``n`` drawn without replacement by ``seed``."""
        if split not in self._splits:
            raise ValueError(f"unknown split '{split}'; splits: {', '.join(self._splits)}")
        items = self._splits[split]
        if n is not None:
            items = random.Random(seed).sample(items, min(n, len(items)))
        return [self._render(item) for item in items]

    # -- verifier --------------------------------------------------------------------------

    def demonstration(self, prompt: Prompt) -> str:
        """The completion a supervised warm start is trained to produce."""
        return prompt.answer if self.cfg.answer_format == "plain" else f"<answer>{prompt.answer}</answer>"

    def extract_answer(self, completion: str) -> str | None:
        if self.cfg.answer_format == "plain":
            return completion.strip()
        from reasoning_gym.utils import extract_answer

        return extract_answer(completion)

    def score_batch(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[Score]:
        """Scores of completion i for prompt i (tasks whose verifier runs elsewhere do them in parallel)."""
        return [self.score(p, c) for p, c in zip(prompts, completions, strict=True)]

    def score(self, prompt: Prompt, completion: str) -> Score:
        """Verify one completion. A verifier that raises, returns no finite number, or takes longer
        than ``task.verifier_timeout`` seconds costs the sample a zero and a counted error, never the run."""
        try:
            # countdown's verifier compiles the model's text: "(1, 2)(3)" warns "'tuple' object is not
            # callable" on the user's terminal, about text that is only being scored
            with time_limit(self.cfg.verifier_timeout), warnings.catch_warnings():
                warnings.simplefilter("ignore", SyntaxWarning)
                value = float(self._score_fn(self.extract_answer(completion), prompt.entry))
        except Exception:  # VerifierTimeout included
            return Score(reward=0.0, correct=False, error=True)
        if not math.isfinite(value):
            return Score(reward=0.0, correct=False, error=True)
        correct = value == CORRECT
        return Score(reward=value if self.cfg.reward == "raw" else float(correct), correct=correct)


def resolve_data_path(path: str | None, key: str) -> Path:
    """A data file: as given (absolute, or relative to the working directory), else in the project."""
    candidates = [Path(path).expanduser(), PROJECT_DIR / path] if path else []
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigError(f"config key '{key}': no file '{path}' (looked in {Path.cwd()} and {PROJECT_DIR})")


def read_jsonl(path: Path, *fields: str) -> list[dict[str, Any]]:
    """The objects of a JSONL file; a bad line is a ConfigError with the file and line number."""
    items = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(
                    f"{path}, line {number}: not valid JSON: {exc.msg} (column {exc.colno})"
                ) from None
            if not isinstance(item, dict):
                raise ConfigError(f"{path}, line {number}: expected a JSON object, got {type(item).__name__}")
            missing = [f for f in fields if f not in item]
            if missing:
                raise ConfigError(
                    f"{path}, line {number}: no field '{missing[0]}' (task.question_field / "
                    f"task.answer_field); the line has: {', '.join(item) or 'nothing'}"
                )
            items.append(item)
    if not items:
        raise ConfigError(f"{path}: no problems in the file")
    return items


SOURCES = Registry("task source", "task sources")  # task.source -> its Task class


def source(name: str):
    """Register a Task class as the task source ``name`` (``task.source=name``)."""

    def decorator(cls: type[Task]) -> type[Task]:
        SOURCES.add(name, cls)
        return cls

    return decorator


def seeded_split(items: list[Any], eval_size: int, seed: int) -> tuple[list[Any], list[Any]]:
    """(eval, train): ``eval_size`` items drawn by ``seed``, the rest in the same drawn order."""
    order = random.Random(seed).sample(range(len(items)), len(items))
    return [items[i] for i in order[:eval_size]], [items[i] for i in order[eval_size:]]


def build(cfg: TaskConfig, cache_dir: str | os.PathLike[str]) -> Task:
    """The task a config names."""
    return SOURCES.entry(cfg.source)(cfg, cache_dir)
