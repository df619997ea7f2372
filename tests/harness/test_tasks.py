import time

import pytest

from harness.config import ConfigError, TaskConfig, load
from harness.tasks import ReasoningGymTask

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
    cfg = TaskConfig(
        name="countdown",
        dataset="countdown",
        template="{target}:{numbers}=",
        answer_format="tagged",
        params={
            "min_numbers": 3,
            "max_numbers": 3,
            "min_value": 1,
            "max_value": 20,
            "min_target": 10,
            "max_target": 60,
        },
        train_size=20,
        eval_size=5,
    )
    task = ReasoningGymTask(cfg, tmp_path)
    prompt = task.prompts("eval")[0]
    assert task.score(prompt, f"think... <answer>{prompt.answer}</answer>").correct
    partial = task.score(prompt, "<answer>1+1</answer>")  # a wrong expression: countdown gives partial credit
    assert not partial.correct and 0 < partial.reward < 1
    binary = ReasoningGymTask(TaskConfig(**{**cfg.__dict__, "reward": "binary"}), tmp_path)
    assert binary.score(prompt, "<answer>1+1</answer>").reward == 0.0


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
    from harness.loop import train
    from harness.tasks import ReasoningGymTask as Task

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
