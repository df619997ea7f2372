"""The run config's schema: one dataclass per section, each field with its default and its domain
(``choice``, ``bounded``), checked when the section is built. The one place defaults live.

This module sits below the registries and the loading: it imports neither torch, nor OmegaConf,
nor any registry. ``config`` loads YAML and overrides into these dataclasses and resolves the
estimator and loss names against their registries; the reference pages (``reference``) are
generated from here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar  # noqa: UP035  OmegaConf resolves these at runtime

from advbench.harness.errors import ConfigError


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"config key '{key}': {message}")


# The size of int a config may hold, as estimators.registry.LARGEST_INT (imported there with torch;
# a test keeps the two equal).
LARGEST_INT = 2**31 - 1
# Eval prompts are scored n times at every eval, and a procedural task generates each one
# (countdown: ~13 ms): 65,536 is far beyond any use and still generated in minutes.
MAX_EVAL_SIZE = 65_536


def choice(*choices: str) -> Any:
    """A field whose value must be one of ``choices``; the first is its default."""
    return field(default=choices[0], metadata={"choices": choices})


def bounded(
    default: float,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A number field with its domain: ``ge`` / ``gt`` below, ``le`` / ``lt`` above."""
    return field(default=default, metadata={"bounds": (ge, gt, le, lt)})


def domain(bounds: tuple[float | None, ...]) -> tuple[Callable[[float], bool], str]:
    """A bounds tuple as a test and its words: ">= 1", "> 0", "in (0, 1]", "in [0, 1)"."""
    ge, gt, le, lt = bounds
    low = (
        (ge, "[", lambda v: v >= ge)
        if ge is not None
        else (gt, "(", lambda v: v > gt)
        if gt is not None
        else None
    )
    high = (
        (le, "]", lambda v: v <= le)
        if le is not None
        else (lt, ")", lambda v: v < lt)
        if lt is not None
        else None
    )
    tests = [side[2] for side in (low, high) if side]
    if low and high:
        words = f"in {low[1]}{low[0]}, {high[0]}{high[1]}"
    else:
        side = low or high
        words = f"{'>' if side is low else '<'}{'=' if side[1] in '[]' else ''} {side[0]}"
    return (lambda v: all(test(v) for test in tests)), words


class Checked:
    """A config section whose fields declare their domain (``choice``, ``bounded``): checked when it
    is built, with every number finite and every int of a size a run can use. ``SECTION`` names it
    in errors; a subclass's own ``__post_init__`` (after ``super()``) checks what spans fields."""

    SECTION: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            key = f"{self.SECTION}.{item.name}" if self.SECTION else item.name
            choices = item.metadata.get("choices")
            if choices is not None:
                _require(value in choices, key, f"must be one of {', '.join(choices)}; got '{value}'")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            _require(math.isfinite(value), key, f"must be a finite number, got {value}")
            _require(abs(value) <= LARGEST_INT, key, f"must be at most {LARGEST_INT} in size, got {value}")
            if "bounds" in item.metadata:
                test, words = domain(item.metadata["bounds"])
                _require(test(value), key, f"must be {words}, got {value}")


@dataclass
class WarmStartConfig(Checked):
    """Supervised warm start of the built-in model on task demonstrations (cached on disk)."""

    SECTION: ClassVar[str] = "model.warmstart"
    steps: int = bounded(800, ge=0)
    batch_size: int = bounded(64, ge=1)
    lr: float = bounded(2e-3, gt=0)
    train_examples: int = bounded(0, ge=0)  # 0: every training prompt of the task
    # Label smoothing of the supervised loss: the warm-started policy keeps its argmax (its skill)
    # but spreads sampling mass over other tokens, as a pretrained LM sampled at T=1 does; RL's
    # sharpening then shows within a CPU budget.
    label_smoothing: float = bounded(0.2, ge=0, lt=1)
    seed: int = bounded(0, ge=0)


@dataclass
class ModelConfig(Checked):
    """The policy: the built-in tiny model (path unset) or any local HF causal LM (``path``)."""

    SECTION: ClassVar[str] = "model"
    name: str = "tiny"  # the group file it came from (model=NAME); names the run
    path: str | None = None  # a local checkpoint directory; the fields below then describe nothing
    architecture: str = choice("qwen2", "llama")  # the transformers architecture of the built-in model
    hidden_size: int = bounded(128, ge=1)
    num_layers: int = bounded(2, ge=1)
    num_heads: int = bounded(4, ge=1)
    num_kv_heads: int = bounded(2, ge=1)
    intermediate_size: int = bounded(384, ge=1)
    max_position_embeddings: int = 256
    dtype: str = choice("float32", "bfloat16", "float16")  # the weights (and the optimizer's copy)
    # none | bfloat16: forward passes (rollout, scoring, training) under torch.autocast in this dtype
    # while the weights stay in `dtype` (float32 master weights: mixed precision, no loss scaling)
    autocast: str = choice("none", "bfloat16")
    device: str = choice("cpu", "cuda", "auto")
    warmstart: WarmStartConfig = field(default_factory=WarmStartConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(
            self.hidden_size % self.num_heads == 0,
            "model.hidden_size",
            f"must be divisible by model.num_heads={self.num_heads}",
        )
        _require(
            self.num_heads % self.num_kv_heads == 0,
            "model.num_kv_heads",
            f"must divide model.num_heads={self.num_heads}",
        )


@dataclass
class TaskConfig(Checked):
    """A named source of prompts with a verifier."""

    SECTION: ClassVar[str] = "task"
    name: str = "arithmetic"  # the group file it came from (task=NAME); names the run
    # reasoning_gym | jsonl (problems with answers) | code (HumanEval layout)
    source: str = choice("reasoning_gym", "jsonl", "code")
    dataset: str = "basic_arithmetic"  # the reasoning-gym dataset name
    params: dict[str, Any] = field(default_factory=dict)  # the dataset's own config (difficulty)
    template: str = "{question}"  # prompt text; formatted with the item's question and metadata
    answer_format: str = choice("plain", "tagged")  # tagged: the answer is in <answer>...</answer>
    reward: str = choice("raw", "binary")  # raw: the verifier's score; binary: 1 if correct else 0
    train_size: int = bounded(4000, ge=1)
    eval_size: int = bounded(256, ge=1, le=MAX_EVAL_SIZE)
    data_seed: int = bounded(1234, ge=0)  # generates the train and eval items; fixed per suite, not per run
    verifier_timeout: float = bounded(5.0, gt=0)  # seconds per completion; past it: 0 (an error)
    # source: jsonl. One JSON object per line; the eval split is eval_path, or eval_size items of
    # path drawn by data_seed (the rest train). Relative paths: the working directory, then the project.
    path: str | None = None
    eval_path: str | None = None
    question_field: str = "question"  # GSM8K: question/answer; MATH: problem/solution; AIME: problem/answer
    answer_field: str = "answer"
    verifier: str = "math"  # math (math-verify) | exact | a Python function "module:function"
    # source: code. Distributions the sandboxed programs may import besides the standard library
    # (e.g. [numpy]); with what they require, they are all a bubblewrap sandbox lets them see.
    packages: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(
            self.source != "jsonl" or bool(self.path), "task.path", "a jsonl task needs a file: task.path=..."
        )
        _require(
            all(isinstance(name, str) and name for name in self.packages),
            "task.packages",
            f"must be a list of distribution names, e.g. [numpy,sympy]; got {self.packages}",
        )
        _require(
            not self.packages or self.source == "code",
            "task.packages",
            f"only a code task runs programs that import packages; this task's source is '{self.source}'",
        )


@dataclass
class RolloutConfig(Checked):
    SECTION: ClassVar[str] = "rollout"
    name: str = "hf"  # the group file it came from (rollout=NAME), which sets the engine below
    engine: str = choice("hf", "paged", "vllm")  # the engine itself (harness/rollout/: one file each)
    temperature: float = bounded(1.0, gt=0)
    top_p: float = bounded(1.0, gt=0, le=1)
    max_new_tokens: int = bounded(16, ge=1)
    cache: str = choice("dynamic", "static")  # hf: a growing or a pre-allocated KV cache
    compile: bool = False  # hf with cache=static on CUDA: compile the decode step
    gpu_memory_utilization: float = bounded(0.3, gt=0, lt=1)  # vllm: its GPU share (weights + KV)
    # The precision the engine samples in: model (as model.autocast), float32 (the weights as they
    # are) or bfloat16 (autocast). bfloat16 with float32 training is a real training/inference
    # mismatch on any machine: the trust-region losses then act on what they were written for.
    autocast: str = choice("model", "float32", "bfloat16")

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(
            not self.compile or (self.engine == "hf" and self.cache == "static"),
            "rollout.compile",
            "compiles hf's decode step over a static cache: needs rollout.engine=hf and rollout.cache=static",
        )


@dataclass
class TrainerConfig(Checked):
    SECTION: ClassVar[str] = "trainer"
    steps: int = bounded(150, ge=1)
    prompts_per_step: int = bounded(32, ge=1)  # P
    group_size: int = bounded(8, ge=1)  # G completions per prompt
    lr: float = bounded(2e-4, gt=0)
    # linear lr warm-up: a fresh Adam's first steps are ~lr * sign(grad) on every weight
    warmup_steps: int = bounded(10, ge=0)
    # after the warm-up: hold lr, or decay it to zero at the last step (linear, or half a cosine)
    lr_schedule: str = choice("constant", "cosine", "linear")
    weight_decay: float = bounded(0.0, ge=0)
    max_grad_norm: float = bounded(1.0, gt=0)
    update_epochs: int = bounded(1, ge=1)  # optimizer passes over each rollout batch
    minibatches: int = bounded(1, ge=1)  # optimizer steps per pass
    # steps between checkpoints; re-running a run resumes it; 0 = off
    checkpoint_every: int = bounded(25, ge=0)
    # Memory: recompute each layer's activations in the backward pass instead of keeping them
    gradient_checkpointing: bool = False
    # Split each optimizer step's rows into micro-batches of at most this many (padded) tokens and
    # accumulate their gradients: the same update, a bounded activation memory; 0 = one forward
    micro_batch_tokens: int = bounded(0, ge=0)
    # A calibration control, not a method: permute each group's advantages among its samples after
    # the estimator, so the policy moves but learns nothing (benchmarks/calibration.py's null runs)
    shuffle_advantages: bool = False
    # Trained in a pack, one batched model with other runs (advbench suite --pack N, harness/pack.py):
    # part of the run's identity, as its float path differs from a solo run's; set by --pack
    packed: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(
            self.prompts_per_step % self.minibatches == 0,
            "trainer.minibatches",
            f"must divide trainer.prompts_per_step={self.prompts_per_step}",
        )


@dataclass
class EvalConfig(Checked):
    SECTION: ClassVar[str] = "eval"
    every: int = bounded(
        10, ge=1
    )  # steps between evals; evals also run before the first and after the last step
    n: int = bounded(8, ge=1)  # samples per held-out prompt
    # The eval sampling stream's seed, one for every estimator and training seed: every run's evals
    # score the same prompts with the same stream, so runs (and a run's evals) compare paired
    seed: int = bounded(0, ge=0)
    temperature: float = bounded(1.0, gt=0)
    top_p: float = bounded(1.0, gt=0, le=1)
    greedy: bool = True  # also one greedy completion per prompt (greedy pass@1)
    smoothing_window: int = 3  # time-to-peak: centred moving average over this many evals
    peak_delta_abs: float = bounded(0.02, ge=0)  # time-to-peak tolerance: max(delta_abs, z * standard error)
    peak_z: float = bounded(1.0, ge=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(
            self.smoothing_window >= 1 and self.smoothing_window % 2 == 1,
            "eval.smoothing_window",
            f"must be a positive odd number, got {self.smoothing_window}",
        )


@dataclass
class GeometryConfig(Checked):
    """Gradient geometry of chosen weight matrices (harness/geometry.py)."""

    SECTION: ClassVar[str] = "geometry"
    every: int = bounded(
        10, ge=0
    )  # SVD metrics every this many steps (the gradient cosine every step); 0 = off
    modules: list[str] = field(  # regexes over parameter names; 2-D parameters only
        default_factory=lambda: [
            r"layers\.0\.mlp\.down_proj\.weight$",
            r"layers\.0\.self_attn\.o_proj\.weight$",
        ]
    )
    top_k: int = bounded(4, ge=1)
    zero_tol: float = bounded(1e-3, ge=0, lt=1)  # |g| <= zero_tol * max |g| counts as near zero


@dataclass
class TrackingConfig(Checked):
    SECTION: ClassVar[str] = "tracking"
    uri: str = "sqlite:///advbench.db"  # MLflow tracking URI; a local SQLite file by default
    experiment: str = "advbench"
    artifact_root: str = "advbench-artifacts"  # where a new experiment stores artifacts (local store)
    # How long a run's lease in the store lasts without a heartbeat (renewed every quarter of it):
    # after that, another process may take the run over and resume it.
    lease_seconds: float = bounded(60.0, ge=2.0)

    # The stores MLflow's tracking client speaks to (a database URL may name its driver:
    # postgresql+psycopg2://). Not its file store, which MLflow 3 refuses.
    SCHEMES: ClassVar[tuple[str, ...]] = (
        "sqlite",
        "postgresql",
        "mysql",
        "mssql",
        "http",
        "https",
        "databricks",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        scheme = self.uri.partition("://")[0].split("+")[0] if "://" in self.uri else ""
        _require(
            scheme in self.SCHEMES,
            "tracking.uri",
            f"'{self.uri}' is not a store MLflow can track to; use sqlite:///path/to/file.db (the "
            f"default, sqlite:///advbench.db) or a server URL ({', '.join(self.SCHEMES)})",
        )
        folder = Path(self.uri.removeprefix("sqlite:///")).parent
        if scheme == "sqlite" and folder.is_absolute() and not folder.is_dir():  # no folders from /
            raise ConfigError(
                f"config key 'tracking.uri': the folder of the SQLite store {self.uri} does not exist; "
                f"create it first (mkdir -p {folder}) or give a store in an existing folder"
            )


@dataclass
class RunConfig(Checked):
    estimator: str = "grpo"  # a registered estimator (estimator=NAME); its knobs: estimator.KNOB=V
    label: str = ""  # display name of this estimator variant (suites, leaderboards); default: estimator
    # Where estimator.KNOB=V lands, {name: {knob: value}}, every knob filled in from the estimator's
    # dataclass when the config is resolved (the older spelling estimator_params.NAME.KNOB=V works).
    estimator_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    seed: int = bounded(0, ge=0)  # the run's seed: its prompt order and sampling (evals: eval.seed)
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    # The policy loss: its name (loss=NAME) and knobs (loss.KNOB=V), checked by the loss registry
    loss: dict[str, Any] = field(default_factory=lambda: {"name": "ppo_clip"})
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    cache_dir: str = "~/.cache/advbench"  # warm-started models and generated eval sets
    threads: int = bounded(0, ge=0)  # torch CPU threads; 0 leaves torch's default
    # Set by validation, not read: the estimator's and the loss's code identity (version:source
    # hash), so the run's identity (config_hash) changes when their code does.
    code: dict[str, str] = field(default_factory=dict)
    # Modules (names or .py paths) that register estimators and losses, besides installed plugins
    # (harness/plugins.py); loaded before validation and in every worker that trains the run.
    plugins: list[str] = field(default_factory=list)

    @property
    def display_label(self) -> str:
        return self.label or self.estimator

    @property
    def run_name(self) -> str:
        return f"{self.display_label}-{self.task.name}-{self.model.name}-s{self.seed}"
