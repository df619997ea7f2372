import pytest

from harness.config import ConfigError, TaskConfig
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


def test_bad_template_and_dataset_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="task.template"):
        arithmetic(tmp_path, template="{nope}=").prompts("eval")
    with pytest.raises(ConfigError, match="task.dataset"):
        ReasoningGymTask(TaskConfig(dataset="no_such_dataset"), tmp_path)
