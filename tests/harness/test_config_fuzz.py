"""Random keys, types and values thrown at the config loader: a valid config or one clean ConfigError."""

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from harness.config import ConfigError, RunConfig, flatten, load

VALID_KEYS = sorted(flatten(RunConfig()))
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
    event("valid config")


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
    ],
)
def test_hyperparameters_outside_their_domain_are_refused(item, message):
    name = item.split(".")[1] if item.startswith("estimator_params") else "grpo"
    with pytest.raises(ConfigError) as info:
        load([f"estimator={name}", *item.split()])
    assert message in str(info.value)
