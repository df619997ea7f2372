"""Problems with answers from a local JSONL file (GSM8K, MATH, AIME layouts, or your own)."""

from __future__ import annotations

import importlib
import os
from typing import Any

from advbench.harness.config import ConfigError, TaskConfig
from advbench.harness.tasks.base import (
    Prompt,
    Task,
    read_jsonl,
    resolve_data_path,
    seeded_split,
    source,
)


@source("jsonl")
class JsonlTask(Task):
    """Problems with answers from a local JSONL file: GSM8K, MATH and AIME layouts, or your own.

    Each line is a JSON object with ``task.question_field`` and ``task.answer_field``. The reference
    answer is the field itself, the part after "####" (GSM8K), or the last \\boxed{...} (MATH
    solutions). ``task.verifier``: ``math`` grades with math-verify (numbers, fractions, LaTeX;
    the answer is extracted from the whole completion, or from <answer> tags when tagged),
    ``exact`` compares whitespace-normalised strings, ``module:function`` calls your function with
    (extracted answer, item) for a score in [0, 1].
    """

    def __init__(self, cfg: TaskConfig, cache_dir: str | os.PathLike[str] | None = None) -> None:
        super().__init__(cfg)
        self._verifier = self._make_verifier(cfg.verifier)
        items = read_jsonl(resolve_data_path(cfg.path, "task.path"), cfg.question_field, cfg.answer_field)
        if cfg.eval_path:
            evals = read_jsonl(
                resolve_data_path(cfg.eval_path, "task.eval_path"), cfg.question_field, cfg.answer_field
            )
            train = items
        else:
            if len(items) <= cfg.eval_size:
                raise ConfigError(
                    f"config key 'task.eval_size': {cfg.path} has {len(items)} problems, not more than "
                    f"eval_size={cfg.eval_size}; lower it or give task.eval_path"
                )
            evals, train = seeded_split(items, cfg.eval_size, cfg.data_seed)
        questions = {item[cfg.question_field] for item in evals[: cfg.eval_size]}
        train = [item for item in train if item[cfg.question_field] not in questions][: cfg.train_size]
        if not train:
            raise ConfigError(f"config key 'task.path': no training problems left in {cfg.path}")
        self._splits = {"train": train, "eval": evals[: cfg.eval_size]}

    def _make_verifier(self, spec: str):
        if spec in ("math", "exact"):
            return spec
        module, _, function = spec.partition(":")
        try:
            return getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(
                f"config key 'task.verifier': '{spec}' is not math, exact or an importable "
                f"module:function ({type(exc).__name__}: {exc})"
            ) from None

    def _render(self, entry: dict[str, Any]) -> Prompt:
        text = self._format({**entry, "question": entry[self.cfg.question_field]})
        return Prompt(text=text, answer=reference_answer(str(entry[self.cfg.answer_field])), entry=entry)

    def _score_fn(self, answer: str | None, entry: dict[str, Any]) -> float:
        reference = reference_answer(str(entry[self.cfg.answer_field]))
        if answer is None:
            return 0.0
        if self._verifier == "exact":
            return float(" ".join(answer.split()) == " ".join(reference.split()))
        if self._verifier == "math":
            from math_verify import parse, verify

            # math-verify's own time-outs use SIGALRM too: Task.score's time limit covers both calls.
            gold = parse(f"${reference}$", parsing_timeout=None)
            return float(verify(gold, parse(answer, parsing_timeout=None), timeout_seconds=None))
        return float(self._verifier(answer, entry))


def reference_answer(text: str) -> str:
    """The final answer inside a reference: after '####' (GSM8K), the last \\boxed{...} (MATH), or all."""
    if "####" in text:
        return text.rsplit("####", 1)[1].strip().replace(",", "")
    start = text.rfind("\\boxed{")
    if start >= 0:
        depth, i = 0, start + len("\\boxed{") - 1
        for j in range(i, len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                return text[i + 1 : j].strip()
    return text.strip()
