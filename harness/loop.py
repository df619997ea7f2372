"""The training-and-evaluation loop: one run of one estimator, top to bottom.

each step:  prompts -> rollout engine (G completions each, with log-probs)
            -> verifier -> rewards [P, G] -> estimator -> advantages
            -> policy loss -> optimizer step -> step metrics
every eval.every steps (and before the first, after the last): eval on held-out prompts
at the end: summary (peak pass@1, time-to-peak, final pass@k) -> MLflow
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from advbench import estimators
from advbench.harness import checkpoint, losses, models, plugins, rollout, tasks
from advbench.harness.axes import two_axes
from advbench.harness.config import RunConfig
from advbench.harness.evaluation import EvalPoint, EvalResult, evaluate, summarize
from advbench.harness.geometry import GeometryProbe
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
    temperature = cfg.rollout.temperature
    # Broadcast [B] outcome advantages over tokens; [B, T] token-level ones are used as they are.
    token_advantages = (
        advantages.unsqueeze(-1).expand_as(batch.logprobs) if advantages.dim() == 1 else advantages
    )
    collected: dict[str, list[float]] = defaultdict(list)
    mask_all = batch.response_mask if train_rows is None else batch.response_mask & train_rows.unsqueeze(-1)
    single_update = cfg.trainer.update_epochs * cfg.trainer.minibatches == 1
    budget = cfg.trainer.micro_batch_tokens  # 0: each optimizer step is one forward
    if single_update and not loss_params.tis_cap:
        old_logprobs = batch.logprobs
    else:
        with torch.no_grad(), policy.compute():
            old_logprobs = torch.cat(
                [
                    token_logprobs(policy.model, batch, micro, temperature, trim=bool(budget))[0]
                    for rows in torch.arange(num_rows, device=policy.device).chunk(cfg.trainer.minibatches)
                    for micro in micro_batches(batch, rows, budget)
                ]
            )
        _record_mismatch(collected, old_logprobs, batch.logprobs, mask_all)

    generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
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
            for micro in micro_batches(batch, rows, budget):
                mask = mask_all[micro]
                with policy.compute():
                    logprobs, entropy = token_logprobs(
                        policy.model, batch, micro, temperature, trim=bool(budget)
                    )
                    ref_logprobs = None
                    if reference is not None:
                        with torch.no_grad():
                            ref_logprobs = token_logprobs(
                                reference, batch, micro, temperature, trim=bool(budget)
                            )[0]
                loss_batch = losses.LossBatch(
                    logprobs=logprobs,
                    old_logprobs=old_logprobs[micro],
                    advantages=token_advantages[micro],
                    mask=mask,
                    max_len=cfg.rollout.max_new_tokens,
                    rollout_logprobs=batch.logprobs[micro],
                    ref_logprobs=ref_logprobs,
                    entropy=entropy,
                )
                loss_value, metrics = losses.policy_loss(loss, loss_batch, loss_params)
                check_finite(loss_value.detach(), "loss", step, cfg.estimator)
                if budget:
                    loss_value = loss_value * losses.share(mask, mask_all[rows], loss_params.aggregation)
                loss_value.backward()
                step_loss += loss_value.item()
                for key, value in metrics.items():
                    collected[key].append(value)
                if epoch == 0:
                    collected["policy_entropy"].append(entropy.detach()[mask].mean().item())
                    if single_update and not loss_params.tis_cap:  # this forward ran on the sampling weights
                        _record_mismatch(collected, logprobs.detach(), batch.logprobs[micro], mask)
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


def _record_mismatch(
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
    summary: dict[str, float]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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

    plugins.load(cfg.plugins)  # a worker process trains a plugin's estimator too
    task = tasks.build(cfg.task, cfg.cache_dir)
    if tracker:
        for key, value in task.tags().items():
            tracker.set_tag(key, value)
    policy = models.load_policy(cfg.model, task, cfg.cache_dir, on_warmstart)
    if cfg.trainer.gradient_checkpointing:
        models.enable_activation_checkpointing(policy.model)
    engine = rollout.build(cfg.rollout, policy)
    if policy.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(policy.device)
    estimator = estimators.get(cfg.estimator)
    estimator_params = cfg.estimator_params.get(cfg.estimator, {})
    needs = estimator.required(**estimator_params)
    estimator_state = estimator.new_state()  # a stateful estimator's state, carried and checkpointed
    loss = losses.get(cfg.loss["name"])
    loss_params = loss.params(**{k: v for k, v in cfg.loss.items() if k != "name"})
    # A frozen copy of the starting policy, only when a KL to it is asked for (loss or estimator).
    reference = (
        copy.deepcopy(policy.model).requires_grad_(False).eval()
        if loss_params.kl_coef > 0 or "ref_logprobs" in needs
        else None
    )
    geo = cfg.geometry
    geometry = (
        GeometryProbe(policy.model, geo.modules, geo.every, geo.top_k, geo.zero_tol) if geo.every else None
    )
    optimizer = torch.optim.AdamW(
        policy.model.parameters(), lr=cfg.trainer.lr, weight_decay=cfg.trainer.weight_decay
    )
    warmup = max(1, cfg.trainer.warmup_steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda update: min(1.0, (update + 1) / warmup))
    sampler = PromptSampler(task.prompts("train"), cfg.seed)
    eval_prompts = task.prompts("eval")
    sampling = SamplingParams(cfg.rollout.temperature, cfg.rollout.top_p, cfg.rollout.max_new_tokens)
    P = cfg.trainer.prompts_per_step
    G = cfg.trainer.group_size + estimator.extra_samples  # MC-GRPO samples one more (its pivot)

    evals: list[EvalResult] = []
    points: list[EvalPoint] = []
    progress = EvalPoint(step=0, rollouts=0, tokens=0, seconds=0.0)
    initial_entropy: float | None = None
    every = cfg.trainer.checkpoint_every
    if tracker and every:
        tracker.auto_flush = False  # flush with each checkpoint, so MLflow holds what it has seen

    def run_eval(step: int) -> None:
        result = evaluate(
            engine, task, eval_prompts, cfg.eval, cfg.rollout.max_new_tokens, step, seed=cfg.seed
        )
        evals.append(result)
        points.append(EvalPoint(**vars(progress)))
        if tracker:
            tracker.log_metrics(result.metrics(), step)
            tracker.log_jsonl(result.samples, f"eval_samples/step_{step:06d}.jsonl")
            tracker.log_text(
                json.dumps(
                    {
                        "n": cfg.eval.n,
                        "prompts": [p.text for p in eval_prompts],
                        "correct": {str(r.step): r.correct for r in evals},
                    }
                ),
                "eval_correct_counts.json",
            )

    def save_checkpoint(step: int) -> None:
        if tracker:
            tracker.flush()
        checkpoint.save(
            cfg,
            {
                "step": step,
                "model": policy.model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "sampler": sampler.state(),
                "rng": checkpoint.rng_state(),
                "evals": [dataclasses.replace(r, samples=[]) for r in evals],  # samples are in MLflow
                "points": points,
                "progress": progress,
                "initial_entropy": initial_entropy,
                "estimator_state": dataclasses.asdict(estimator_state) if estimator_state else None,
                "geometry": geometry.previous if geometry else {},
                "mlflow_run_id": tracker.run_id if tracker else None,
            },
        )

    if resume is None:
        run_eval(0)
        first_step = 1
    else:
        policy.model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        schedule.load_state_dict(resume["schedule"])
        sampler.restore(resume["sampler"])
        checkpoint.restore_rng(resume["rng"])
        evals, points, progress = resume["evals"], resume["points"], resume["progress"]
        initial_entropy = resume["initial_entropy"]
        estimator_state = estimator.load_state(resume.get("estimator_state"))
        if geometry:
            geometry.previous = resume["geometry"]
        first_step = resume["step"] + 1
    for step in range(first_step, cfg.trainer.steps + 1):
        timer = PhaseTimer()
        step_start = time.perf_counter()

        prompts = sampler.next(P)
        with timer("rollout"):
            torch.manual_seed(cfg.seed * 1_000_003 + step)  # each step's samples depend on (seed, step) only
            batch = engine.generate([p.text for p in prompts], G, sampling)
            if "greedy_rewards" in needs:  # e.g. ReMax's baseline
                greedy = engine.generate(
                    [p.text for p in prompts],
                    1,
                    SamplingParams(max_new_tokens=sampling.max_new_tokens, greedy=True),
                )

        with timer("scoring"):
            scores = task.score_batch([prompts[i // G] for i in range(len(batch.texts))], batch.texts)
            rewards = torch.tensor([s.reward for s in scores], dtype=torch.float32).view(P, G)
            correct = torch.tensor([s.correct for s in scores], dtype=torch.float32)
            check_finite(rewards, "rewards", step, cfg.estimator)
            greedy_rewards = None
            if "greedy_rewards" in needs:
                greedy_rewards = torch.tensor([s.reward for s in task.score_batch(prompts, greedy.texts)])

        with timer("estimator"):
            mask = batch.response_mask
            rollout_entropy = float(batch.entropy[mask].mean()) if mask.any() else 0.0
            initial_entropy = rollout_entropy if initial_entropy is None else initial_entropy
            ref_logprobs = None
            if "ref_logprobs" in needs:  # e.g. REINFORCE++'s KL in the reward
                with torch.no_grad(), policy.compute():
                    rows = torch.arange(P * G, device=policy.device)
                    ref_logprobs = token_logprobs(reference, batch, rows, sampling.temperature)[0]
                ref_logprobs = ref_logprobs.masked_fill(~mask, 0.0).view(P, G, -1)
            advantage_batch = estimators.AdvantageBatch(
                rewards=rewards,
                lengths=batch.lengths.view(P, G),
                response_mask=mask.view(P, G, -1),
                logprobs=batch.logprobs.view(P, G, -1),
                entropy=batch.entropy.view(P, G, -1),
                greedy_rewards=greedy_rewards,
                ref_logprobs=ref_logprobs,
            )
            signals = estimators.TrainingSignals(
                step=step,
                total_steps=cfg.trainer.steps,
                batch_pass_rate=float(correct.mean()),
                entropy=rollout_entropy,
                initial_entropy=initial_entropy,
                state=estimator_state,
            )
            group_advantages = estimator(advantage_batch, signals, **estimator_params)
            selected = estimator.selected(advantage_batch, **estimator_params)  # the samples that train
            check_finite(group_advantages, "advantages", step, cfg.estimator)
            advantages = group_advantages.reshape(P * G, *group_advantages.shape[2:]).to(policy.device)

        with timer("update"):
            update_metrics = update_policy(
                policy,
                optimizer,
                batch,
                advantages,
                loss,
                loss_params,
                cfg,
                step,
                reference,
                geometry,
                train_rows=selected.reshape(-1).to(policy.device),
            )
            update_metrics["train/lr"] = schedule.get_last_lr()[0]
            schedule.step()  # per rollout batch, so warm-up counts steps whatever the minibatching
            engine.sync(policy)

        with timer("logging"):
            lengths = batch.lengths.float()
            progress.step, progress.rollouts = step, progress.rollouts + P * G
            progress.tokens += int(lengths.sum())
            progress.seconds += time.perf_counter() - step_start
            metrics = {
                "train/reward_mean": float(rewards.mean()),
                "train/pass_rate": float(correct.mean()),
                "train/entropy": rollout_entropy,
                "train/response_length": float(lengths.mean()),
                "train/truncated_fraction": float(batch.truncated.float().mean()),
                "train/advantage_abs_mean": float(advantages.abs().mean()),
                "train/verifier_errors": float(sum(s.error for s in scores)),
                "train/rejected_samples": float(sum(s.rejected for s in scores)),
                "train/generated_tokens": float(progress.tokens),
                **update_metrics,
                **two_axes(
                    group_advantages,
                    rewards,
                    correct.view(P, G).bool(),
                    mask.view(P, G, -1),
                    cfg.loss.get("aggregation", "token_mean"),
                    trains=selected,
                ),
                **{f"estimator/{key}": value for key, value in signals.diagnostics.items()},
            }
            if tracker:
                tracker.log_metrics(metrics, step)

        metrics.update({f"time/{phase}": seconds for phase, seconds in timer.seconds.items()})
        metrics["time/step"] = time.perf_counter() - step_start
        metrics["system/peak_memory_gib"] = peak_memory_gib(policy.device)
        if tracker:
            tracker.log_metrics(
                {k: v for k, v in metrics.items() if k.startswith(("time/", "system/"))}, step
            )
        if step % cfg.eval.every == 0 or step == cfg.trainer.steps:
            run_eval(step)
            metrics.update(evals[-1].metrics())
        if every and step % every == 0 and step < cfg.trainer.steps:
            save_checkpoint(step)
        if on_step:
            on_step(step, metrics)

    summary = summarize(evals, points, cfg.eval)
    summary["summary/peak_memory_gib"] = peak_memory_gib(policy.device)
    if tracker:
        tracker.log_metrics(summary, cfg.trainer.steps)
        tracker.flush()
    checkpoint.remove(cfg)
    return RunResult(cfg=cfg, evals=evals, summary=summary)
