"""Tasks: named sources of prompts with a verifier.

A task gives ``prompts(split, n, seed)`` and ``score(prompt, completion) -> float``; a completion
is correct (for pass@k) when its score is exactly 1.0, whatever partial credit the verifier gives.

reasoning-gym tasks generate their items from ``task.data_seed``: the eval split is generated
first and any training item whose prompt text also appears in it is dropped, so eval prompts
never overlap training prompts. Generated splits are cached on disk (countdown costs ~13 ms an item).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import signal
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from harness.config import ConfigError, TaskConfig

CORRECT = 1.0  # the score of a correct completion


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


class ReasoningGymTask:
    """A reasoning-gym procedural dataset, scored by reasoning-gym's own ``score_answer``."""

    def __init__(self, cfg: TaskConfig, cache_dir: str | os.PathLike[str]) -> None:
        import reasoning_gym

        self.cfg = cfg
        self.name = cfg.name
        try:
            self._score_fn = reasoning_gym.get_score_answer_fn(cfg.dataset)
        except Exception:
            raise ConfigError(
                f"config key 'task.dataset': unknown reasoning-gym dataset '{cfg.dataset}'"
            ) from None
        self._splits = self._load_splits(Path(cache_dir).expanduser() / "tasks")

    # -- data ------------------------------------------------------------------------------

    def _generate(self, size: int, seed: int) -> list[dict[str, Any]]:
        import reasoning_gym

        params = OmegaConf.to_container(OmegaConf.create(self.cfg.params)) if self.cfg.params else {}
        try:
            dataset = reasoning_gym.create_dataset(self.cfg.dataset, size=size, seed=seed, **params)
        except (TypeError, ValueError, AssertionError) as exc:
            raise ConfigError(
                f"config key 'task.params': reasoning-gym '{self.cfg.dataset}' refused them: {exc}"
            ) from None
        # A JSON round trip makes cached and freshly generated items identical (tuples -> lists).
        return json.loads(json.dumps([dataset[i] for i in range(size)], default=str))

    def _load_splits(self, cache: Path) -> dict[str, list[dict[str, Any]]]:
        key = {
            k: v
            for k, v in OmegaConf.to_container(OmegaConf.structured(self.cfg)).items()
            if k in ("dataset", "params", "train_size", "eval_size", "data_seed")
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        path = cache / f"{self.cfg.dataset}-{digest}.json"
        if path.is_file():
            return json.loads(path.read_text())
        eval_items = self._generate(self.cfg.eval_size, self.cfg.data_seed)
        eval_questions = {item["question"] for item in eval_items}
        # The train seed is derived from data_seed so the two splits are different draws.
        train_items = [
            item
            for item in self._generate(self.cfg.train_size, self.cfg.data_seed + 1_000_003)
            if item["question"] not in eval_questions
        ]
        splits = {"train": train_items, "eval": eval_items}
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=cache, delete=False, suffix=".tmp") as tmp:
            json.dump(splits, tmp)
        os.replace(tmp.name, path)  # atomic: a concurrent run never reads half a file
        return splits

    def _render(self, entry: dict[str, Any]) -> Prompt:
        fields = {**entry.get("metadata", {}), "question": entry["question"]}
        try:
            text = self.cfg.template.format(**fields)
        except (KeyError, IndexError) as exc:
            raise ConfigError(
                f"config key 'task.template': '{self.cfg.template}' names {exc}, which items of "
                f"'{self.cfg.dataset}' lack; available: {', '.join(sorted(fields))}"
            ) from None
        return Prompt(text=text, answer=str(entry["answer"]), entry=entry)

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

    def score(self, prompt: Prompt, completion: str) -> Score:
        """Verify one completion. A verifier that raises, returns no finite number, or takes longer
        than ``task.verifier_timeout`` seconds costs the sample a zero and a counted error, never the run."""
        try:
            with time_limit(self.cfg.verifier_timeout):
                value = float(self._score_fn(self.extract_answer(completion), prompt.entry))
        except Exception:  # VerifierTimeout included
            return Score(reward=0.0, correct=False, error=True)
        if not math.isfinite(value):
            return Score(reward=0.0, correct=False, error=True)
        correct = value == CORRECT
        return Score(reward=value if self.cfg.reward == "raw" else float(correct), correct=correct)


def build(cfg: TaskConfig, cache_dir: str | os.PathLike[str]) -> ReasoningGymTask:
    """The task a config names (reasoning-gym is the one source so far)."""
    return ReasoningGymTask(cfg, cache_dir)
