"""Claims as experiments: a suite each, predicates on its runs' metrics, a verdict each.

A claims file (``suites/claims/*.yaml``; ``suites/claims/seeds.yaml`` holds the seed papers')::

    name: seeds
    description: what the claims are
    claims:
      sign-axis:                           # the claim's key
        title: one line for the page
        source: arXiv ids
        statement: the claim in words
        suite: claim-sign                  # a suite file or name (suites/claim-sign.yaml)
        predicates:
          - {metric: entropy_drop, of: psr, is: greater, than: grpo}
          - {metric: final_pass_at_kmax, of: fade, is: not_less, than: grpo, margin: 0.02}
          - {metric: effective_rank, of: grpo, is: within, range: [1.5, 2.5]}
          - {metric: sparsity_growth, of: grpo, is: greater, value: 0.0}

``of`` and ``than`` are labels of the claim's suite, ``metric`` one of ``METRICS`` (a number per
run). Every predicate is one or two *tests*, each a permutation test at 5% (harness/stats.py's
``compare``: paired seed by seed when both labels have the same seeds, against a number a sign-flip
test) of the difference ``of - than + shift`` (``shift`` is the non-inferiority margin):

    greater / less            a significant difference of that sign: holds; of the other sign: contradicted
    not_less / not_greater    of - than + margin > 0 (resp. of - than - margin < 0) significantly
    within [lo, hi]           of > lo and of < hi, both significantly

A claim **holds** when every test holds at 5% (an intersection-union test: no correction is
needed for "all of them"), is **contradicted** when any test is significant in the other direction
after Holm's correction over the claim's tests, and is **inconclusive** otherwise. Each test
reports its effect with a stratified-bootstrap 95% interval and the smallest effect its seeds find
with 80% power. Strata are the suite's tasks (and models): the verdict pools them; the page also
gives each task's effect.

A bad claims file (an unknown metric, label, comparison, suite or key) is refused before anything
runs, naming the key and the choices (``load_claims``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

from advbench.harness import stats
from advbench.harness.config import ConfigError, RunConfig, config_hash, load_yaml, search_path
from advbench.harness.leaderboard import Board, CellRun, aligned
from advbench.harness.metrics import RunSummary, smooth
from advbench.harness.suites import Suite, load_suite

FILE_KEYS = ("name", "description", "claims", "lr_grid")
CLAIM_KEYS = ("title", "source", "statement", "suite", "predicates", "not_comparable")
PREDICATE_KEYS = ("metric", "of", "is", "than", "value", "margin", "range")
RELATIONS = ("greater", "less", "not_less", "not_greater", "within")
ALPHA = 1 - stats.LEVEL

History = Callable[[CellRun, str], tuple[np.ndarray, np.ndarray]]  # (run, metric key) -> (steps, values)


# ---------------------------------------------------------------------------------------------
# per-run metrics: one number per run, from its summary or its logged histories


@dataclass(frozen=True)
class Metric:
    description: str
    value: Callable[[CellRun, History], float]
    unit: str = ""


def _final_pass_at_kmax(run: CellRun, history: History) -> float:
    return run.pass_at_k()[run.k_max]


def _time_to_peak(run: CellRun, history: History) -> float:
    """The step of the peak; a run with no detectable gain counts as peaking at its last eval."""
    step = run.summary.time_to_peak_step
    return float(step) if step is not None else float(run.eval_steps[-1])


def _entropy_drop(run: CellRun, history: History) -> float:
    _, entropy = history(run, "eval/entropy")
    return float(1.0 - entropy[-1] / entropy[0]) if entropy[0] > 0 else 0.0


def _mean_of(key: str) -> Callable[[CellRun, History], float]:
    def value(run: CellRun, history: History) -> float:
        _, values = history(run, key)
        return float(values.mean())

    return value


def _geometry(run: CellRun, history: History, suffix: str) -> list[np.ndarray]:
    """Each probed matrix's logged ``geometry/<matrix>/<suffix>`` history (at least one)."""
    keys = sorted(k for k in history(run, "") if k.startswith("geometry/") and k.endswith(f"/{suffix}"))
    if not keys:
        raise ValueError(
            f"run {run.run_id} ({run.label}) logged no geometry/*/{suffix}: was geometry.every 0?"
        )
    return [history(run, key)[1] for key in keys]


def _effective_rank(run: CellRun, history: History) -> float:
    return float(np.mean([values.mean() for values in _geometry(run, history, "effective_rank")]))


def _sparsity_growth(run: CellRun, history: History) -> float:
    """Mean near-zero fraction over the last third of the probed steps minus the first third's."""
    growth = []
    for values in _geometry(run, history, "near_zero_fraction"):
        third = max(1, len(values) // 3)
        growth.append(values[-third:].mean() - values[:third].mean())
    return float(np.mean(growth))


def _drawdown(run: CellRun, history: History) -> float:
    """How much of its smoothed peak pass@1 the run has lost by its last smoothed eval."""
    curve = smooth(run.pass_at_1)
    return float(curve.max() - curve[-1])


METRICS: dict[str, Metric] = {
    "peak_pass_at_1": Metric("peak of the smoothed eval pass@1", lambda r, h: r.summary.peak_pass_at_1),
    "gain": Metric("cross-fitted peak pass@1 - start", lambda r, h: r.summary.gain),
    "final_pass_at_1": Metric("pass@1 at the last eval", lambda r, h: r.pass_at_k()[1]),
    "final_pass_at_kmax": Metric("pass@k_max (k_max = eval.n) at the last eval", _final_pass_at_kmax),
    "time_to_peak": Metric(
        "step of the peak (time-to-peak protocol); no detectable gain: the last eval", _time_to_peak, "steps"
    ),
    "final_entropy": Metric(
        "mean token entropy of the last eval's samples", lambda r, h: r.summary.final_entropy
    ),
    "entropy_drop": Metric(
        "1 - final / initial eval token entropy: the share of entropy lost", _entropy_drop
    ),
    "ess_fraction": Metric(
        "mean over steps of the effective sample size (sum |A|)^2 / sum A^2 per trained sample",
        _mean_of("axes/ess_fraction"),
    ),
    "sign_balance": Metric("mean over steps of (M+ - M-) / (M+ + M-)", _mean_of("axes/sign_balance")),
    "mean_difficulty": Metric("mean over steps of the mass-weighted 1 - p", _mean_of("axes/mean_difficulty")),
    "effective_rank": Metric(
        "mean over probed steps and matrices of the gradient's effective rank exp(H(s / sum s))",
        _effective_rank,
    ),
    "sparsity_growth": Metric(
        "near-zero fraction of the gradient: mean of the last third of probed steps - the first third's",
        _sparsity_growth,
    ),
    "drawdown": Metric("smoothed peak pass@1 - the last smoothed eval: what training lost", _drawdown),
}


# ---------------------------------------------------------------------------------------------
# the claims file


@dataclass(frozen=True)
class Predicate:
    metric: str
    of: str
    relation: str
    than: str | None = None
    value: float | None = None
    margin: float = 0.0
    bounds: tuple[float, float] | None = None

    def text(self) -> str:
        other = self.than if self.than is not None else f"{self.value:g}"
        if self.relation == "within":
            return f"{self.metric}({self.of}) within [{self.bounds[0]:g}, {self.bounds[1]:g}]"
        words = {"greater": ">", "less": "<", "not_less": ">=", "not_greater": "<="}[self.relation]
        margin = f" (margin {self.margin:g})" if self.relation.startswith("not_") else ""
        target = f"{self.metric}({other})" if self.than is not None else other
        return f"{self.metric}({self.of}) {words} {target}{margin}"


@dataclass(frozen=True)
class Claim:
    key: str
    title: str
    source: str
    statement: str
    suite: Suite
    predicates: list[Predicate]
    # Why our measurement cannot decide the paper's claim (its quantity is not public, say): the
    # tests run on our own operationalisation and are shown, the verdict is "not comparable"
    not_comparable: str = ""
    rates: dict[str, RateChoice] = field(default_factory=dict)  # label -> its learning rate (lr_grid)


@dataclass(frozen=True)
class RateGrid:
    """A fair learning rate for every arm (``lr_grid`` in a claims file): each arm (one estimator
    variant of a claim's suite, on one task and model) trains at every rate on ``seeds`` that are
    never scored, and its scored runs use the rate with the best mean ``metric`` over them."""

    rates: list[float]
    seeds: list[int]
    metric: str = "peak_pass_at_1"


@dataclass(frozen=True)
class RateChoice:
    lr: float | None  # None: the grid's runs are not all finished; the arm keeps its configured rate
    means: dict[float, float | None]  # rate -> mean metric over the tuning seeds (None: unfinished)


@dataclass(frozen=True)
class ClaimsFile:
    name: str
    path: Path
    description: str
    claims: list[Claim]
    lr_grid: RateGrid | None = None


def claims_dirs() -> list[Path]:
    """./suites/claims, then the shipped ones."""
    return [
        folder / "claims"
        for folder in search_path(None, "suites", "advbench.suites")
        if (folder / "claims").is_dir()
    ]


def resolve_claims(ref: str | Path) -> Path:
    if Path(ref).is_file():
        return Path(ref)
    for folder in claims_dirs():
        if (folder / f"{ref}.yaml").is_file():
            return folder / f"{ref}.yaml"
    choices = ", ".join(sorted({p.stem for d in claims_dirs() for p in d.glob("*.yaml")}))
    raise ConfigError(
        f"no claims file '{ref}' (nor {ref}.yaml in {', '.join(map(str, claims_dirs()))}); "
        f"claims files: {choices}"
    )


def _unknown(given: Any, valid: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}")


def _number(raw: DictConfig, key: str, where: str) -> float:
    try:
        value = float(raw[key])
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: '{key}' must be a number, got {raw[key]!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{where}: '{key}' must be finite, got {value}")
    return value


def _predicate(raw: Any, labels: list[str], where: str) -> Predicate:
    if not isinstance(raw, DictConfig):
        raise ConfigError(f"{where}: a predicate is a mapping with keys {', '.join(PREDICATE_KEYS)}")
    _unknown(raw, PREDICATE_KEYS, where)
    for key in ("metric", "of", "is"):
        if key not in raw:
            raise ConfigError(f"{where}: '{key}' is required")
    metric, of, relation = str(raw.metric), str(raw.of), str(raw["is"])
    if metric not in METRICS:
        raise ConfigError(f"{where}: metric: unknown metric '{metric}'; choices: {', '.join(METRICS)}")
    if relation not in RELATIONS:
        raise ConfigError(f"{where}: is: unknown comparison '{relation}'; choices: {', '.join(RELATIONS)}")
    for key in ("of", "than"):
        if key in raw and str(raw[key]) not in labels:
            raise ConfigError(
                f"{where}: {key}: '{raw[key]}' is not an estimator of the claim's suite; choices: "
                f"{', '.join(labels)}"
            )
    if relation == "within":
        bounds = raw.get("range")
        if not isinstance(bounds, ListConfig) or len(bounds) != 2 or "than" in raw or "value" in raw:
            raise ConfigError(f"{where}: 'is: within' takes range: [lo, hi] and neither 'than' nor 'value'")
        low, high = (_number(OmegaConf.create({"range": b}), "range", where) for b in bounds)
        if not low < high:
            raise ConfigError(f"{where}: range: lo must be below hi, got [{low:g}, {high:g}]")
        return Predicate(metric, of, relation, bounds=(low, high))
    if ("than" in raw) == ("value" in raw):
        raise ConfigError(
            f"{where}: 'is: {relation}' takes exactly one of 'than' (a label) or 'value' (a number)"
        )
    if "range" in raw:
        raise ConfigError(f"{where}: 'range' goes with 'is: within' only")
    margin = _number(raw, "margin", where) if "margin" in raw else 0.0
    if margin < 0 or ("margin" in raw and not relation.startswith("not_")):
        raise ConfigError(f"{where}: margin: a margin >= 0 goes with 'is: not_less' or 'not_greater' only")
    value = _number(raw, "value", where) if "value" in raw else None
    return Predicate(metric, of, relation, str(raw.than) if "than" in raw else None, value, margin)


def load_claims(
    ref: str | Path,
    overrides: list[str] | None = None,
    only: list[str] | None = None,
    seeds: int = 0,
    pack: int | None = None,
) -> ClaimsFile:
    """Read and check a claims file, expanding each claim's suite with ``overrides``; ``only``: the
    claims to keep (by key), ``seeds``: keep the first this many seeds of every suite (0: all),
    ``pack``: packs of at most this many runs (None: each suite file's own ``pack``)."""
    path = resolve_claims(ref)
    raw = load_yaml(path)
    where = f"claims file {path}"
    _unknown(raw, FILE_KEYS, where)
    entries = raw.get("claims")
    if not isinstance(entries, DictConfig) or not entries:
        raise ConfigError(f"{where}: 'claims' must be a mapping of claim keys to claims")
    keys = [str(k) for k in entries]
    for key in only or []:
        if key not in keys:
            raise ConfigError(f"{where}: --only: no claim '{key}'; claims: {', '.join(keys)}")
    claims = []
    for key in keys:
        entry, at = entries[key], f"{where}, claim '{key}'"
        if not isinstance(entry, DictConfig):
            raise ConfigError(f"{at}: a claim is a mapping with keys {', '.join(CLAIM_KEYS)}")
        _unknown(entry, CLAIM_KEYS, at)
        if (
            "suite" not in entry
            or not isinstance(entry.get("predicates"), ListConfig)
            or not entry.predicates
        ):
            raise ConfigError(f"{at}: 'suite' and a non-empty list 'predicates' are required")
        if only and key not in only:
            continue  # its suite is not expanded: overrides meant for the chosen claims may not fit it
        suite = load_suite(str(entry.suite), overrides, pack)
        predicates = [
            _predicate(p, suite.labels, f"{at}, predicate {i + 1}") for i, p in enumerate(entry.predicates)
        ]
        if seeds:
            suite = keep_seeds(suite, seeds)
        claims.append(
            Claim(
                key,
                str(entry.get("title") or key),
                str(entry.get("source") or ""),
                str(entry.get("statement") or ""),
                suite,
                predicates,
                str(entry.get("not_comparable") or ""),
            )
        )
    grid = _rate_grid(raw.get("lr_grid"), claims, where)
    return ClaimsFile(
        str(raw.get("name") or path.stem), path, str(raw.get("description") or ""), claims, grid
    )


def _rate_grid(raw: Any, claims: list[Claim], where: str) -> RateGrid | None:
    if raw is None:
        return None
    at = f"{where}, lr_grid"
    if not isinstance(raw, DictConfig):
        raise ConfigError(f"{at}: a mapping with keys rates, seeds (and metric)")
    _unknown(raw, ("rates", "seeds", "metric"), at)
    rates, seeds = list(raw.get("rates") or []), list(raw.get("seeds") or [])
    if not rates or not all(isinstance(r, int | float) and r > 0 for r in rates):
        raise ConfigError(f"{at}: rates must be a non-empty list of positive learning rates")
    if not seeds or not all(isinstance(x, int) and x >= 0 for x in seeds):
        raise ConfigError(f"{at}: seeds must be a non-empty list of seeds (the tuning runs', never scored)")
    scored = sorted({cfg.seed for claim in claims for cfg in claim.suite.cells} & set(seeds))
    if scored:
        raise ConfigError(
            f"{at}: seeds {scored} are also scored by a claim's suite; tuning seeds must not be"
        )
    metric = str(raw.get("metric") or "peak_pass_at_1")
    if metric not in ("peak_pass_at_1", "gain", "final_pass_at_1"):
        raise ConfigError(f"{at}: metric must be peak_pass_at_1, gain or final_pass_at_1, got {metric!r}")
    return RateGrid([float(r) for r in rates], [int(x) for x in seeds], metric)


def arm(cfg: RunConfig) -> str:
    """What an arm is: a cell's config but for its seed and learning rate."""
    return config_hash(_at(cfg, 0, 1.0))


def _at(cfg: RunConfig, seed: int, lr: float) -> RunConfig:
    out = copy.deepcopy(cfg)
    out.seed, out.trainer.lr = seed, lr
    return out


def tuning_cells(declared: ClaimsFile) -> list[RunConfig]:
    """The lr grid's runs: every arm of every claim at every rate on every tuning seed (an arm two
    claims share is tuned once)."""
    grid = declared.lr_grid
    if grid is None:
        return []
    cells: dict[str, RunConfig] = {}
    for claim in declared.claims:
        for cfg in claim.suite.cells:
            for seed in grid.seeds:
                for lr in grid.rates:
                    cell = _at(cfg, seed, lr)
                    cells.setdefault(config_hash(cell), cell)
    return list(cells.values())


def with_rates(declared: ClaimsFile, tracker: Any) -> ClaimsFile:
    """The claims with every arm's scored runs at the rate its tuning runs chose (read from the
    store: finished tuning runs only), and each claim's choices kept for its page."""
    grid = declared.lr_grid
    if grid is None:
        return declared
    choices: dict[str, RateChoice] = {}
    claims_out = []
    for claim in declared.claims:
        cells, rates = [], {}
        strata: dict[str, set[tuple[str, str]]] = {}  # label -> its (task, model) strata
        for cfg in claim.suite.cells:
            strata.setdefault(cfg.display_label, set()).add((cfg.task.name, cfg.model.name))
        for cfg in claim.suite.cells:
            key = arm(cfg)
            if key not in choices:
                choices[key] = _choose(cfg, grid, tracker)
            choice = choices[key]
            cells.append(cfg if choice.lr is None else _at(cfg, cfg.seed, choice.lr))
            label = cfg.display_label
            one = len(strata[label]) == 1
            rates[label if one else f"{label} ({cfg.task.name}, {cfg.model.name})"] = choice
        suite = dataclasses.replace(claim.suite, cells=cells)
        claims_out.append(dataclasses.replace(claim, suite=suite, rates=rates))
    return dataclasses.replace(declared, claims=claims_out)


def _choose(cfg: RunConfig, grid: RateGrid, tracker: Any) -> RateChoice:
    means: dict[float, float | None] = {}
    for lr in grid.rates:
        values = []
        for seed in grid.seeds:
            found = tracker.find_finished(_at(cfg, seed, lr))
            if found is None:
                break
            values.append(getattr(RunSummary.from_metrics(found.data.metrics), grid.metric))
        means[lr] = float(np.mean(values)) if len(values) == len(grid.seeds) else None
    if any(value is None for value in means.values()):
        return RateChoice(None, means)
    return RateChoice(max(means, key=lambda lr: (means[lr], -lr)), means)


def keep_seeds(suite: Suite, n: int) -> Suite:
    """The suite with only its first ``n`` seeds (a reduced run: CI's smoke of a claim)."""
    first = sorted({cfg.seed for cfg in suite.cells})[:n]
    return Suite(
        suite.name,
        suite.path,
        suite.description,
        suite.reference,
        suite.variants,
        [cfg for cfg in suite.cells if cfg.seed in first],
        suite.pack,
    )


# ---------------------------------------------------------------------------------------------
# verdicts


@dataclass
class Test:
    """One permutation test of a predicate: ``difference`` = of - than (or - value), + shift."""

    predicate: Predicate
    direction: int  # +1: the claim says the shifted difference is > 0; -1: < 0
    shift: float  # added to the difference: the margin of a non-inferiority test, minus a bound
    comparison: stats.Comparison
    interval: tuple[float, float]  # 95% stratified bootstrap of the unshifted difference
    per_stratum: dict[str, float]  # the unshifted difference in each task/model
    adjusted_p: float = 1.0  # Holm over the claim's tests (for "contradicted")
    # A time test whose "earlier" arm has a detectably lower peak than the other (permutation test
    # of peak pass@1 at ALPHA): an earlier, lower peak is not faster learning, so it does not hold
    lower_peak: bool = False

    def text(self) -> str:
        """What this test asks, e.g. 'entropy_drop(psr) > entropy_drop(grpo)'."""
        p = self.predicate
        sign = ">" if self.direction > 0 else "<"
        left = f"{p.metric}({p.of})"
        if p.than is None:
            bound = p.bounds[0 if self.direction > 0 else 1] if p.bounds else p.value
            return f"{left} {sign} {bound:g}"
        margin = (
            f" {'-' if self.direction > 0 else '+'} {p.margin:g}" if p.relation.startswith("not_") else ""
        )
        return f"{left} {sign} {p.metric}({p.than}){margin}"

    @property
    def effect(self) -> float:
        return self.comparison.difference - self.shift

    @property
    def holds(self) -> bool:
        return self.significant and not self.lower_peak

    @property
    def significant(self) -> bool:
        """The difference is beyond noise in the claimed direction (whatever the peaks)."""
        return self.comparison.p_value < ALPHA and self.direction * self.comparison.difference > 0

    @property
    def contradicts(self) -> bool:
        return self.adjusted_p < ALPHA and self.direction * self.comparison.difference < 0

    @property
    def outcome(self) -> str:
        if self.lower_peak and self.significant:
            return "earlier, lower: not faster"
        if self.holds:
            return "holds"
        if self.contradicts:
            return "contradicted"
        if self.comparison.smallest_p > ALPHA:
            return "too few seeds"
        return "inconclusive"


@dataclass
class ClaimResult:
    claim: Claim
    board: Board
    tests: list[Test] = field(default_factory=list)
    values: dict[str, dict[str, list[tuple[str, int, float]]]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # labels a predicate needs with no finished run
    seconds: float = 0.0  # wall time of `advbench claims` on this claim (its cells run or found)
    parent_run_id: str = ""  # the MLflow parent run of the claim's suite

    @property
    def verdict(self) -> str:
        if self.claim.not_comparable:  # a verdict on our operationalisation is not one on the paper
            return "not comparable"
        return self.tests_verdict

    @property
    def tests_verdict(self) -> str:
        """What the tests say of our own measurement: holds, contradicted or inconclusive."""
        if self.missing:
            return "inconclusive"
        if any(t.contradicts for t in self.tests):
            return "contradicted"
        return "holds" if self.tests and all(t.holds for t in self.tests) else "inconclusive"


def _stratum_name(stratum: tuple[str, str]) -> str:
    return "/".join(stratum)


def _test(
    board: Board,
    predicate: Predicate,
    direction: int,
    bound: float | None,
    history: History,
    rng: np.random.Generator,
) -> Test | None:
    """One test of ``predicate``: against ``than``'s runs (paired as the leaderboard pairs), or
    against the number ``bound`` (a sign-flip test of the runs' values minus it)."""
    fn = METRICS[predicate.metric].value

    def value(run: CellRun) -> float:
        return fn(run, history)

    if predicate.than is not None:
        common, x, y, paired = aligned(board, predicate.of, predicate.than, ALPHA, value)
    else:
        common = [s for s in board.strata if board.of(predicate.of, s)]
        x = board.strata_of(predicate.of, value)
        y = [np.full(a.size, bound, dtype=float) for a in x]
        paired = True
    if not common:
        return None
    shift = direction * predicate.margin if predicate.relation.startswith("not_") else 0.0
    comparison = stats.compare([a + shift for a in x], y, rng, paired=paired, alpha=ALPHA)
    interval = stats.difference_interval(x, y, rng, paired=paired)
    per_stratum = {_stratum_name(s): float(a.mean() - b.mean()) for s, a, b in zip(common, x, y, strict=True)}
    test = Test(predicate, direction, shift, comparison, interval, per_stratum)
    if predicate.metric in TIME_METRICS and predicate.than is not None:
        # "earlier" is faster learning only where the peaks are comparable
        earlier, later = (predicate.of, predicate.than) if direction < 0 else (predicate.than, predicate.of)
        test.lower_peak = lower_peak(board, earlier, later)
    return test


# Metrics that time a run: a smaller value is read as faster learning
TIME_METRICS = ("time_to_peak",)


def lower_peak(board: Board, label: str, other: str) -> bool:
    """Whether ``label``'s peak pass@1 is detectably below ``other``'s (the leaderboard's pairing,
    a permutation test at ALPHA; its own random stream, so the claim's other tests draw as before)."""
    rng = np.random.default_rng(0)
    common, x, y, paired = aligned(board, label, other, ALPHA, lambda run: run.summary.peak_pass_at_1)
    if not common:
        return False
    comparison = stats.compare(x, y, rng, paired=paired, alpha=ALPHA)
    return comparison.p_value < ALPHA and comparison.difference < 0


def evaluate(claim: Claim, board: Board, history: History, seed: int = 0) -> ClaimResult:
    """The claim's tests on the board's runs, Holm over them for the contradictions."""
    rng = np.random.default_rng(seed)
    result = ClaimResult(claim, board)
    for predicate in claim.predicates:
        labels = [predicate.of] + ([predicate.than] if predicate.than else [])
        absent = [label for label in labels if not board.of(label)]
        if absent:
            result.missing.extend(a for a in absent if a not in result.missing)
            continue
        for label in labels:
            result.values.setdefault(predicate.metric, {})[label] = [
                (_stratum_name(r.stratum), r.seed, METRICS[predicate.metric].value(r, history))
                for r in board.of(label)
            ]
        if predicate.relation == "within":
            specs = [(1, predicate.bounds[0]), (-1, predicate.bounds[1])]
        else:
            sign = 1 if predicate.relation in ("greater", "not_less") else -1
            specs = [(sign, predicate.value)]
        for direction, bound in specs:
            test = _test(board, predicate, direction, bound, history, rng)
            if test is None:
                result.missing.append(f"{'/'.join(labels)}: no shared stratum")
            else:
                result.tests.append(test)
    for test, adjusted in zip(
        result.tests, stats.holm([t.comparison.p_value for t in result.tests]), strict=True
    ):
        test.adjusted_p = adjusted
    return result


def mlflow_history(client: Any) -> History:
    """A History over MLflow, cached: key '' gives the run's metric names."""
    from advbench.harness.tracking import metric_history

    cache: dict[tuple[str, str], Any] = {}

    def history(run: CellRun, key: str):
        if (run.run_id, key) not in cache:
            if key == "":
                cache[(run.run_id, key)] = list(client.get_run(run.run_id).data.metrics)
            else:
                steps, values = metric_history(client, run.run_id, key)
                if values.size == 0:
                    raise ValueError(f"run {run.run_id} ({run.label}) logged no '{key}'")
                cache[(run.run_id, key)] = (steps, values)
        return cache[(run.run_id, key)]

    return history


def board_of(suite: Suite, tracker: Any) -> Board:
    """The suite's finished cells as a leaderboard Board (read from MLflow by config hash)."""
    from advbench.harness.leaderboard import collect_cells

    runs, missing = collect_cells(tracker, suite.records())
    return Board(
        suite=suite.name,
        description=suite.description,
        reference=suite.reference,
        labels=suite.labels,
        runs=runs,
        missing=missing,
        tracking_uri=tracker.cfg.uri,
    )


def run_claim(claim: Claim, tracker: Any, parent: Any = None, seconds: float = 0.0) -> ClaimResult:
    """Judge ``claim`` on the runs its suite has in ``tracker``'s store (``advbench claims`` has
    run the suite first, under ``parent``, unless --no-run)."""
    board = board_of(claim.suite, tracker)
    result = evaluate(claim, board, mlflow_history(tracker.client))
    result.seconds = seconds
    result.parent_run_id = parent.run_id if parent is not None else ""
    return result
