"""Config: OmegaConf structured configs merged from configs/base.yaml, the groups and the CLI.

Resolution, in order (later wins):
  configs/base.yaml  ->  the selected group files (configs/model/tiny.yaml into ``model`` ...)
  ->  a user file (``-c my.yaml``)  ->  CLI dotted overrides (``trainer.steps=200``)

A CLI item whose key is a group (``model=tiny``, ``task=countdown``) selects that group's file.
``estimator``, ``seed`` and the groups may be given a list (``estimator=[grpo,rloo]``): the
invocation then expands into one run per combination.

Validation happens here, before anything heavy is imported: the schema (``schema``: unknown keys,
wrong types, impossible values) without torch, then the registries (estimator and loss names and
their hyperparameters). Every failure is a ``ConfigError`` naming the key and the valid choices.
The schema sits below the registries (it imports none); the resolution here sits above them.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import difflib
import functools
import hashlib
import importlib.util
import itertools
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any  # noqa: UP035  OmegaConf resolves these at runtime

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from advbench.harness.errors import ConfigError
from advbench.harness.schema import (  # the schema, re-exported: part of this module's public API
    EvalConfig,
    GeometryConfig,
    ModelConfig,
    RolloutConfig,
    RunConfig,
    TaskConfig,
    TrackingConfig,
    TrainerConfig,
    WarmStartConfig,
)


def package_folder(name: str) -> Path:
    """The folder of one of the project's data packages (advbench.configs, advbench.suites): the
    repository's folder in a checkout, site-packages/advbench/... once installed from a wheel."""
    spec = importlib.util.find_spec(name)
    return next(Path(p) for p in spec.submodule_search_locations if Path(p).is_dir())


def search_path(
    own: str | os.PathLike[str] | None, folder: str, package: str, plugins: Sequence[str] = ()
) -> list[Path]:
    """Where named files are looked for, first match wins: ``own`` (an environment variable's
    folder), the working directory's ``folder`` (a user's own configs or suites), the folders of
    the ``plugins`` packages, the package's."""
    found = [Path(own)] if own else []
    found += [Path.cwd() / folder, *map(package_folder, plugins), package_folder(package)]
    unique: list[Path] = []
    for path in found:
        if path.is_dir() and all(path.resolve() != u.resolve() for u in unique):
            unique.append(path)
    return unique


CONFIG_DIR = package_folder("advbench.configs")  # the shipped configs


def config_dirs() -> list[Path]:
    """ADVBENCH_CONFIG_DIR, ./configs, installed plugins' config groups, then the shipped configs."""
    from advbench.harness.plugins import config_packages

    return search_path(
        os.environ.get("ADVBENCH_CONFIG_DIR"), "configs", "advbench.configs", config_packages()
    )


def find_config(group: str, name: str) -> Path | None:
    """The first ``<group>/<name>.yaml`` along ``config_dirs()``; None when there is none."""
    return next(
        (d / group / f"{name}.yaml" for d in config_dirs() if (d / group / f"{name}.yaml").is_file()), None
    )


GROUPS = ("model", "task", "loss", "rollout")


# ---------------------------------------------------------------------------------------------
# loading


def group_choices(group: str) -> list[str]:
    return sorted({p.stem for d in config_dirs() for p in (d / group).glob("*.yaml")})


def load_yaml(path: Path) -> DictConfig:
    try:
        loaded = OmegaConf.load(path)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except Exception as exc:  # yaml syntax errors come in several types
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"config file {path} must hold a mapping, got a {type(loaded).__name__}")
    return loaded


def _load_group(group: str, choice: Any) -> DictConfig:
    path = find_config(group, choice) if isinstance(choice, str) else None
    if path is None:
        folders = ", ".join(str(d / group) for d in config_dirs())
        raise ConfigError(
            f"config key '{group}': unknown {group} '{choice}'; choices: {', '.join(group_choices(group))} "
            f"(files in {folders})"
        )
    node = load_yaml(path)
    node.name = choice
    return node


def parse_overrides(items: list[str]) -> tuple[dict[str, Any], DictConfig]:
    """Split CLI items into group selections (``task=countdown``) and dotted overrides.

    Item by item: ``task=countdown task.eval_size=10`` selects the group and then overrides a key in it.
    """
    selections: dict[str, Any] = {}
    dotted: list[str] = []
    for item in items:
        key, sep, _ = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        if any(c.isspace() or not c.isprintable() for c in key):
            raise ConfigError(f"override {item!r}: keys are dotted names (trainer.steps), got {key!r}")
        if key.startswith("+"):
            raise ConfigError(f"override '{item}': advbench has no '+key' syntax; write {key[1:]}=...")
        if key in GROUPS:
            value = _parse_dotlist([item])[key]
            selections[key] = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
        elif key == "estimator":  # a name among estimator.<knob> items: estimator.name, as in a file
            dotted.append(f"estimator.name={item.partition('=')[2]}")
        else:
            dotted.append(item)
    return selections, _parse_dotlist(dotted)


def _parse_dotlist(items: list[str]) -> DictConfig:
    try:
        return OmegaConf.from_dotlist(items)
    except Exception as exc:  # OmegaConf's own errors and YAML syntax errors in a value
        reason = " ".join(str(exc).split())
        raise ConfigError(f"cannot parse overrides {items}: {reason}") from None


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, ListConfig):
        value = OmegaConf.to_container(value)
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _explain(exc: OmegaConfBaseException, schema: Any) -> str:
    key = getattr(exc, "full_key", None) or "?"
    if isinstance(exc, ConfigKeyError):
        parent, _, leaf = key.rpartition(".")
        node: Any = schema
        for part in filter(None, parent.split(".")):
            node = getattr(node, part, None)
        valid = [f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node) else []
        close = difflib.get_close_matches(leaf, valid, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        where = f"'{parent}'" if parent else "the top level"
        return f"unknown config key '{key}'{hint}; valid keys under {where}: {', '.join(valid)}"
    return f"config key '{key}': {str(exc).splitlines()[0]}"


@functools.cache
def _schema() -> DictConfig:
    """RunConfig as an OmegaConf schema, built once: building it took half of a suite's expansion."""
    return OmegaConf.structured(RunConfig)


def _validate_schema(raw: DictConfig) -> RunConfig:
    # A '???' in a config file means "the user must set this". Check before the schema merge:
    # OmegaConf's merge never lets '???' override a value, so the schema default would win silently.
    missing = sorted(OmegaConf.missing_keys(raw))
    if missing:
        raise ConfigError(
            f"config key '{missing[0]}' must be set (it is '???' in its config file), e.g. {missing[0]}=..."
        )
    try:
        merged = OmegaConf.merge(_schema(), raw)  # merge copies its first argument
        cfg = OmegaConf.to_object(merged)  # runs each dataclass's __post_init__ checks
    except OmegaConfBaseException as exc:
        cause = exc.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(_explain(exc, RunConfig())) from None
    return cfg


def declared(paths: list[Path]) -> dict[str, tuple[str, ...] | None]:
    """What these source files register, read without importing them (so without torch): each
    ``@register("name", params=SomeParams)`` and the field names of its hyperparameters dataclass
    (base classes followed among the files; None where the files alone cannot tell)."""
    trees = [ast.parse(path.read_text(), str(path)) for path in paths]
    classes = {node.name: node for tree in trees for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}

    def fields(name: str) -> tuple[str, ...] | None:
        node = classes.get(name)
        if node is None:
            return None
        inherited: list[str] = []
        for base in node.bases:
            found = fields(base.id) if isinstance(base, ast.Name) else None
            if found is None:
                return None
            inherited += found
        own = [
            item.target.id
            for item in node.body
            if isinstance(item, ast.AnnAssign)
            and isinstance(item.target, ast.Name)
            and "ClassVar" not in ast.unparse(item.annotation)
        ]
        return tuple(dict.fromkeys(inherited + own))

    found: dict[str, tuple[str, ...] | None] = {}
    for tree in trees:
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                continue
            for call in node.decorator_list:
                func = getattr(call, "func", None)
                if (getattr(func, "id", None) or getattr(func, "attr", None)) != "register":
                    continue
                if not (call.args and isinstance(call.args[0], ast.Constant)):
                    continue
                params = next((k.value for k in call.keywords if k.arg == "params"), None)
                found[call.args[0].value] = (
                    () if params is None else fields(params.id) if isinstance(params, ast.Name) else None
                )
    return found


def declared_names(paths: list[Path]) -> list[str]:
    """The names these source files register (``declared``)."""
    return sorted(declared(paths))


def _require_params(key: str, owner: str, given: dict[str, Any], known: tuple[str, ...] | None) -> None:
    """Hyperparameter names checked against the dataclass's fields as its file declares them (the
    registry repeats the check, values included, once torch is imported). ``key`` is the section,
    as ``estimator`` or ``loss``: the error names ``<key>.<knob>``, as the user writes it."""
    unknown = sorted(set(given) - set(known)) if known is not None else []
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f"; did you mean '{key}.{close[0]}'?" if close else ""
        raise ConfigError(
            f"config key '{key}.{unknown[0]}': {owner} has no hyperparameter {unknown[0]!r}; "
            f"its hyperparameters are: {', '.join(known) or '(none)'}{hint}"
        )


def _require_known(key: str, kind: str, name: str, known: list[str]) -> None:
    if name not in known:
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(
            f"config key '{key}': unknown {kind} '{name}'{hint}; registered {kind}s: {', '.join(known)}"
        )


def _silent_on_single_samples(estimator: Any, params: dict[str, Any]) -> bool:
    """Whether ``estimator`` gives every sample advantage 0 when each group holds one sample
    (group-relative baselines: GRPO, RLOO, ...), tried on right and wrong single samples. An
    estimator that needs more than rewards (token log-probs, a greedy pass) is not tried."""
    import torch

    from advbench.estimators import AdvantageBatch, TrainingSignals

    if estimator.required(**params) or estimator.extra_samples:
        return False
    rewards = torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    batch = AdvantageBatch(rewards=rewards, lengths=torch.full_like(rewards, 4.0))
    signals = TrainingSignals(step=1, total_steps=2, batch_pass_rate=0.5, entropy=1.0, initial_entropy=1.0)
    try:
        return bool((estimator(batch, signals, **params) == 0).all())
    except Exception:  # it cannot even run on such a batch: the loop will say so, with the step
        return False


def _resolve_registries(cfg: RunConfig) -> RunConfig:
    """``cfg`` with its estimator's and loss's hyperparameters resolved (every knob, defaults
    included) and their code identity recorded; names and values checked by the registries (which
    import torch). ``cfg`` itself is left as it was.

    In a fresh process nothing can have registered at run time yet, so the names are checked first
    against what the registries' and the plugins' files declare, before torch is imported."""
    from advbench.harness import plugins

    extra = plugins.source_files(cfg.plugins)
    if "advbench.estimators.registry" not in sys.modules:
        known = declared([*plugins.module_files("advbench.estimators"), *extra])
        _require_known("estimator", "estimator", cfg.estimator, sorted(known))
        _require_params(
            "estimator",
            f"estimator '{cfg.estimator}'",
            cfg.estimator_params.get(cfg.estimator, {}),
            known[cfg.estimator],
        )
    if "advbench.harness.losses" not in sys.modules:
        known = declared([*plugins.module_files("advbench.harness.losses"), *extra])
        _require_known("loss", "loss", cfg.loss.get("name"), sorted(known))
        knobs = {k: v for k, v in cfg.loss.items() if k != "name"}
        _require_params("loss", f"loss '{cfg.loss['name']}'", knobs, known[cfg.loss["name"]])
    plugins.load(cfg.plugins)

    from advbench import estimators
    from advbench.harness import losses

    _require_known("estimator", "estimator", cfg.estimator, estimators.names())
    unused = sorted(set(cfg.estimator_params) - set(estimators.names()))
    if unused:
        raise ConfigError(
            f"config key 'estimator_params': {', '.join(unused)} is not a registered estimator; "
            f"keys must be estimator names: {', '.join(estimators.names())}"
        )
    estimator = estimators.get(cfg.estimator)
    try:
        params = estimator.make_params(cfg.estimator_params.get(cfg.estimator, {}))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config key 'estimator': {exc}") from None
    if cfg.trainer.group_size == 1 and _silent_on_single_samples(estimator, dataclasses.asdict(params)):
        raise ConfigError(
            f"config key 'trainer.group_size': estimator '{cfg.estimator}' compares the samples of a "
            "group, so with group_size=1 every advantage is 0 and nothing is learned; set "
            "trainer.group_size=2 or more"
        )
    try:
        loss = losses.resolve(cfg.loss)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"config key 'loss': {exc.args[0] if exc.args else exc}") from None
    if cfg.trainer.micro_batch_tokens and losses.get(loss["name"]).whole_batch:
        raise ConfigError(
            f"config key 'trainer.micro_batch_tokens': loss '{loss['name']}' selects tokens by "
            "statistics over the whole batch, so it cannot be split into micro-batches; set it to 0"
        )
    return dataclasses.replace(
        cfg,
        estimator_params={cfg.estimator: dataclasses.asdict(params)},
        loss=loss,
        code={"estimator": estimator.identity, "loss": losses.get(loss["name"]).identity},
    )


def load(
    overrides: list[str] | None = None, config_file: str | Path | DictConfig | None = None
) -> list[RunConfig]:
    """Resolve and validate the runs of one invocation: one RunConfig per sweep combination.

    ``config_file`` is a YAML file merged over base.yaml, or the same already loaded (suites).
    Every failure is a ConfigError, OmegaConf's own (a bad ``${interpolation}``...) included.
    """
    try:
        return _load(overrides, config_file)
    except OmegaConfBaseException as exc:
        raise ConfigError(_explain(exc, RunConfig())) from None
    except TypeError as exc:  # OmegaConf's merge of a list into a mapping, or the reverse
        raise ConfigError(
            f"config: {exc} (a list given where the config has a mapping, or the reverse); "
            f"overrides: {overrides or []}"
        ) from None


def sweep(axes: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the axes' values, the last axis turning fastest: the one sweep
    expander of ``advbench run`` (estimator, seed, groups) and of suites (their matrix)."""
    return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]


def _estimator_mappings(*layers: DictConfig) -> dict[str, Any]:
    """The estimator configured like the loss (``estimator: {name: grpo, eps: 1e-3}`` in a file,
    ``estimator.name=rloo estimator.eps=...`` on the command line): in each layer the mapping's
    ``name`` becomes ``estimator`` (a list sweeps, as ``estimator=[a,b]``) and its other keys are
    returned, the later layers' winning, as knobs of the estimator each run has. A layer with a
    plain ``estimator: grpo`` (and ``estimator_params``) is left as it is."""
    knobs: dict[str, Any] = {}
    for layer in layers:
        node = layer.get("estimator")
        if not isinstance(node, DictConfig):
            continue
        node = OmegaConf.to_container(node)
        del layer["estimator"]
        if "name" in node:
            layer["estimator"] = node.pop("name")
        knobs.update(node)
    return knobs


def _group_names(layer: DictConfig, defaults: dict[str, Any]) -> None:
    """A group given as a mapping with a name (``loss: {name: dppo, delta_high: 0.2}`` in a file,
    ``loss.name=dppo`` on the command line) selects that group file, as ``loss: dppo`` does; the
    mapping's other keys stay as overrides of it."""
    for group in GROUPS:
        node = layer.get(group)
        if isinstance(node, DictConfig) and "name" in node:
            name = node["name"]
            defaults[group] = OmegaConf.to_container(name) if isinstance(name, ListConfig) else name
            del node["name"]


def _say_old_spelling(layer: DictConfig, where: str) -> None:
    """``estimator_params.NAME.KNOB`` still means what it meant (same run, same identity), with one
    line on stderr showing the one spelling: ``estimator=NAME estimator.KNOB=V`` (in a file,
    ``estimator: {name: NAME, KNOB: V}``)."""
    old = layer.get("estimator_params")
    if not isinstance(old, DictConfig) or not old:
        return
    given = {name: k for name, k in OmegaConf.to_container(old).items() if isinstance(k, dict) or k is None}
    if not given:  # not the old spelling at all: validation names what is wrong with it
        return
    if where == "command line":
        new = " ".join(
            f"estimator={name} " + " ".join(f"estimator.{k}={v}" for k, v in (knobs or {}).items())
            for name, knobs in given.items()
        )
    else:
        new = "; ".join(
            "estimator: {"
            + ", ".join([f"name: {name}", *(f"{k}: {v}" for k, v in (knobs or {}).items())])
            + "}"
            for name, knobs in given.items()
        )
    print(
        f"advbench: 'estimator_params' ({where}) is the old spelling, still read as before; "
        f"write {new.strip()}",
        file=sys.stderr,
    )


ENVIRONMENT_RESOLVERS = ("oc.env", "oc.decode")  # resolvers that read the process's environment


def _refuse_environment(node: Any, where: str, path: str = "") -> None:
    """A run config may not read environment variables (``${oc.env:VAR}``): the resolved value
    would be stored in MLflow's params, where a secret has no business (and a run would then
    depend on something its config does not show)."""
    if isinstance(node, DictConfig):
        items = ((str(key), node._get_node(key)) for key in node)
    elif isinstance(node, ListConfig):
        items = ((str(i), node._get_node(i)) for i in range(len(node)))
    else:
        value = node._value() if hasattr(node, "_value") else node
        if isinstance(value, str) and any(
            f"${{{name}:" in value.replace(" ", "") for name in ENVIRONMENT_RESOLVERS
        ):
            raise ConfigError(
                f"config key '{path}' ({where}): {value!r} reads the environment; run configs may "
                "not (the value would be recorded in MLflow's params): write the value itself"
            )
        return
    for key, child in items:
        _refuse_environment(child, where, f"{path}.{key}" if path else key)


def _undot(layer: DictConfig) -> None:
    """A file's dotted keys mean what they mean on the command line (``estimator.alpha_max: 2``,
    ``trainer.steps: 50``): each is nested under its first part, and an estimator or group given
    there by a plain name becomes that name's mapping (``estimator: fade`` -> ``{name: fade}``)."""
    dotted = [key for key in layer if isinstance(key, str) and "." in key]
    if not dotted:
        return
    values = OmegaConf.to_container(layer, resolve=False)
    for key in dotted:
        head = key.partition(".")[0]
        del layer[key]
        if head in layer and layer[head] is None:  # an empty section: `trainer:` with nothing under it
            layer[head] = {}
        elif head in (*GROUPS, "estimator") and head in layer and not isinstance(layer[head], DictConfig):
            layer[head] = {"name": values[head]}
        OmegaConf.update(layer, key, values[key], merge=True)


def _load(overrides: list[str] | None, config_file: str | Path | DictConfig | None) -> list[RunConfig]:
    base = load_yaml(CONFIG_DIR / "base.yaml")  # the shipped defaults; a user file overrides them (-c)
    if isinstance(config_file, DictConfig):
        user = copy.deepcopy(config_file)  # load pops keys from it
    else:
        user = load_yaml(Path(config_file)) if config_file else OmegaConf.create({})
    selections, cli = parse_overrides(overrides or [])
    _undot(user)
    _refuse_environment(user, "config file")
    _refuse_environment(cli, "command line")
    _say_old_spelling(cli, "command line")
    if not isinstance(config_file, DictConfig):  # suites pass their cells' layers as DictConfig
        _say_old_spelling(user, "config file")

    defaults: dict[str, Any] = dict(base.pop("defaults", {}))
    defaults.update(user.pop("defaults", {}))
    for group in GROUPS:  # a user file may also select a group with a plain string
        if group in user and not isinstance(user[group], DictConfig):
            defaults[group] = (
                OmegaConf.to_container(user[group]) if isinstance(user[group], ListConfig) else user[group]
            )
            del user[group]
    _group_names(user, defaults)
    defaults.update(selections)
    _group_names(cli, defaults)
    knobs = _estimator_mappings(base, user, cli)

    missing = [g for g in GROUPS if g not in defaults]
    if missing:
        raise ConfigError(
            f"configs/base.yaml 'defaults' must select every group; missing: {', '.join(missing)}"
        )
    layered = OmegaConf.merge(base, user, cli)
    axes = {
        "estimator": _as_list(layered.get("estimator", RunConfig.estimator)),
        "seed": _as_list(layered.get("seed", RunConfig.seed)),
        **{group: _as_list(defaults[group]) for group in GROUPS},
    }
    empty = [key for key, values in axes.items() if not values]
    if empty:
        raise ConfigError(
            f"config key '{empty[0]}': an empty list sweeps over nothing; give at least one value"
        )
    runs = []
    for chosen in sweep(axes):
        raw = OmegaConf.create({g: _load_group(g, chosen[g]) for g in GROUPS})
        raw = OmegaConf.merge(raw, base, user, cli)
        raw.estimator, raw.seed = chosen["estimator"], chosen["seed"]
        if knobs:  # estimator.<knob>=...: a knob of whichever estimator the run has
            raw.estimator_params = OmegaConf.merge(
                raw.get("estimator_params", {}), {chosen["estimator"]: knobs}
            )
        for group in GROUPS:
            raw[group].name = chosen[group]
        cfg = _validate_schema(raw)
        runs.append(_resolve_registries(cfg))
    return runs


def to_yaml(cfg: RunConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def flatten(cfg: RunConfig) -> dict[str, str]:
    """The resolved config as flat dotted keys, for MLflow params."""
    container = OmegaConf.to_container(OmegaConf.structured(cfg))
    flat: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        else:
            flat[prefix] = str(node)

    walk("", container)
    return flat


def identity(cfg: RunConfig) -> str:
    """What identifies a run, as YAML: the resolved config minus where it is tracked and cached and
    what it is called; with ``code``, the estimator's and the loss's version and source hash. A solo
    run's leaves out ``trainer.packed``, so solo runs kept the identity they had before packs."""
    container = dataclasses.asdict(cfg)  # what to_container(structured(cfg)) gives, 3x faster
    for key in ("tracking", "threads", "label", "cache_dir"):
        container.pop(key, None)
    if not container["trainer"].get("packed"):
        container["trainer"].pop("packed", None)
    return OmegaConf.to_yaml(OmegaConf.create(container))


def config_hash(cfg: RunConfig) -> str:
    """Identity of a run (``identity``), hashed."""
    return hashlib.sha256(identity(cfg).encode()).hexdigest()[:16]


__all__ = [
    "CONFIG_DIR",
    "ConfigError",
    "EvalConfig",
    "GeometryConfig",
    "ModelConfig",
    "RolloutConfig",
    "RunConfig",
    "TaskConfig",
    "TrackingConfig",
    "TrainerConfig",
    "WarmStartConfig",
    "config_hash",
    "flatten",
    "group_choices",
    "load",
    "to_yaml",
]
