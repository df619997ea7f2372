"""countdown's verifier: reasoning-gym's score_answer (sympy) against advbench's fast path on one
eval's worth of answers (256 prompts x 8), written as the tiny model gets them wrong: its gold
answers with characters replaced, dropped or added from the prompt's alphabet.

Run:  pytest tests/benchmarks/test_verifier.py --benchmark-enable
The numbers are in docs/results/performance.md ("countdown's verifier without sympy").
"""

import random
import warnings

import pytest

from advbench.harness.config import load
from advbench.harness.tasks import ReasoningGymTask
from advbench.harness.tasks.reasoning_gym import FAST_SCORERS, reasoning_gym_scorer

# the characters of countdown's prompts ("86:[14, 63, 1, 8]="), which the tiny model writes too
ALPHABET = "0123456789+-*/() []:=,"


def garble(answer: str, rng: random.Random) -> str:
    chars = list(answer)
    for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
        at = rng.randrange(len(chars) + 1)
        edit = rng.choice(["replace", "drop", "add"])
        if edit == "add" or not chars:
            chars.insert(at, rng.choice(ALPHABET))
        elif edit == "drop":
            del chars[min(at, len(chars) - 1)]
        else:
            chars[min(at, len(chars) - 1)] = rng.choice(ALPHABET)
    return "".join(chars)


@pytest.fixture(scope="module")
def answers(tmp_path_factory):
    (cfg,) = load(["task=countdown"])
    task = ReasoningGymTask(cfg.task, tmp_path_factory.mktemp("cache"))
    rng = random.Random(0)
    return [(garble(p.answer, rng), p.entry) for p in task.prompts("eval") for _ in range(8)]


def score_all(scorer, answers):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        return [scorer(answer, entry) for answer, entry in answers]


@pytest.mark.benchmark(group="countdown-verifier")
@pytest.mark.parametrize("scorer", ["reasoning_gym", "fast"])
def test_countdown_verifier_speed(benchmark, answers, scorer):
    function = FAST_SCORERS["countdown"] if scorer == "fast" else reasoning_gym_scorer("countdown")
    scores = benchmark.pedantic(score_all, args=(function, answers), rounds=3)
    assert scores == score_all(reasoning_gym_scorer("countdown"), answers)
    assert {0.05, 1.0} <= set(scores)  # right and wrong answers both present
    if benchmark.stats:
        benchmark.extra_info["answers_per_second"] = len(answers) / benchmark.stats.stats.median
