"""The reference pages are generated from the code (harness/reference.py) and committed: these fail
when a committed page is not what the code generates now, and when a registered estimator or loss,
a CLI option or a config field is missing from what it generates."""

import dataclasses

from advbench import estimators
from advbench.harness import losses
from advbench.harness.config import RunConfig
from advbench.harness.reference import (
    DOCS,
    PAGES,
    cli_page,
    config_keys,
    config_page,
    estimators_page,
    field_comments,
    losses_page,
    page_text,
)


def test_the_committed_reference_pages_are_what_the_code_generates():
    stale = [name for name in PAGES if (DOCS / name).read_text() != page_text(name)]
    assert not stale, f"{stale} differ from the code: run python -m advbench.harness.reference"


def test_every_registered_estimator_is_in_the_catalogue_with_its_source_and_knobs():
    page = estimators_page()
    for name in estimators.names():
        est = estimators.get(name)
        assert f"### `{name}`" in page, name
        assert est.source in page, name
        for knob in dataclasses.fields(est.params):
            assert f"`estimator.{knob.name}`" in page, (name, knob.name)


def test_every_registered_loss_is_in_the_catalogue_with_a_source():
    page = losses_page()
    for name in losses.names():
        loss = losses.get(name)
        assert f"## `{name}`" in page, name
        assert loss.source, f"loss {name} registered without a source"
        assert loss.source in page
        for knob in dataclasses.fields(loss.params):
            assert f"`loss.{knob.name}`" in page, (name, knob.name)


def test_every_config_field_is_in_the_config_reference():
    page = config_page()
    keys = config_keys()
    assert "trainer.steps" in keys and "model.warmstart.label_smoothing" in keys
    for key in keys:
        assert f"| `{key}` |" in page, key
    # a field added to the schema shows up: the keys are read from the dataclasses, not a list
    top = {f.name for f in dataclasses.fields(RunConfig)}
    assert {k for k in keys if "." not in k} | {
        "model",
        "task",
        "rollout",
        "trainer",
        "eval",
        "geometry",
        "tracking",
    } >= top


def test_every_command_and_option_is_in_the_cli_reference():
    from advbench.harness.cli import build_parser

    page = cli_page()
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, command in sub.choices.items():
        assert f"## `advbench {name}`" in page
        for action in command._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert option in page, (name, option)


def test_field_comments_reads_the_comment_beside_and_above_a_field():
    @dataclasses.dataclass
    class Example:
        # above, first line
        # above, second line
        a: int = 1  # beside
        b: float = dataclasses.field(  # opened here
            default=2.0
        )
        c: str = "x"

    assert field_comments(Example) == {
        "a": "above, first line above, second line beside",
        "b": "opened here",
    }
