"""reasoning-gym's procedural datasets as tasks (their items cached on disk)."""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import operator
import os
import re
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from advbench.harness.config import ConfigError, TaskConfig
from advbench.harness.files import replaced
from advbench.harness.tasks.base import (
    Prompt,
    Task,
    source,
)


@source("reasoning_gym")
class ReasoningGymTask(Task):
    """A reasoning-gym procedural dataset, scored by reasoning-gym's own ``score_answer``."""

    def __init__(self, cfg: TaskConfig, cache_dir: str | os.PathLike[str]) -> None:
        super().__init__(cfg)
        try:
            self._score_fn = FAST_SCORERS.get(cfg.dataset) or reasoning_gym_scorer(cfg.dataset)
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
        with replaced(path) as staging:  # a concurrent run never reads half a file
            staging.write_text(json.dumps(splits))
        return splits

    def _render(self, entry: dict[str, Any]) -> Prompt:
        text = self._format({**entry.get("metadata", {}), "question": entry["question"]})
        return Prompt(text=text, answer=str(entry["answer"]), entry=entry)


# -- faster paths to reasoning-gym's own scores --------------------------------------------------
# A scorer here returns exactly what reasoning-gym's score_answer returns for every answer (a test
# compares them on generated and sampled answers); it only takes a cheaper road where that is safe.


@functools.cache
def reasoning_gym_scorer(dataset: str) -> Callable[[str | None, dict[str, Any]], float]:
    """reasoning-gym's own score_answer for ``dataset`` (ValueError when it has none)."""
    import reasoning_gym

    return reasoning_gym.get_score_answer_fn(dataset)


_ARITHMETIC = re.compile(r"[0-9+\-*/() ]+")
_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _exact_value(node: ast.AST) -> Fraction:
    """The exact value of integers under + - * / and signs; ValueError for anything else (//, **,
    names, calls), ZeroDivisionError for a division by zero (sympy's zoo and nan decide those)."""
    if isinstance(node, ast.Constant) and type(node.value) is int and node.value < 10**12:
        return Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
        value = _exact_value(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_exact_value(node.left), _exact_value(node.right))
    raise ValueError(f"not plain arithmetic: {ast.dump(node)}")


def _countdown_score(answer: str | None, entry: dict[str, Any]) -> float:
    """reasoning-gym's countdown score_answer (0.01 no or unparsable answer, 0.05 wrong, 1.0 right)
    without sympy for answers written in integers, + - * /, parentheses and spaces: sympy parses
    those with Python's own grammar (a text Python cannot parse, sympy cannot either: 0.01) and
    computes them exactly, as Fraction does here. ~0.3 ms of sympy per answer was half a countdown
    eval (docs/results/performance.md). Other answers: 0.01 where sympy cannot even parse them
    (_sympy_cannot_parse), else reasoning-gym's own score."""
    from reasoning_gym.games.countdown import _extract_ints

    if answer is None or not answer.strip():
        return 0.01
    if not _ARITHMETIC.fullmatch(answer):
        return 0.01 if _sympy_cannot_parse(answer) else reasoning_gym_scorer("countdown")(answer, entry)
    try:
        tree = ast.parse(answer.strip(), mode="eval")  # sympy strips the text too
    except SyntaxError:
        return 0.01
    except (RecursionError, MemoryError):
        return reasoning_gym_scorer("countdown")(answer, entry)
    try:
        value = float(_exact_value(tree.body))
    except (ValueError, ZeroDivisionError, RecursionError, OverflowError):
        return reasoning_gym_scorer("countdown")(answer, entry)
    if sorted(_extract_ints(answer)) != sorted(entry["metadata"]["numbers"]):
        return 0.05
    target = entry["metadata"]["target"]
    # np.isclose(value, target, atol=1e-6) as numpy defines it (rtol 1e-5), for two finite numbers
    return 1.0 if abs(value - target) <= 1e-6 + 1e-5 * abs(target) else 0.05


def _sympy_cannot_parse(answer: str) -> bool:
    """Whether sympy's ``parse_expr(answer)`` fails before it evaluates anything (reasoning-gym then
    scores 0.01): the text as parse_expr rewrites it (its standard transformations) does not tokenize
    or does not compile, the step parse_expr's ``eval`` takes first. Most of the tiny model's wrong
    countdown answers are of this kind ("8 ]12 3 + 8", "19=3 *17": 40% of one eval's answers), and
    this check costs a fraction of parse_expr's evaluation (docs/results/performance.md).

    Only for text without letters: the rewriting of names (auto_symbol, lambda) depends on the
    globals parse_expr passes; with no names it depends on nothing else. ``False`` means "not
    known": the caller asks reasoning-gym."""
    from sympy.parsing.sympy_parser import standard_transformations, stringify_expr

    if not answer.isascii() or any(char.isalpha() or char == "_" for char in answer):
        return False
    try:
        code = stringify_expr(answer, {}, {}, standard_transformations)
    except Exception:  # tokenize's errors (an unclosed bracket), as inside reasoning-gym's try
        return True
    try:
        # eval() of a string drops its leading spaces and tabs before compiling it; compile() does not
        compile(code.lstrip(" \t"), "<string>", "eval")
    except Exception:  # SyntaxError mostly; whatever compile raises, eval raises in reasoning-gym's try
        return True
    return False


FAST_SCORERS: dict[str, Callable[[str | None, dict[str, Any]], float]] = {"countdown": _countdown_score}
