"""The documentation's reference pages, generated from the code so that they cannot drift from it:
the command line from its argparse parser, the run config from its dataclasses (every field's
default, domain and comment), the estimator and loss catalogue from the registries (formula as
documented in the source, source paper, confidence tag, hyperparameters).

The pages are committed under docs/ (readable in the repository as on the site) and written by

    python -m advbench.harness.reference

tests/test_reference.py fails when a committed page differs from what the code generates now, and
when a registered estimator or loss, or a config field, is missing from what it generates.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import re
import sys
import textwrap
import tokenize
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TAG = re.compile(r"\[(primary|peer|secondary)[^\]]*\]")

TAG_WORDS = {
    "primary": "the authors' own code or paper text",
    "peer": "another framework's implementation",
    "secondary": "one reading of the paper, not checked against a second source",
}


# ---------------------------------------------------------------------------------------------
# dataclass fields: default, domain, comment


def field_comments(cls: type) -> dict[str, str]:
    """The comment written beside (or on the lines just above) each field of a dataclass, as its
    source has them: ``steps: int = bounded(150, ge=1)  # ...``."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    found: dict[str, str] = {}
    body = ast.parse(source).body[0]
    for node in getattr(body, "body", []):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        beside = [comments[n] for n in range(node.lineno, node.end_lineno + 1) if n in comments]
        above: list[str] = []
        line = node.lineno - 1
        while line >= 1 and lines[line - 1].strip().startswith("#"):
            above.insert(0, comments[line])
            line -= 1
        text = " ".join(above + beside).replace("noqa: UP035", "").strip()
        if text:
            found[node.target.id] = text
    return found


def type_words(kind: Any) -> str:
    """A field's type as a reader writes it: ``int``, ``str | None``, ``list[str]``."""
    if isinstance(kind, type) and not typing.get_args(kind):
        return kind.__name__
    return str(kind).replace("typing.", "").replace("NoneType", "None")


def default_of(item: dataclasses.Field) -> Any:
    if item.default is not dataclasses.MISSING:
        return item.default
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return None


def domain_of(item: dataclasses.Field) -> str:
    """The domain a config field declares (``choice``, ``bounded``), in words."""
    from advbench.harness.schema import domain

    if "choices" in item.metadata:
        return "one of " + ", ".join(f"`{c}`" for c in item.metadata["choices"])
    if "bounds" in item.metadata:
        return domain(item.metadata["bounds"])[1]
    return ""


def cell(text: Any) -> str:
    """A value as one Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def code(value: Any) -> str:
    return f"`{value!r}`" if isinstance(value, str) else f"`{value}`"


def fields_table(
    cls: type, prefix: str = "", with_domain: bool = True, skip: frozenset[str] = frozenset()
) -> list[str]:
    """One row per field of ``cls`` (nested dataclasses and ``skip`` excluded): key, type, default,
    domain and the comment the source gives it."""
    comments = field_comments(cls)
    kinds = typing.get_type_hints(cls)
    header = (
        "| key | type | default | domain | what it is |"
        if with_domain
        else "| knob | type | default | what it is |"
    )
    rows = [header, "|---|---|---|---|---|" if with_domain else "|---|---|---|---|"]
    for item in dataclasses.fields(cls):
        if dataclasses.is_dataclass(kinds[item.name]) or item.name in skip:
            continue
        values = [f"`{prefix}{item.name}`", cell(type_words(kinds[item.name])), cell(code(default_of(item)))]
        if with_domain:
            values.append(cell(domain_of(item)))
        values.append(cell(comments.get(item.name, "")))
        rows.append("| " + " | ".join(values) + " |")
    return rows


def config_sections() -> Iterator[tuple[str, type]]:
    """(dotted prefix, dataclass) for the run config and every section nested in it."""
    from advbench.harness.schema import RunConfig

    def walk(prefix: str, cls: type) -> Iterator[tuple[str, type]]:
        yield prefix, cls
        kinds = typing.get_type_hints(cls)
        for item in dataclasses.fields(cls):
            if dataclasses.is_dataclass(kinds[item.name]):
                yield from walk(f"{prefix}{item.name}.", kinds[item.name])

    yield from walk("", RunConfig)


def config_keys() -> list[str]:
    """Every dotted key of the run config (the leaves: what an override can set)."""
    keys = []
    for prefix, cls in config_sections():
        kinds = typing.get_type_hints(cls)
        keys += [
            f"{prefix}{f.name}"
            for f in dataclasses.fields(cls)
            if not dataclasses.is_dataclass(kinds[f.name])
        ]
    return keys


def config_page() -> str:
    out = [
        "# Configuration reference",
        "",
        "Generated from the config dataclasses (`harness/schema.py`), the one place defaults live. "
        "Every key can be set on the command line (`advbench run trainer.steps=200`) or in a YAML "
        "file given with `-c`. A value outside its domain is refused before anything runs, naming "
        "the key. The estimator's and the loss's own knobs are on the "
        "[estimator](estimators.md) and [loss](losses.md) pages.",
        "",
    ]
    for prefix, cls in config_sections():
        title = prefix.rstrip(".") or "top level"
        doc = inspect.getdoc(cls) or ""
        out += [f"## `{title}`" if prefix else "## Top level", ""]
        if doc and not doc.startswith(cls.__name__ + "("):
            out += [doc, ""]
        out += [*fields_table(cls, prefix), ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# estimators and losses


def tag_of(source: str) -> str:
    match = TAG.search(source)
    return match.group(1) if match else ""


def summary_table(kind: str, entries: list[Any]) -> list[str]:
    """One row per registered estimator or loss: name (linked to its section), what it computes,
    its source and the source's confidence tag."""
    rows = [f"| {kind} | what it computes | source | tag |", "|---|---|---|---|"]
    for entry in entries:
        rows.append(
            f"| [`{entry.name}`](#{entry.name}) | {cell(entry.description)} | {cell(entry.source)} | "
            f"{tag_of(entry.source) or '—'} |"
        )
    return rows


def estimators_page() -> str:
    from advbench import estimators

    out = [
        "# Estimator catalogue",
        "",
        "Generated from the estimator registry: every registered estimator, grouped by the file "
        "that holds its family, with the formula as its source documents it, the paper it comes "
        "from and what the implementation was checked against. Choose one with "
        "`estimator=NAME`; set a knob with `estimator.KNOB=VALUE`.",
        "",
        "Confidence tags: " + "; ".join(f"**[{k}]** {v}" for k, v in TAG_WORDS.items()) + ". "
        "An entry without a tag follows the paper's formula as commonly implemented, with no "
        "reference code compared.",
        "",
    ]
    entries = [estimators.get(name) for name in estimators.names()]
    out += [*summary_table("estimator", entries), ""]
    by_module: dict[str, list[Any]] = {}
    for est in entries:
        by_module.setdefault(est.fn.__module__, []).append(est)
    for module, members in sorted(by_module.items()):
        doc = inspect.getdoc(sys.modules[module]) or ""
        out += [f"## `{module.rsplit('.', 1)[-1]}.py`", ""]
        if doc:
            out += ["```text", doc, "```", ""]
        for est in members:
            out += [f"### `{est.name}` {{ #{est.name} }}", "", inspect.getdoc(est.fn) or est.description, ""]
            out += [f"- **Source**: {est.source}"]
            extras = []
            if est.token_level:
                extras.append("token-level advantages ([P, G, T])")
            if est.state is not None:
                extras.append(f"carries state across steps (`{est.state.__name__}`, checkpointed)")
            if est.trains is not None:
                extras.append("leaves some samples out of the update, loss normaliser included")
            if est.extra_samples:
                extras.append(f"samples G + {est.extra_samples} completions per prompt")
            if est.needs:
                needs = "depends on its knobs" if callable(est.needs) else ", ".join(est.needs)
                extras.append(f"needs the loop to produce: {needs}")
            if extras:
                out.append("- **Contract**: " + "; ".join(extras))
            out.append("")
            if dataclasses.fields(est.params):
                out += [*fields_table(est.params, "estimator.", with_domain=False), ""]
            else:
                out += ["No knobs.", ""]
    return "\n".join(out)


def losses_page() -> str:
    from advbench.harness import losses
    from advbench.harness.losses.base import CommonLossParams

    common = {f.name for f in dataclasses.fields(CommonLossParams)}
    out = [
        "# Policy loss catalogue",
        "",
        "Generated from the loss registry. Choose one with `loss=NAME`; set a knob with "
        "`loss.KNOB=VALUE`. Every loss also takes the common switches below.",
        "",
    ]
    entries = [losses.get(name) for name in losses.names()]
    out += [
        *summary_table("loss", entries),
        "",
        "## Common switches",
        "",
        *fields_table(CommonLossParams, "loss.", with_domain=False),
        "",
    ]
    for loss in entries:
        out += [f"## `{loss.name}` {{ #{loss.name} }}", "", inspect.getdoc(loss.fn) or loss.description, ""]
        out += [f"- **Source**: {loss.source}"]
        if loss.whole_batch:
            out.append("- Uses batch-wide statistics: refuses `trainer.micro_batch_tokens`.")
        out.append("")
        if any(f.name not in common for f in dataclasses.fields(loss.params)):
            out += [*fields_table(loss.params, "loss.", with_domain=False, skip=frozenset(common)), ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# the command line


def cli_page() -> str:
    from unittest import mock

    from advbench.harness.cli import build_parser

    with mock.patch.dict("os.environ", {"COLUMNS": "100"}):  # argparse wraps usage at the terminal's width
        parser = build_parser()
        usages = {name: command.format_usage().strip() for name, command in _commands(parser).items()}
    out = [
        "# Command line",
        "",
        "Generated from `advbench`'s argument parser. Every command that runs something takes "
        "`key=value` overrides of the [configuration](config.md).",
        "",
    ]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in sub._choices_actions}
    for name, command in sub.choices.items():
        out += [f"## `advbench {name}`", "", (helps.get(name) or "").capitalize() + ".", ""]
        out += ["```text", usages[name], "```", ""]
        rows = ["| argument | default | what it does |", "|---|---|---|"]
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            spelled = ", ".join(action.option_strings) or action.dest
            default = "" if action.default in (None, False, [], argparse.SUPPRESS) else code(action.default)
            rows.append(f"| `{spelled}` | {cell(default)} | {cell(action.help or '')} |")
        out += [*rows, ""]
    return "\n".join(out)


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


PAGES = {
    "reference/cli.md": cli_page,
    "reference/config.md": config_page,
    "reference/estimators.md": estimators_page,
    "reference/losses.md": losses_page,
}


DOCS = Path(__file__).resolve().parent.parent / "docs"  # in a checkout of the repository
HEADER = "<!-- generated by `python -m advbench.harness.reference`: edit the code, not this page -->\n"


def page_text(name: str) -> str:
    """The committed text of the generated page ``name`` (a key of PAGES)."""
    return HEADER + PAGES[name]() + "\n"


def write(docs: Path = DOCS) -> list[Path]:
    """Write every generated page under ``docs``; the paths written."""
    if not docs.is_dir():
        raise SystemExit(f"no docs folder at {docs}: run this from a checkout of the repository")
    written = []
    for name in PAGES:
        path = docs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page_text(name))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write():
        print(f"wrote {path}")
