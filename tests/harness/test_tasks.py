import json
import time
import warnings

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from advbench.harness.config import ConfigError, TaskConfig, load
from advbench.harness.tasks import ReasoningGymTask

PARAMS = {
    "min_terms": 2,
    "max_terms": 2,
    "min_digits": 1,
    "max_digits": 1,
    "operators": ["+"],
    "allow_parentheses": False,
    "allow_negation": False,
}


def arithmetic(tmp_path, **changes) -> ReasoningGymTask:
    fields = {
        "name": "arithmetic",
        "dataset": "basic_arithmetic",
        "params": dict(PARAMS),
        "template": "{expression}=",
        "train_size": 200,
        "eval_size": 20,
        **changes,
    }
    cfg = TaskConfig(**fields)
    return ReasoningGymTask(cfg, tmp_path)


def countdown_config(**changes) -> TaskConfig:
    """The shipped countdown task (configs/task/countdown.yaml), small."""
    (cfg,) = load(["task=countdown"])
    fields = {**cfg.task.__dict__, "train_size": 20, "eval_size": 5}
    return TaskConfig(**{**fields, **changes})


def test_train_and_eval_prompts_are_disjoint_and_cached(tmp_path):
    task = arithmetic(tmp_path)
    train, evals = task.prompts("train"), task.prompts("eval")
    assert len(evals) == 20 and 0 < len(train) <= 200
    assert not {p.text for p in train} & {p.text for p in evals}
    assert list(tmp_path.glob("tasks/basic_arithmetic-*.json"))
    again = arithmetic(tmp_path)  # from the cache: the same items
    assert [p.text for p in again.prompts("eval")] == [p.text for p in evals]


def test_prompts_draw_by_seed(tmp_path):
    task = arithmetic(tmp_path)
    assert [p.text for p in task.prompts("train", 5, seed=1)] == [
        p.text for p in task.prompts("train", 5, seed=1)
    ]
    assert [p.text for p in task.prompts("train", 5, seed=1)] != [
        p.text for p in task.prompts("train", 5, seed=2)
    ]


def test_scores_with_reasoning_gym(tmp_path):
    task = arithmetic(tmp_path)
    prompt = task.prompts("eval")[0]
    assert prompt.text.endswith("=")
    right = task.score(prompt, f" {prompt.answer} ")
    wrong = task.score(prompt, str(int(prompt.answer) + 1))
    assert (right.reward, right.correct) == (1.0, True)
    assert (wrong.reward, wrong.correct) == (0.0, False)


def test_tagged_answers_and_partial_credit(tmp_path):
    cfg = countdown_config(answer_format="tagged")
    task = ReasoningGymTask(cfg, tmp_path)
    prompt = task.prompts("eval")[0]
    assert task.score(prompt, f"think... <answer>{prompt.answer}</answer>").correct
    partial = task.score(prompt, "<answer>1+1</answer>")  # a wrong expression: countdown gives partial credit
    assert not partial.correct and 0 < partial.reward < 1
    binary = ReasoningGymTask(TaskConfig(**{**cfg.__dict__, "reward": "binary"}), tmp_path)
    assert binary.score(prompt, "<answer>1+1</answer>").reward == 0.0
    # the verifier compiles the text: "(1, 2)(3)" would warn on the user's terminal; scored quietly
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not task.score(prompt, "<answer>(1, 2)(3)</answer>").correct
    assert not [w for w in caught if issubclass(w.category, SyntaxWarning)]


def test_a_failing_verifier_costs_a_zero_not_the_run(tmp_path):
    task = arithmetic(tmp_path)
    prompt = task.prompts("eval")[0]
    task._score_fn = lambda answer, entry: 1 / 0
    score = task.score(prompt, prompt.answer)
    assert (score.reward, score.correct, score.error) == (0.0, False, True)


@pytest.mark.parametrize(
    "verifier",
    [
        lambda answer, entry: time.sleep(60),  # hangs in a sleep
        lambda answer, entry: [None for _ in iter(int, 1)],  # hangs in a Python loop
        lambda answer, entry: float("nan"),  # gives no number
        lambda answer, entry: "not a number",
        lambda answer, entry: (_ for _ in ()).throw(MemoryError()),
    ],
    ids=["sleep", "loop", "nan", "text", "memory-error"],
)
def test_a_hanging_or_broken_verifier_costs_a_zero_within_its_time_limit(tmp_path, verifier):
    task = ReasoningGymTask(TaskConfig(eval_size=4, train_size=20, verifier_timeout=0.3), tmp_path)
    prompt = task.prompts("eval")[0]
    task._score_fn = verifier
    start = time.perf_counter()
    score = task.score(prompt, prompt.answer)
    assert (score.reward, score.correct, score.error) == (0.0, False, True)
    assert time.perf_counter() - start < 2.0
    task._score_fn = lambda answer, entry: 1.0  # the timer is gone: later samples score normally
    time.sleep(0.4)
    assert task.score(prompt, prompt.answer).correct


def test_a_run_whose_verifier_hangs_on_some_samples_finishes_and_counts_them(fast_overrides, monkeypatch):
    from advbench.harness.loop import train
    from advbench.harness.tasks import ReasoningGymTask as Task

    real = Task.score
    calls = {"n": 0, "hung": 0}

    def sometimes_hangs(self, prompt, completion):
        calls["n"] += 1
        if calls["n"] % 7 == 0:
            calls["hung"] += 1
            self._score_fn, keep = (lambda answer, entry: time.sleep(60)), self._score_fn
            try:
                return real(self, prompt, completion)
            finally:
                self._score_fn = keep
        return real(self, prompt, completion)

    monkeypatch.setattr(Task, "score", sometimes_hangs)
    (cfg,) = load([*fast_overrides, "task.verifier_timeout=0.05"])
    steps = []
    result = train(cfg, on_step=lambda step, metrics: steps.append(metrics))
    assert len(steps) == cfg.trainer.steps and result.summary
    train_errors = sum(m["train/verifier_errors"] for m in steps)
    eval_errors = sum(r.verifier_errors for r in result.evals)
    # every hung sample is counted, in training or in an eval (a sample may be correct by chance: no)
    assert calls["hung"] > 5 and train_errors > 0 and train_errors + eval_errors == calls["hung"]


def test_bad_template_and_dataset_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="task.template"):
        arithmetic(tmp_path, template="{nope}=").prompts("eval")
    with pytest.raises(ConfigError, match="task.dataset"):
        ReasoningGymTask(TaskConfig(dataset="no_such_dataset"), tmp_path)


# -- jsonl tasks ----------------------------------------------------------------------------

SAMPLE = "tests/data/gsm8k_sample.jsonl"


def jsonl_task(tmp_path, **overrides):
    from advbench.harness.tasks import JsonlTask

    cfg = {"name": "t", "source": "jsonl", "path": SAMPLE, "eval_size": 8, "train_size": 100, **overrides}
    return JsonlTask(TaskConfig(**cfg))


def test_a_gsm8k_layout_file_splits_and_grades_with_math_verify(tmp_path):
    task = jsonl_task(tmp_path)
    train, evals = task.prompts("train"), task.prompts("eval")
    assert len(evals) == 8 and len(train) == 32 and not {p.text for p in train} & {p.text for p in evals}
    prompt = evals[0]
    assert prompt.answer.isdigit() and "####" not in prompt.answer
    value = int(prompt.answer)
    assert task.score(prompt, f"The answer is {value}.").correct  # math-verify finds the last number
    assert task.score(prompt, f"{value}.0").correct
    assert not task.score(prompt, f"{value + 1}").correct
    same_split = jsonl_task(tmp_path).prompts("eval")
    assert [p.text for p in same_split] == [p.text for p in evals]  # the split is fixed by data_seed


def test_a_math_layout_file_grades_equivalent_forms(tmp_path):
    task = jsonl_task(
        tmp_path, path="tests/data/math_sample.jsonl", question_field="problem", answer_field="solution",
        eval_size=3, answer_format="tagged",
    )  # fmt: skip
    by_answer = {p.answer: p for p in task.prompts("eval") + task.prompts("train")}
    assert set(by_answer) == {"\\frac{3}{4}", "5\\sqrt{2}", "4", "\\frac{1}{4}", "81", "\\frac{5}{2}"}
    half = by_answer["\\frac{3}{4}"]
    assert task.score(half, "<answer>0.75</answer>").correct
    assert task.score(half, "<answer>\\frac{6}{8}</answer>").correct
    assert not task.score(half, "<answer>0.7</answer>").correct
    assert not task.score(half, "no tags at all 0.75").correct  # tagged: the answer must be in tags


def test_exact_and_custom_verifiers(tmp_path):
    exact = jsonl_task(tmp_path, verifier="exact")
    prompt = exact.prompts("eval")[0]
    assert (
        exact.score(prompt, f"  {prompt.answer} ").correct
        and not exact.score(prompt, f"{prompt.answer}.0").correct
    )
    custom = jsonl_task(tmp_path, verifier="tests.harness.test_tasks:half_credit")
    assert custom.score(prompt, "anything").reward == 0.5
    with pytest.raises(ConfigError, match="task.verifier': 'nope:fn' is not math, exact or an importable"):
        jsonl_task(tmp_path, verifier="nope:fn")


def half_credit(answer, item):
    return 0.5


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"question": "q", "answer": "1"}', '{"question": "q2", "answer": 2'], "line 2: not valid JSON"),
        (
            ['{"question": "q", "answer": "1"}', "", '["a", "list"]'],
            "line 3: expected a JSON object, got list",
        ),
        (['{"question": "q", "answer": "1"}', '{"prompt": "q"}'], "line 2: no field 'question'"),
        (['{"question": "q"}'], "line 1: no field 'answer'"),
        (["", "  "], "no problems in the file"),
    ],
)
def test_a_malformed_jsonl_file_is_reported_with_its_line(tmp_path, lines, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as info:
        jsonl_task(tmp_path, path=str(path), eval_size=1)
    assert str(path) in str(info.value) and message in str(info.value)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.just("good"), st.text(max_size=20)), min_size=1, max_size=8))
def test_random_lines_load_or_name_the_first_bad_one(tmp_path_factory, kinds):
    good = '{"question": "q%d", "answer": "%d"}'
    lines = [good % (i, i) if kind == "good" else " ".join(kind.splitlines()) for i, kind in enumerate(kinds)]
    path = tmp_path_factory.mktemp("jsonl") / "random.jsonl"
    path.write_text("\n".join(lines) + "\n")
    from advbench.harness.tasks import read_jsonl

    def bad(line):
        if not line.strip():
            return False
        try:
            item = json.loads(line)
        except ValueError:
            return True
        return not (isinstance(item, dict) and {"question", "answer"} <= set(item))

    first_bad = next((i + 1 for i, line in enumerate(lines) if bad(line)), None)
    if first_bad is None and any(line.strip() for line in lines):
        assert len(read_jsonl(path, "question", "answer")) == sum(1 for line in lines if line.strip())
    else:
        with pytest.raises(ConfigError) as info:
            read_jsonl(path, "question", "answer")
        assert first_bad is None or f"line {first_bad}:" in str(info.value)


def test_every_task_config_loads(tmp_path):
    from advbench.harness.config import group_choices

    for name in group_choices("task"):
        extra = [f"task.path={SAMPLE}"] if name in ("gsm8k", "math", "aime") else []
        (cfg,) = load([f"task={name}", *extra])
        assert cfg.task.name == name


def test_a_run_on_a_jsonl_task(fast_overrides):
    from advbench.harness.loop import train

    (cfg,) = load([*fast_overrides, "task=gsm8k_sample", "rollout.max_new_tokens=4"])
    result = train(cfg)
    assert [e.step for e in result.evals] == [0, 2, 4] and len(result.evals[0].correct) == 16


def test_the_configs_task_sources_are_the_registered_ones():
    import dataclasses

    from advbench.harness import tasks
    from advbench.harness.config import TaskConfig

    (source,) = [f for f in dataclasses.fields(TaskConfig) if f.name == "source"]
    assert sorted(source.metadata["choices"]) == tasks.SOURCES.names() == ["code", "jsonl", "reasoning_gym"]


# -- countdown's scorer without sympy: the same scores as reasoning-gym's -------------------------

COUNTDOWN_ENTRY = {"metadata": {"numbers": [3, 5, 7], "target": 22}}


def countdown_answers():
    """Answers of the kind the fast path takes (integers, + - * /, parentheses, spaces) and beyond it."""
    from hypothesis import strategies as st

    numbers = st.sampled_from(["3", "5", "7", "0", "05", "12", "1_0", "2.5", "x"])
    leaf = numbers | st.builds(lambda s, n: s + n, st.sampled_from(["-", "+", "--"]), numbers)
    expressions = st.recursive(
        leaf,
        lambda inner: st.builds(
            lambda a, op, b, wrap: f"({a}{op}{b})" if wrap else f"{a}{op}{b}",
            inner,
            st.sampled_from(["+", "-", "*", "/", " * ", "//", "**", ""]),
            inner,
            st.booleans(),
        ),
        max_leaves=6,
    )
    # and the tiny model's junk: the prompt's characters ("86:[14, 63, 1, 8]="), sympy's repeated
    # decimals ("1.[3]") and factorials, a tab, a leading space
    junk = st.text(alphabet="0123456789+-*/() x.,[]:=!\t", max_size=14)
    # one power and one factorial at most: sympy computes 12**12**12 and 9!!! in full, and no time
    # limit stops it in C
    return (expressions | junk).filter(lambda answer: answer.count("**") <= 1 and answer.count("!") <= 1)


@given(
    answer=countdown_answers(),
    numbers_from_answer=st.booleans(),
    hit=st.booleans(),
    target=st.integers(-9, 60),
)
@example(answer="7/2*2+3", numbers_from_answer=True, hit=True, target=0)  # exact, not floor, division
@example(answer="(3-5)/(7-7)", numbers_from_answer=True, hit=False, target=0)  # sympy's zoo
@settings(max_examples=800, deadline=None)
def test_countdown_fast_score_is_reasoning_gyms(answer, numbers_from_answer, hit, target):
    """Entries made to reach every branch: the answer's own numbers, and its own value (by sympy) as
    the target, or not."""
    from reasoning_gym.games.countdown import _extract_ints
    from sympy.parsing.sympy_parser import parse_expr

    from advbench.harness.tasks.reasoning_gym import FAST_SCORERS, reasoning_gym_scorer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        if hit:
            try:
                value = float(parse_expr(answer))
                target = int(value) if value == int(value) else target
            except Exception:
                pass
        numbers = _extract_ints(answer) if numbers_from_answer else [3, 5, 7]
        entry = {"metadata": {"numbers": numbers, "target": target}}
        expected = reasoning_gym_scorer("countdown")(answer, entry)
        assert FAST_SCORERS["countdown"](answer, entry) == expected


@pytest.mark.parametrize(
    "answer, score",
    [
        ("3*5+7", 1.0),  # right
        ("7 + 5*3", 1.0),  # spaces, precedence
        ("((3)*5)+7", 1.0),
        ("3*(5+7)", 0.05),  # the numbers, a wrong value
        ("3+5", 0.05),  # not every number
        ("3/0+5+7", 0.01),  # sympy's zoo cannot be a float: reasoning-gym's 0.01, through its own path
        ("05+3+7", 0.01),  # a leading zero does not parse
        ("3*5+[7", 0.01),  # an unclosed bracket: sympy cannot tokenize it
        ("3*5+7=", 0.01),  # no expression
        (" 3*5+7!", 0.05),  # a factorial: sympy parses and computes it
        ("3*5+7.[3]", 0.05),  # 7.333...: sympy's repeated decimal, parsed; a wrong value
        ("(3*5, 7)", 0.01),  # a tuple compiles, but is no number
        ("", 0.01),
        (None, 0.01),
    ],
)
def test_countdown_fast_score_by_hand(answer, score):
    from advbench.harness.tasks.reasoning_gym import FAST_SCORERS, reasoning_gym_scorer

    assert FAST_SCORERS["countdown"](answer, COUNTDOWN_ENTRY) == score
    assert reasoning_gym_scorer("countdown")(answer, COUNTDOWN_ENTRY) == score


def test_countdown_task_scores_its_real_answers_as_reasoning_gym_does(tmp_path):
    """Every eval prompt's gold answer and a wrong variant of it, through the task."""
    from advbench.harness.tasks.reasoning_gym import reasoning_gym_scorer

    task = ReasoningGymTask(countdown_config(eval_size=64), tmp_path)
    slow = reasoning_gym_scorer("countdown")
    for prompt in task.prompts("eval"):
        for answer in (prompt.answer, prompt.answer.replace("+", "-", 1), prompt.answer[:-1]):
            assert task._score_fn(answer, prompt.entry) == slow(answer, prompt.entry), answer
        assert task.score(prompt, prompt.answer).correct
