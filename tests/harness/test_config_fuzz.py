"""Random keys, types and values thrown at the config loader: a valid config or one clean ConfigError."""

import dataclasses
import math

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from advbench.harness.config import ConfigError, RunConfig, flatten, load
from advbench.harness.schema import LARGEST_INT

VALID_KEYS = sorted(flatten(RunConfig()))


def text_keys(node, prefix=""):
    """Keys whose field holds text (a str, or str | None), however it is spelt in digits."""
    for field in dataclasses.fields(node):
        value, key = getattr(node, field.name), prefix + field.name
        if dataclasses.is_dataclass(value):
            yield from text_keys(value, key + ".")
        elif isinstance(value, str) or str(field.type).replace(" ", "") in ("str|None", "Optional[str]"):
            yield key


TEXT_KEYS = set(text_keys(RunConfig()))
GROUP_KEYS = ["model", "task", "loss", "rollout"]
ESTIMATOR_KNOBS = [
    "estimator_params.grpo.eps",
    "estimator_params.fade.delta_min",
    "estimator_params.f_grpo.gamma",
    "estimator_params.risk_seeking.beta",
    "estimator_params.nope.x",
    "loss.clip_low",
    "loss.delta_high",
    "loss.aggregation",
    "loss.kl_coef",
]

keys = st.one_of(
    st.sampled_from(VALID_KEYS + GROUP_KEYS + ESTIMATOR_KNOBS),
    st.sampled_from(VALID_KEYS).map(lambda k: k[:-1] + "z"),  # misspelt
    st.sampled_from(VALID_KEYS).map(lambda k: k + ".deeper"),  # a leaf used as a section
    st.text(st.characters(codec="ascii", exclude_characters="="), min_size=1, max_size=12),
)
scalars = st.one_of(
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from(["null", "???", "[]", "{}", "grpo", "cuda", "-1", "0", "1e-9", "[1,2", "'x'", "${oops}"]),
    st.text(max_size=12),
)
values = st.one_of(scalars, st.lists(scalars, max_size=3).map(lambda xs: "[" + ",".join(map(str, xs)) + "]"))
overrides = st.lists(st.tuples(keys, values).map(lambda kv: f"{kv[0]}={kv[1]}"), min_size=1, max_size=4)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(overrides)
def test_random_overrides_give_a_config_or_one_clean_error(items):
    try:
        runs = load(items)
    except ConfigError as exc:
        message = str(exc)
        assert message and "\n\n" not in message and "Traceback" not in message
        assert len(message) < 1500, message
        event("clean ConfigError")
        return
    assert runs and all(isinstance(r, RunConfig) for r in runs)
    for run in runs:  # what is accepted is usable: no inf, nan or overflowing number anywhere
        # (a text key such as cache_dir may hold digits: '2147483648' is a folder name, not a number)
        numbers = [v for k, v in flatten(run).items() if _is_number(v) and k not in TEXT_KEYS]
        assert all(math.isfinite(float(n)) for n in numbers), flatten(run)
        assert all(abs(int(n)) <= LARGEST_INT for n in numbers if n.lstrip("-").isdigit()), flatten(run)
    event("valid config")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip().lower() not in ("true", "false")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(VALID_KEYS), values), min_size=1, max_size=3))
def test_well_formed_keys_with_random_values(pairs):
    """The schema's own keys with any value: the most likely user mistake, wrong type or range."""
    try:
        load([f"{k}={v}" for k, v in pairs])
        event("valid config")
    except ConfigError as exc:
        assert "config" in str(exc) or "override" in str(exc), str(exc)
        event("clean ConfigError")


@pytest.mark.parametrize(
    "item, message",
    [
        ("estimator_params.grpo.eps=0", "eps must be > 0"),
        ("estimator_params.f_grpo.gamma=-0.5", "gamma must be >= 0"),
        ("estimator_params.fade.delta_min=0", "delta_min must be in"),
        ("estimator_params.fade.delta_min=1.5", "delta_min must be in"),
        ("estimator_params.fade.alpha_max=0.5", "alpha_max must be >= 1"),
        ("estimator_params.fade.h_target=0", "h_target must be > 0"),
        ("estimator_params.fade.ema=-0.1", "ema must be in"),
        ("estimator_params.power.alpha=0.5", "alpha must be >= 1"),
        ("estimator_params.asym_grpo.delta=0", "delta must be > 0"),
        ("loss=drpo loss.delta=0", "delta must be > 0"),
        ("rollout.autocast=float16", "rollout.autocast"),
        ("estimator_params.risk_seeking.beta=0", "beta must be nonzero"),
        ("estimator_params.unlikeliness.rank_penalty=2", "rank_penalty must be in [0, 1]"),
        ("estimator_params.w_reinforce.weight=-1", "weight must be >= 0"),
        ("rollout.temperature=-0.7", "must be > 0"),
        ("eval.temperature=0", "must be > 0"),
        # values the schema took before and a run cannot use, and errors that spoke Python
        ("trainer.lr=inf", "'trainer.lr': must be a finite number, got inf"),
        ("rollout.temperature=inf", "'rollout.temperature': must be a finite number, got inf"),
        ("eval.n=99999999999999999999", "'eval.n': must be at most 2147483647 in size"),
        ("estimator_params.grpo.eps=nan", "config key 'estimator': eps must be a finite number, got nan"),
        ("estimator_params.grpo.eps=abc", "eps must be a number, got 'abc'"),
        ("estimator_params.grpo.unbiased_std=3", "unbiased_std must be true or false, got 3"),
        ("estimator_params.fade.h_target=inf", "h_target must be a finite number, got inf"),
        ("loss.clip_high=nan", "'loss': ppo_clip: clip_high must be a finite number, got nan"),
        ("loss.kl_estimator=3", "kl_estimator must be text, got 3"),
    ],
)
def test_hyperparameters_outside_their_domain_are_refused(item, message):
    name = item.split(".")[1] if item.startswith("estimator_params") else "grpo"
    with pytest.raises(ConfigError) as info:
        load([f"estimator={name}", *item.split()])
    assert message in str(info.value)


def test_a_key_with_whitespace_is_named_escaped():
    """Found by the fuzz test above: a key of two newlines came back raw inside the message."""
    with pytest.raises(ConfigError) as info:
        load(["\n\n=0"])
    assert "keys are dotted names (trainer.steps), got '\\n\\n'" in str(info.value)
    assert "\n" not in str(info.value)
