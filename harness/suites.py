"""Suites: one base config, a matrix of estimators x models x tasks x seeds, and overrides.

A suite file (``suites/*.yaml``)::

    name: smoke                      # default: the file's stem
    description: what it is for
    base: ../my-base.yaml            # optional: a config file (relative to the suite file)
    reference: grpo                  # the leaderboard's reference for the probability of improvement
    matrix:
      estimator:                     # names, or variants with their own hyperparameters
        - grpo
        - {name: power, label: power-a3, params: {alpha: 3.0}}
        - {name: grpo, label: grpo-dppo, overrides: {loss: dppo}}   # any config keys, this variant only
      seed: [0, 1, 2]
      model: [tiny]                  # groups: model, task, loss, rollout (files under configs/)
      task: [arithmetic, countdown]
    overrides:                       # merged over every cell, like a -c file
      trainer: {steps: 60}
    pack: 8                          # optional: train compatible cells 8 at a time as one batched
                                     # model (harness/pack.py); --pack N on the command line wins

Each combination is one *cell*: a resolved, validated RunConfig, identified by its config hash. The
suite itself is identified by the hashes of its cells, so editing a suite makes a new one, and
re-running an unchanged suite finds its cells again.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from advbench import estimators
from advbench.harness import losses, plugins
from advbench.harness.config import (
    GROUPS,
    ConfigError,
    RunConfig,
    config_hash,
    load,
    load_yaml,
    search_path,
    sweep,
)

SUITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
SUITE_KEYS = ("name", "description", "base", "reference", "matrix", "overrides", "pack")
MATRIX_KEYS = ("estimator", "seed", *GROUPS)


@dataclass(frozen=True)
class Variant:
    """An estimator with its hyperparameters, config overrides of its own, and its label in tables."""

    estimator: str
    label: str
    params: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class Suite:
    name: str
    path: Path
    description: str
    reference: str  # a label
    variants: list[Variant]
    cells: list[RunConfig]
    pack: int = 0  # packs of at most this many cells (0: every cell on its own)

    @property
    def labels(self) -> list[str]:
        return [v.label for v in self.variants]

    @property
    def hash(self) -> str:
        joined = ",".join(sorted(config_hash(cfg) for cfg in self.cells))
        return hashlib.sha256(joined.encode()).hexdigest()[:16]

    def records(self) -> list[dict[str, Any]]:
        """What the leaderboard needs of each cell, stored with the suite's MLflow run."""
        return [
            {
                "hash": config_hash(cfg),
                "label": cfg.display_label,
                "estimator": cfg.estimator,
                "task": cfg.task.name,
                "model": cfg.model.name,
                "loss": cfg.loss["name"],
                "seed": cfg.seed,
            }
            for cfg in self.cells
        ]


def suite_dirs() -> list[Path]:
    """ADVBENCH_SUITE_DIR, ./suites, then the shipped suites (config.search_path)."""
    return search_path(os.environ.get("ADVBENCH_SUITE_DIR"), "suites", "advbench.suites")


def suite_file(ref: str | Path) -> Path | None:
    """A suite file path, or the first ``<ref>.yaml`` along ``suite_dirs()``; None if neither."""
    if Path(ref).is_file():
        return Path(ref)
    return next((d / f"{ref}.yaml" for d in suite_dirs() if (d / f"{ref}.yaml").is_file()), None)


def resolve_path(ref: str | Path) -> Path:
    """A suite file path, or the name of one (``smoke`` -> suites/smoke.yaml); a clear error if none."""
    path = suite_file(ref)
    if path is not None:
        return path
    choices = ", ".join(sorted({p.stem for d in suite_dirs() for p in d.glob("*.yaml")}))
    folders = ", ".join(map(str, suite_dirs()))
    raise ConfigError(f"no suite file '{ref}' (nor {ref}.yaml in {folders}); suites: {choices}")


def _mapping(value: Any, what: str, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, DictConfig):
        raise ConfigError(f"{where}: {what} must be a mapping, got {value!r}")
    return OmegaConf.to_container(value)


def _variant(entry: Any, where: str) -> Variant:
    if isinstance(entry, str):
        return Variant(entry, entry)
    if isinstance(entry, DictConfig):
        unknown = set(entry) - {"name", "label", "params", "overrides"}
        if "name" not in entry or unknown:
            raise ConfigError(
                f"{where}: an estimator variant is a name or a mapping with keys name, label, params, "
                f"overrides; got {OmegaConf.to_container(entry)}"
            )
        return Variant(
            str(entry.name),
            str(entry.get("label") or entry.name),
            _mapping(entry.get("params"), f"params of '{entry.name}'", where),
            _mapping(entry.get("overrides"), f"overrides of '{entry.name}'", where),
        )
    raise ConfigError(f"{where}: an estimator variant is a name or a mapping, got {entry!r}")


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, ListConfig | list | tuple) else [value]


def _pack_size(value: Any, where: str) -> int:
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{where}: pack must be a whole number of runs (0: no packs), got {value!r}")
    return value


def load_suite(ref: str | Path, overrides: list[str] | None = None, pack: int | None = None) -> Suite:
    """Expand and validate a suite; ``overrides`` (key=value) apply to every cell. ``pack`` (the
    suite file's ``pack`` when None): the cells that can be packed are marked to run packed
    (trainer.packed, their own identity), the others stay solo."""
    path = resolve_path(ref)
    raw = load_yaml(path)
    where = f"suite {path}"
    unknown = sorted(set(raw) - set(SUITE_KEYS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(SUITE_KEYS)}"
        )
    matrix = raw.get("matrix")
    if not isinstance(matrix, DictConfig) or "estimator" not in matrix:
        raise ConfigError(f"{where}: 'matrix' must be a mapping with at least 'estimator'")
    unknown = sorted(set(matrix) - set(MATRIX_KEYS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown matrix key(s) {', '.join(unknown)}; valid: {', '.join(MATRIX_KEYS)}"
        )
    for key in matrix:
        if not _as_list(matrix[key]) or matrix[key] is None:
            raise ConfigError(f"{where}: matrix.{key} is empty; give it at least one value")
    name = str(raw.get("name") or path.stem)
    if not SUITE_NAME.fullmatch(name):
        raise ConfigError(
            f"{where}: name {name!r} must be letters, digits, '-', '_' or '.', starting with a letter "
            "or digit (it names the leaderboard's folder)"
        )
    variants = [_variant(e, f"{where}, matrix.estimator") for e in _as_list(matrix.estimator)]
    labels = [v.label for v in variants]
    duplicated = sorted({label for label in labels if labels.count(label) > 1})
    if duplicated:
        raise ConfigError(f"{where}: estimator labels must be unique; repeated: {', '.join(duplicated)}")
    reference = str(raw.get("reference") or labels[0])
    if reference not in labels:
        raise ConfigError(
            f"{where}: reference '{reference}' is not one of the estimators: {', '.join(labels)}"
        )

    base = load_yaml(path.parent / raw.base) if raw.get("base") else OmegaConf.create({})
    suite_overrides = raw.get("overrides") or OmegaConf.create({})
    if not isinstance(suite_overrides, DictConfig):
        raise ConfigError(f"{where}: 'overrides' must be a mapping of config keys")
    axes = {key: _as_list(matrix[key]) for key in MATRIX_KEYS[1:] if key in matrix}
    cells: list[RunConfig] = []
    for variant in variants:
        for chosen in sweep(axes):
            cell = {
                "estimator": variant.estimator,
                "label": variant.label if variant.label != variant.estimator else "",
                "estimator_params": {variant.estimator: variant.params},
                "defaults": {g: chosen[g] for g in GROUPS if g in chosen},
            }
            if "seed" in chosen:
                cell["seed"] = chosen["seed"]
            layer = OmegaConf.merge(
                base, suite_overrides, OmegaConf.create(variant.overrides), OmegaConf.create(cell)
            )
            try:
                cells.extend(load(overrides, layer))
            except ConfigError as exc:
                raise ConfigError(f"{where}, cell {variant.label} {chosen}: {exc}") from None
    pack = _pack_size(raw.get("pack") if pack is None else pack, where)
    if pack:
        cells = mark_packable(cells)
    hashes = [config_hash(cfg) for cfg in cells]
    if len(set(hashes)) != len(hashes):
        raise ConfigError(f"{where}: two cells resolve to the same config (a variant repeats another)")
    return Suite(
        name=name,
        path=path,
        description=str(raw.get("description") or ""),
        reference=reference,
        variants=variants,
        cells=cells,
        pack=pack,
    )


# ---------------------------------------------------------------------------------------------
# packs (harness/pack.py): which cells can share one

# What may differ between the runs of one pack: everything that is a run's own (its algorithm, its
# seed, its optimiser settings), and how it is named, tracked and cached.
_OWN = {
    None: ("estimator", "label", "estimator_params", "seed", "loss", "code", "tracking"),
    "trainer": ("lr", "warmup_steps", "lr_schedule", "weight_decay", "max_grad_norm", "shuffle_advantages"),
}


def unpackable(cfg: RunConfig) -> str | None:
    """Why ``cfg`` cannot run in a pack, or None."""
    if cfg.model.path:
        return "a local checkpoint (model.path) is not replicated; packs hold the built-in scales"
    if cfg.rollout.engine != "hf":
        return f"rollout.engine={cfg.rollout.engine}: packs sample with hf"
    estimator = estimators.get(cfg.estimator)
    params = cfg.estimator_params.get(cfg.estimator, {})
    loss = losses.get(cfg.loss["name"])
    loss_params = loss.params(**{k: v for k, v in cfg.loss.items() if k != "name"})
    if "ref_logprobs" in estimator.required(**params) or loss_params.kl_coef > 0:
        return "a KL to the reference policy needs a frozen copy, which packs do not keep"
    return None


def pack_key(cfg: RunConfig) -> str:
    """Runs with equal keys can share a pack: same model, task, rollout, batch shape and schedule of
    evals and steps (what one batched forward and one loop need), whatever their own settings."""
    plugins.load(cfg.plugins)
    shared = copy.deepcopy(cfg)
    defaults = RunConfig()
    for section, keys in _OWN.items():
        target, default = (
            (shared, defaults)
            if section is None
            else (
                getattr(shared, section),
                getattr(defaults, section),
            )
        )
        for key in keys:
            setattr(target, key, copy.deepcopy(getattr(default, key)))
    estimator = estimators.get(cfg.estimator)
    needs = estimator.required(**cfg.estimator_params.get(cfg.estimator, {}))
    shape = f"samples={cfg.trainer.group_size + estimator.extra_samples},greedy={'greedy_rewards' in needs}"
    return f"{config_hash(shared)}:{shape}:{cfg.cache_dir}:{cfg.threads}"


def as_packed(cfg: RunConfig) -> RunConfig:
    out = copy.deepcopy(cfg)
    out.trainer.packed = True
    return out


def mark_packable(cells: Sequence[RunConfig]) -> list[RunConfig]:
    """The cells with every one that can run in a pack marked to (trainer.packed), the others as
    they are (they run solo)."""
    return [as_packed(cfg) if unpackable(cfg) is None else cfg for cfg in cells]
