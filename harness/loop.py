"""The training-and-evaluation loop: one run of one estimator, top to bottom.

build_run: the run's objects, once (task, warm-started policy, engine, estimator, loss, optimizer)
run_eval(0), then each step (train_step):
            prompts -> rollout engine (G completions each, with log-probs) -> verifier
            -> rewards [P, G] (sample_and_score) -> estimator -> advantages (estimate)
            -> policy loss -> optimizer step (update_policy) -> step metrics
every eval.every steps (and after the last): run_eval on held-out prompts
every trainer.checkpoint_every steps: RunState.save (RunState.restore resumes from it)
at the end: summary (peak pass@1, time-to-peak, final pass@k) -> MLflow
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from advbench import estimators
from advbench.estimators.group_stats import shuffle_within_groups
from advbench.harness import checkpoint, losses, models, plugins, rollout, tasks, warmstart
from advbench.harness.axes import two_axes
from advbench.harness.config import RunConfig
from advbench.harness.evaluation import (
    CORRECT_COUNTS,
    EvalPoint,
    EvalResult,
    correct_counts,
    evaluate,
    summarize,
)
from advbench.harness.geometry import GeometryProbe
from advbench.harness.metrics import RunSummary
from advbench.harness.rollout import Rollout, SamplingParams, token_logprobs
from advbench.harness.tracking import RunTracker


class NonFiniteError(RuntimeError):
    """NaN or inf in a tensor of the loop: the run stops, naming the step, tensor and estimator."""


def check_finite(tensor: torch.Tensor, name: str, step: int, estimator: str) -> None:
    if not torch.isfinite(tensor).all():
        bad = (~torch.isfinite(tensor)).sum().item()
        raise NonFiniteError(
            f"step {step}: {name} holds {bad} non-finite value(s) (estimator '{estimator}'); "
            "the run is stopped"
        )


class PromptSampler:
    """Shuffled epochs over the training prompts, seeded by the run seed."""

    def __init__(self, prompts: list[tasks.Prompt], seed: int) -> None:
        self.prompts = prompts
        self.rng = np.random.default_rng(seed)
        self.order: list[int] = []

    def state(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "order": list(self.order)}

    def restore(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.order = list(state["order"])

    def next(self, n: int) -> list[tasks.Prompt]:
        while len(self.order) < n:
            self.order.extend(self.rng.permutation(len(self.prompts)).tolist())
        batch, self.order = self.order[:n], self.order[n:]
        return [self.prompts[i] for i in batch]


def peak_memory_gib(device: torch.device) -> float:
    """Peak memory so far, GiB: CUDA memory allocated by torch on a GPU (since the run began), the
    process's peak resident set on the CPU (since the process began: earlier runs in it count)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def machine_dependent(key: str) -> bool:
    """Metrics that measure the machine (wall-clock time, memory), not the learning: they differ
    between identical runs and are left out wherever runs are compared for determinism."""
    return key.startswith(("time/", "system/")) or key.endswith(("_seconds", "_gib"))


class PhaseTimer:
    """Wall-clock seconds per phase of a step (rollout, scoring, estimator, update, logging)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - start


def micro_batches(batch: Rollout, rows: torch.Tensor, budget: int) -> list[torch.Tensor]:
    """Split ``rows`` (in order) into runs whose padded size, rows x (longest prompt + longest
    response among them), stays within ``budget`` tokens; a row alone may exceed it. 0: one run."""
    if not budget:
        return [rows]
    prompt_lengths = batch.prompt_mask.sum(-1)[rows].tolist()
    response_lengths = batch.response_mask.sum(-1)[rows].tolist()
    groups, start, longest_prompt, longest_response = [], 0, 0, 0
    for i, (p, r) in enumerate(zip(prompt_lengths, response_lengths, strict=True)):
        grown = (i - start + 1) * (max(longest_prompt, p) + max(longest_response, r))
        if i > start and grown > budget:
            groups.append(rows[start:i])
            start, longest_prompt, longest_response = i, 0, 0
        longest_prompt, longest_response = max(longest_prompt, p), max(longest_response, r)
    groups.append(rows[start:])
    return groups


def step_seed(seed: int, step: int) -> int:
    """The seed of one step's randomness (its samples, its minibatch order): a function of the run's
    seed and the step only, so a resumed run draws what an uninterrupted one does."""
    return seed * 1_000_003 + step


def update_policy(
    policy: models.Policy,
    optimizer: torch.optim.Optimizer,
    batch: Rollout,
    advantages: torch.Tensor,
    loss: losses.PolicyLoss,
    loss_params: losses.CommonLossParams,
    cfg: RunConfig,
    step: int,
    reference: torch.nn.Module | None = None,
    geometry: GeometryProbe | None = None,
    train_rows: torch.Tensor | None = None,
) -> dict[str, float]:
    """update_epochs passes of minibatch optimizer steps on one rollout batch; returns their metrics.

    ``train_rows`` [B] bool: the samples that enter the loss (the estimator's ``selected``); the
    others count in no normaliser. Default: every row.

    PPO's pi_old is the rollout engine's log-probs when the batch gets a single update and TIS is
    off (the first forward then runs on the sampling weights); otherwise the trainer recomputes
    pi_old for the whole batch first, and the rollout log-probs serve TIS and the mismatch metrics.
    """
    num_rows = batch.response_ids.shape[0]
    # Broadcast [B] outcome advantages over tokens; [B, T] token-level ones are used as they are.
    token_advantages = (
        advantages.unsqueeze(-1).expand_as(batch.logprobs) if advantages.dim() == 1 else advantages
    )
    collected: dict[str, list[float]] = defaultdict(list)
    mask_all = batch.response_mask if train_rows is None else batch.response_mask & train_rows.unsqueeze(-1)
    on_sampling_weights = cfg.trainer.update_epochs * cfg.trainer.minibatches == 1 and not loss_params.tis_cap
    if on_sampling_weights:
        old_logprobs = batch.logprobs
    else:
        old_logprobs = _trainer_logprobs(policy, batch, cfg)
        record_mismatch(collected, old_logprobs, batch.logprobs, mask_all)

    generator = torch.Generator().manual_seed(step_seed(cfg.seed, step))
    geometry_metrics: dict[str, float] = {}
    policy.model.train()
    for epoch in range(cfg.trainer.update_epochs):
        order = (
            torch.randperm(num_rows, generator=generator)
            if cfg.trainer.minibatches > 1
            else torch.arange(num_rows)
        )
        for rows in order.chunk(cfg.trainer.minibatches):
            rows = rows.to(policy.device)
            optimizer.zero_grad(set_to_none=True)
            step_loss = 0.0
            # Micro-batches accumulate gradients; each one's loss is weighted by its share of the
            # optimizer step's normaliser, so the sum is the loss of all its rows (losses.share).
            for micro in micro_batches(batch, rows, cfg.trainer.micro_batch_tokens):
                loss_batch = _loss_batch(
                    policy, reference, batch, micro, mask_all[micro], cfg, old_logprobs, token_advantages
                )
                step_loss += _backward(loss, loss_batch, loss_params, mask_all[rows], cfg, step, collected)
                if epoch == 0:
                    entropy, mask = loss_batch.entropy.detach(), loss_batch.mask
                    collected["policy_entropy"].append(entropy[mask].mean().item())
                    if on_sampling_weights:  # this forward ran on the sampling weights
                        record_mismatch(
                            collected, loss_batch.logprobs.detach(), loss_batch.rollout_logprobs, mask
                        )
            if geometry is not None and epoch == 0 and len(collected["loss"]) == 0:
                geometry_metrics = geometry.observe(step)  # this step's first gradient, before clipping
            grad_norm = torch.nn.utils.clip_grad_norm_(policy.model.parameters(), cfg.trainer.max_grad_norm)
            check_finite(grad_norm, "gradient norm", step, cfg.estimator)
            optimizer.step()
            collected["loss"].append(step_loss)
            collected["grad_norm"].append(grad_norm.item())
    policy.model.eval()
    return {
        **{
            f"train/{key}": (max(values) if key.endswith("_max") else float(np.mean(values)))
            for key, values in collected.items()
        },
        **geometry_metrics,
    }


def _trainer_logprobs(policy: models.Policy, batch: Rollout, cfg: RunConfig) -> torch.Tensor:
    """pi_old as the trainer computes it, for every row, before the batch's first update."""
    budget = cfg.trainer.micro_batch_tokens
    num_rows = batch.response_ids.shape[0]
    with torch.no_grad(), policy.compute():
        return torch.cat(
            [
                token_logprobs(policy.model, batch, micro, cfg.rollout.temperature, trim=bool(budget))[0]
                for rows in torch.arange(num_rows, device=policy.device).chunk(cfg.trainer.minibatches)
                for micro in micro_batches(batch, rows, budget)
            ]
        )


def _loss_batch(
    policy: models.Policy,
    reference: torch.nn.Module | None,
    batch: Rollout,
    micro: torch.Tensor,
    mask: torch.Tensor,
    cfg: RunConfig,
    old_logprobs: torch.Tensor,
    token_advantages: torch.Tensor,
) -> losses.LossBatch:
    """The rows ``micro`` as the loss sees them (tokens in ``mask``): the current policy's log-probs
    and entropy (with gradient), pi_old, the rollout's and the reference's log-probs, the advantages."""
    trim, temperature = bool(cfg.trainer.micro_batch_tokens), cfg.rollout.temperature
    with policy.compute():
        logprobs, entropy = token_logprobs(policy.model, batch, micro, temperature, trim=trim)
        ref_logprobs = None
        if reference is not None:
            with torch.no_grad():
                ref_logprobs = token_logprobs(reference, batch, micro, temperature, trim=trim)[0]
    return losses.LossBatch(
        logprobs=logprobs,
        old_logprobs=old_logprobs[micro],
        advantages=token_advantages[micro],
        mask=mask,
        max_len=cfg.rollout.max_new_tokens,
        rollout_logprobs=batch.logprobs[micro],
        ref_logprobs=ref_logprobs,
        entropy=entropy,
    )


def _backward(
    loss: losses.PolicyLoss,
    loss_batch: losses.LossBatch,
    loss_params: losses.CommonLossParams,
    step_mask: torch.Tensor,
    cfg: RunConfig,
    step: int,
    collected: dict[str, list[float]],
) -> float:
    """The loss of one micro-batch, its gradient accumulated (weighted by its share of the optimizer
    step's normaliser when the step is split); returns its value and collects its metrics."""
    loss_value, metrics = losses.policy_loss(loss, loss_batch, loss_params)
    check_finite(loss_value.detach(), "loss", step, cfg.estimator)
    if cfg.trainer.micro_batch_tokens:
        loss_value = loss_value * losses.share(loss_batch.mask, step_mask, loss_params.aggregation)
    loss_value.backward()
    for key, value in metrics.items():
        collected[key].append(value)
    return loss_value.item()


def record_mismatch(
    collected: dict, trainer: torch.Tensor, rollout: torch.Tensor, mask: torch.Tensor
) -> None:
    """Rollout engine vs trainer on the same tokens and weights: |delta log p| and the k3 KL."""
    with torch.no_grad():
        delta = (trainer - rollout)[mask]
        collected["logprob_mismatch_mean"].append(delta.abs().mean().item() if delta.numel() else 0.0)
        collected["logprob_mismatch_max"].append(delta.abs().max().item() if delta.numel() else 0.0)
        # KL(rollout || trainer) from the rollout's samples: r = trainer / rollout
        collected["mismatch_kl_k3"].append(losses.k3(delta).mean().item() if delta.numel() else 0.0)


@dataclass
class RunResult:
    cfg: RunConfig
    evals: list[EvalResult]
    summary: RunSummary


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Run:
    """A run's objects, built once from its config (``build_run``)."""

    cfg: RunConfig
    task: tasks.Task
    policy: models.Policy
    engine: rollout.Engine
    estimator: estimators.Estimator
    estimator_params: dict[str, Any]
    needs: tuple[str, ...]  # the optional estimator inputs the loop must produce
    loss: losses.PolicyLoss
    loss_params: losses.CommonLossParams
    sampler: PromptSampler
    eval_prompts: list[tasks.Prompt]
    sampling: SamplingParams
    prompts: int  # P per step
    samples: int  # completions per prompt: G, plus the estimator's extra ones
    reference: torch.nn.Module | None = None  # the frozen starting policy, when a KL to it is asked for
    geometry: GeometryProbe | None = None
    # A solo run's optimizer and lr schedule; None for a pack's replica (its pack steps the weights)
    optimizer: torch.optim.Optimizer | None = None
    schedule: torch.optim.lr_scheduler.LambdaLR | None = None


def lr_factor(step: int, steps: int, warmup: int, schedule: str) -> float:
    """The learning rate of training step ``step`` (0-based) of ``steps``, as a fraction of
    trainer.lr: a linear warm-up over ``warmup`` steps, then constant, or decayed (linearly or along
    half a cosine) to zero at step ``steps``."""
    ramp = min(1.0, (step + 1) / max(1, warmup))
    if schedule == "constant":
        return ramp
    progress = min(1.0, max(0.0, (step - warmup) / max(1, steps - warmup)))
    decay = 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return ramp * decay


def build_run(cfg: RunConfig, tracker: RunTracker | None, on_warmstart: Callable | None) -> Run:
    """Task, policy (warm-started), engine, estimator, loss, optimizer, samplers: in this order, as
    the random streams are drawn."""
    plugins.load(cfg.plugins)  # a worker process trains a plugin's estimator too
    task = build_task(cfg, tracker)
    policy = warmstart.load_policy(cfg.model, task, cfg.cache_dir, on_warmstart)
    if cfg.trainer.gradient_checkpointing:
        models.enable_activation_checkpointing(policy.model)
    engine = rollout.build(cfg.rollout, policy)
    if policy.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(policy.device)
    run = run_parts(cfg, task, policy, engine)
    if run.loss_params.kl_coef > 0 or "ref_logprobs" in run.needs:
        run.reference = copy.deepcopy(policy.model).requires_grad_(False).eval()
    geo = cfg.geometry
    if geo.every:
        run.geometry = GeometryProbe(policy.model, geo.modules, geo.every, geo.top_k, geo.zero_tol)
    run.optimizer = torch.optim.AdamW(
        policy.model.parameters(), lr=cfg.trainer.lr, weight_decay=cfg.trainer.weight_decay
    )
    trainer = cfg.trainer
    run.schedule = torch.optim.lr_scheduler.LambdaLR(
        run.optimizer, lambda step: lr_factor(step, trainer.steps, trainer.warmup_steps, trainer.lr_schedule)
    )
    return run


def build_task(cfg: RunConfig, tracker: RunTracker | None) -> tasks.Task:
    """The run's task, its description tagged on the run when it is tracked."""
    task = tasks.build(cfg.task, cfg.cache_dir)
    if tracker:
        for key, value in task.tags().items():
            tracker.set_tag(key, value)
    return task


def run_parts(cfg: RunConfig, task: tasks.Task, policy: models.Policy, engine: rollout.Engine) -> Run:
    """The run's own objects around a built policy and engine: estimator, loss, prompt sampler and
    sampling settings (no optimizer, reference or probe yet: build_run adds them to a solo run, a
    pack (harness/pack.py) steps all its replicas' weights itself)."""
    estimator = estimators.get(cfg.estimator)
    estimator_params = cfg.estimator_params.get(cfg.estimator, {})
    loss = losses.get(cfg.loss["name"])
    return Run(
        cfg=cfg,
        task=task,
        policy=policy,
        engine=engine,
        estimator=estimator,
        estimator_params=estimator_params,
        needs=estimator.required(**estimator_params),
        loss=loss,
        loss_params=loss.params(**{k: v for k, v in cfg.loss.items() if k != "name"}),
        sampler=PromptSampler(task.prompts("train"), cfg.seed),
        eval_prompts=task.prompts("eval"),
        sampling=SamplingParams(cfg.rollout.temperature, cfg.rollout.top_p, cfg.rollout.max_new_tokens),
        prompts=cfg.trainer.prompts_per_step,
        samples=cfg.trainer.group_size + estimator.extra_samples,  # MC-GRPO samples its pivot too
    )


@dataclass
class RunState:
    """Where a run stands after ``step``: with its objects' own states, what a checkpoint holds."""

    step: int = 0
    evals: list[EvalResult] = field(default_factory=list)
    points: list[EvalPoint] = field(default_factory=list)
    progress: EvalPoint = field(default_factory=lambda: EvalPoint(step=0, rollouts=0, tokens=0, seconds=0.0))
    initial_entropy: float | None = None
    estimator_state: Any = None  # a stateful estimator's state, carried from step to step

    def save(self, run: Run, tracker: RunTracker | None) -> None:
        """Checkpoint the run after ``self.step`` (MLflow flushed first, so it holds what was seen)."""
        if tracker:
            tracker.flush()
        checkpoint.save(
            run.cfg,
            tracker,
            {
                "step": self.step,
                "model": run.policy.model.state_dict(),
                "optimizer": run.optimizer.state_dict(),
                "schedule": run.schedule.state_dict(),
                "sampler": run.sampler.state(),
                "rng": checkpoint.rng_state(),
                "evals": [dataclasses.replace(r, samples=[]) for r in self.evals],  # samples: in MLflow
                "points": self.points,
                "progress": self.progress,
                "initial_entropy": self.initial_entropy,
                "estimator_state": dataclasses.asdict(self.estimator_state) if self.estimator_state else None,
                "geometry": run.geometry.previous if run.geometry else {},
                "mlflow_run_id": tracker.run_id if tracker else None,
            },
        )

    @classmethod
    def restore(cls, run: Run, saved: dict) -> RunState:
        """The state a checkpoint holds, its objects' states loaded back into ``run``."""
        run.policy.model.load_state_dict(saved["model"])
        run.optimizer.load_state_dict(saved["optimizer"])
        run.schedule.load_state_dict(saved["schedule"])
        checkpoint.restore_rng(saved["rng"])
        return cls.of_run(run, saved)

    @classmethod
    def of_run(cls, run: Run, saved: dict) -> RunState:
        """What a checkpoint holds of the run's own (its sampler's cursor, its probe's last
        gradient, its evals and estimator state) loaded back, as a solo run and a pack's replica
        save it; the weights and optimizer are the caller's."""
        run.sampler.restore(saved["sampler"])
        if run.geometry:
            # the checkpoint loads onto the CPU; the gradients it is compared with are on the model's device
            device = run.policy.device
            run.geometry.previous = {name: grad.to(device) for name, grad in saved["geometry"].items()}
        return cls(
            step=saved["step"],
            evals=saved["evals"],
            points=saved["points"],
            progress=saved["progress"],
            initial_entropy=saved["initial_entropy"],
            estimator_state=run.estimator.load_state(saved.get("estimator_state")),
        )


def run_eval(run: Run, state: RunState, tracker: RunTracker | None, step: int) -> None:
    """Evaluate on the held-out prompts; the result, and the training progress at it, join the state."""
    cfg = run.cfg
    result = evaluate(
        run.engine, run.task, run.eval_prompts, cfg.eval, cfg.rollout.max_new_tokens, step, seed=cfg.eval.seed
    )
    record_eval(run, state, tracker, result)


def record_eval(run: Run, state: RunState, tracker: RunTracker | None, result: EvalResult) -> None:
    """An eval's result, and the training progress at it, join the run's state (and its MLflow run)."""
    cfg = run.cfg
    state.evals.append(result)
    state.points.append(EvalPoint(**vars(state.progress)))
    if tracker:
        tracker.log_metrics(result.metrics(), result.step)
        tracker.log_jsonl(result.samples, f"eval_samples/step_{result.step:06d}.jsonl")
        tracker.log_text(correct_counts(state.evals, run.eval_prompts, cfg.eval.n), CORRECT_COUNTS)


@dataclass
class Scored:
    """One step's rollout as the verifier scored it."""

    batch: Rollout
    scores: list[tasks.Score]
    rewards: torch.Tensor  # [P, G]
    correct: torch.Tensor  # [P * G]
    greedy_rewards: torch.Tensor | None  # [P], when the estimator needs them (ReMax)


def sample_and_score(run: Run, step: int, prompts: list[tasks.Prompt], timer: PhaseTimer) -> Scored:
    """G completions per prompt (and a greedy one, when the estimator needs it), scored."""
    texts, G = [p.text for p in prompts], run.samples
    with timer("rollout"):
        torch.manual_seed(step_seed(run.cfg.seed, step))  # each step's samples depend on (seed, step) only
        batch = run.engine.generate(texts, G, run.sampling)
        if "greedy_rewards" in run.needs:
            greedy_sampling = SamplingParams(max_new_tokens=run.sampling.max_new_tokens, greedy=True)
            greedy = run.engine.generate(texts, 1, greedy_sampling)
    with timer("scoring"):
        return score_rollout(run, step, prompts, batch, greedy if "greedy_rewards" in run.needs else None)


def score_rollout(
    run: Run, step: int, prompts: list[tasks.Prompt], batch: Rollout, greedy: Rollout | None
) -> Scored:
    """The verifier's scores of one step's rollout (row i*G+j: sample j of prompt i), and of the
    greedy completions when there are some."""
    G = run.samples
    scores = run.task.score_batch([prompts[i // G] for i in range(len(batch.texts))], batch.texts)
    rewards = torch.tensor([s.reward for s in scores], dtype=torch.float32).view(len(prompts), G)
    check_finite(rewards, "rewards", step, run.cfg.estimator)
    greedy_rewards = None
    if greedy is not None:
        greedy_rewards = torch.tensor([s.reward for s in run.task.score_batch(prompts, greedy.texts)])
    correct = torch.tensor([s.correct for s in scores], dtype=torch.float32)
    return Scored(batch, scores, rewards, correct, greedy_rewards)


@dataclass
class Estimated:
    """The estimator's output for one step."""

    advantages: torch.Tensor  # [P, G] or [P, G, T]
    selected: torch.Tensor  # [P, G] bool: the samples that train
    signals: estimators.TrainingSignals
    entropy: float  # the rollout's mean token entropy


def estimate(run: Run, state: RunState, step: int, scored: Scored) -> Estimated:
    """The estimator's advantages for one scored rollout (its state carried in ``state``)."""
    P, G, batch = run.prompts, run.samples, scored.batch
    mask = batch.response_mask
    entropy = float(batch.entropy[mask].mean()) if mask.any() else 0.0
    state.initial_entropy = entropy if state.initial_entropy is None else state.initial_entropy
    ref_logprobs = None
    if "ref_logprobs" in run.needs:  # e.g. REINFORCE++'s KL in the reward
        with torch.no_grad(), run.policy.compute():
            rows = torch.arange(P * G, device=run.policy.device)
            ref_logprobs = token_logprobs(run.reference, batch, rows, run.sampling.temperature)[0]
        ref_logprobs = ref_logprobs.masked_fill(~mask, 0.0).view(P, G, -1)
    advantage_batch = estimators.AdvantageBatch(
        rewards=scored.rewards,
        lengths=batch.lengths.view(P, G),
        response_mask=mask.view(P, G, -1),
        logprobs=batch.logprobs.view(P, G, -1),
        entropy=batch.entropy.view(P, G, -1),
        greedy_rewards=scored.greedy_rewards,
        ref_logprobs=ref_logprobs,
    )
    signals = estimators.TrainingSignals(
        step=step,
        total_steps=run.cfg.trainer.steps,
        batch_pass_rate=float(scored.correct.mean()),
        entropy=entropy,
        initial_entropy=state.initial_entropy,
        state=state.estimator_state,
    )
    advantages = run.estimator(advantage_batch, signals, **run.estimator_params)
    selected = run.estimator.selected(advantage_batch, **run.estimator_params)
    if run.cfg.trainer.shuffle_advantages:  # the null control: same values, no tie to the samples
        generator = torch.Generator().manual_seed(step_seed(run.cfg.seed, step))
        advantages = shuffle_within_groups(advantages, selected, generator)
    check_finite(advantages, "advantages", step, run.cfg.estimator)
    return Estimated(advantages, selected, signals, entropy)


def train_step(run: Run, state: RunState, tracker: RunTracker | None, step: int) -> dict[str, float]:
    """One step: sample, score, estimate, update; returns its metrics (logged when ``tracker``)."""
    P, G, cfg = run.prompts, run.samples, run.cfg
    timer, start = PhaseTimer(), time.perf_counter()
    scored = sample_and_score(run, step, run.sampler.next(P), timer)
    batch = scored.batch
    with timer("estimator"):
        estimated = estimate(run, state, step, scored)
        advantages = estimated.advantages.reshape(P * G, *estimated.advantages.shape[2:]).to(
            run.policy.device
        )
    with timer("update"):
        rows = estimated.selected.reshape(-1).to(run.policy.device)
        update_metrics = update_policy(
            run.policy,
            run.optimizer,
            batch,
            advantages,
            run.loss,
            run.loss_params,
            cfg,
            step,
            run.reference,
            run.geometry,
            train_rows=rows,
        )
        update_metrics["train/lr"] = run.schedule.get_last_lr()[0]
        run.schedule.step()  # per rollout batch, so warm-up counts steps whatever the minibatching
        run.engine.sync(run.policy)
    with timer("logging"):
        metrics = step_metrics(run, state, step, scored, estimated, advantages, update_metrics, start)
        if tracker:
            tracker.log_metrics(metrics, step)
    machine = {f"time/{phase}": seconds for phase, seconds in timer.seconds.items()}
    machine["time/step"] = time.perf_counter() - start
    machine["system/peak_memory_gib"] = peak_memory_gib(run.policy.device)
    if tracker:
        tracker.log_metrics(machine, step)
    return {**metrics, **machine}


def step_metrics(
    run: Run,
    state: RunState,
    step: int,
    scored: Scored,
    estimated: Estimated,
    advantages: torch.Tensor,
    update_metrics: dict[str, float],
    start: float,
) -> dict[str, float]:
    """One step's metrics (the rollout's, the estimator's, the update's, the two axes'), the run's
    progress (steps, rollouts, tokens, seconds since ``start``) advanced by the step."""
    P, G, batch = run.prompts, run.samples, scored.batch
    lengths = batch.lengths.float()
    progress = state.progress
    progress.step, progress.rollouts = step, progress.rollouts + P * G
    progress.tokens += int(lengths.sum())
    progress.seconds += time.perf_counter() - start
    return {
        "train/reward_mean": float(scored.rewards.mean()),
        "train/pass_rate": float(scored.correct.mean()),
        "train/entropy": estimated.entropy,
        "train/response_length": float(lengths.mean()),
        "train/truncated_fraction": float(batch.truncated.float().mean()),
        "train/advantage_abs_mean": float(advantages.abs().mean()),
        "train/verifier_errors": float(sum(s.error for s in scored.scores)),
        "train/rejected_samples": float(sum(s.rejected for s in scored.scores)),
        "train/generated_tokens": float(progress.tokens),
        **update_metrics,
        **two_axes(
            estimated.advantages,
            scored.rewards,
            scored.correct.view(P, G).bool(),
            batch.response_mask.view(P, G, -1),
            run.cfg.loss.get("aggregation", "token_mean"),
            trains=estimated.selected,
        ),
        **{f"estimator/{key}": value for key, value in estimated.signals.diagnostics.items()},
    }


def train(
    cfg: RunConfig,
    tracker: RunTracker | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    on_warmstart: Callable[[int, float], None] | None = None,
    resume: dict | None = None,
) -> RunResult:
    """Run one training run of ``cfg`` and return its evals and summary (logged when ``tracker``).

    ``resume`` is a checkpoint (harness.checkpoint) of this config: the run continues after its step.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    seed_everything(cfg.seed)
    run = build_run(cfg, tracker, on_warmstart)
    every = cfg.trainer.checkpoint_every
    if tracker and every:
        tracker.auto_flush = False  # flush with each checkpoint, so MLflow holds what it has seen
    if resume is None:
        state = RunState(estimator_state=run.estimator.new_state())
        run_eval(run, state, tracker, 0)
    else:
        state = RunState.restore(run, resume)

    for step in range(state.step + 1, cfg.trainer.steps + 1):
        metrics = train_step(run, state, tracker, step)
        state.step = step
        if step % cfg.eval.every == 0 or step == cfg.trainer.steps:
            run_eval(run, state, tracker, step)
            metrics.update(state.evals[-1].metrics())
        if every and step % every == 0 and step < cfg.trainer.steps:
            state.save(run, tracker)
        if on_step:
            on_step(step, metrics)

    summary = summarize(state.evals, state.points, cfg.eval)
    summary.peak_memory_gib = peak_memory_gib(run.policy.device)
    if tracker:
        tracker.log_metrics(summary.metrics(), cfg.trainer.steps)
        tracker.flush()
    checkpoint.remove(cfg, tracker)
    return RunResult(cfg=cfg, evals=state.evals, summary=summary)
