"""Any advbench estimator inside TRL's GRPOTrainer, for runs bigger than one GPU (accelerate,
DeepSpeed, a vLLM server):

    from advbench.harness.adapters.trl import AdvbenchGRPOTrainer
    trainer = AdvbenchGRPOTrainer(model=..., reward_funcs=..., args=GRPOConfig(...),
                                  train_dataset=..., estimator="fade", estimator_params={"ema": 0.05})

Only the advantages change; TRL's sampling, loss (``loss_type``, clipping, KL) and logging stay
TRL's. TRL has no advantage hook (its issues #4525 and #7291), so this subclass overrides two of
its private methods, ``_calculate_rewards`` and ``_generate_and_score_completions``: that is why the
supported TRL versions are pinned (``SUPPORTED_TRL``, the ``trl`` extra) and any other refused.

How the estimator contract is met, per training batch (TRL computes it once per generation):
  rewards  the rewards of every process's completions (TRL gathers them before normalising),
           weighted and summed over the reward functions; a completion every reward function
           returned None for is invalid (TRL's NaN row). Groups: TRL's sampler puts a prompt's
           ``num_generations`` completions next to each other in the gathered batch.
  tokens   response mask, rollout log-probs and token entropy: each process's [B, T] tensors,
           padded to the longest and gathered; ``ref_logprobs`` are TRL's reference log-probs
           (it computes them when ``beta`` != 0). Token-level advantages ([B, T]) go to TRL's loss,
           which takes them as they are.
  trains=  samples an estimator leaves out (psr, nsr, mc_grpo's pivot) get a zero completion mask,
           and TRL's token normaliser ``num_items_in_batch`` is counted again, as in advbench's loop.
  signals  step and total steps from TRL's state; the batch pass rate is the share of valid
           completions with reward >= ``correct_at`` (1.0, advbench's "correct"); entropy is the
           rollout policy's mean token entropy on this batch, computed here with TRL's own
           ``_get_per_token_logps_and_entropies`` (one no-grad forward: TRL's logged "entropy" is
           measured inside the loss, not on the rollout), and the first step's entropy kept.
  logging  the estimator's diagnostics become TRL metrics ``estimator/<key>`` (FADE's alpha, delta).
  state    kept across steps; written to each checkpoint as ``advbench_estimator.json`` and read back
           on resume (TRL's own pattern for its entropy controller's state).

Refused when the trainer is built, naming why: an unknown estimator or hyperparameter (with the
choices), a TRL outside ``SUPPORTED_TRL``, an estimator that needs greedy-completion rewards (ReMax:
TRL samples none), reference log-probs with ``beta`` = 0 (TRL loads no reference then), and
``multi_objective_aggregation="normalize_then_sum"`` (an estimator takes one reward per completion).
TRL's ``scale_rewards`` is not used: the estimator decides its own scale. Eval batches keep TRL's
advantages (they only feed the logged eval loss, and must not move a stateful estimator's state).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from advbench import estimators
from advbench.harness.adapters import AdvantageCall, Groups
from advbench.harness.axes import two_axes
from advbench.harness.config import RunConfig
from advbench.harness.errors import ConfigError
from advbench.harness.evaluation import (
    CORRECT_COUNTS,
    EvalPoint,
    EvalResult,
    correct_counts,
    evaluate,
    summarize,
)
from advbench.harness.models import Policy
from advbench.harness.rollout import HFEngine
from advbench.harness.tasks import Task
from advbench.harness.tracking import RunTracker

try:
    import trl
    from transformers import TrainerCallback
    from trl import GRPOTrainer
except ImportError as exc:  # an optional extra
    raise ImportError("advbench's TRL adapter needs TRL: pip install 'advbench[trl]'") from exc

SUPPORTED_TRL = ">=1.16,<1.17"  # the versions verified here; keep in step with pyproject's `trl` extra
STATE_FILE = "advbench_estimator.json"


def check_trl_version(version: str) -> None:
    """Refuse a TRL outside ``SUPPORTED_TRL``: the adapter overrides its private methods."""
    if Version(version) not in SpecifierSet(SUPPORTED_TRL):
        raise ConfigError(
            f"advbench's TRL adapter supports trl {SUPPORTED_TRL} (pip install 'advbench[trl]'); "
            f"installed: trl {version}"
        )


def task_data(
    task: Task, n: int | None = None, seed: int | None = None
) -> tuple[Any, Callable[..., list[float]]]:
    """An advbench task for TRL: its train prompts as a ``datasets.Dataset`` (column "prompt") and
    a reward function scoring each completion with the task's verifier (``Score.reward``)."""
    from datasets import Dataset

    by_text = {prompt.text: prompt for prompt in task.prompts("train", n, seed)}

    def reward(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
        return [score.reward for score in task.score_batch([by_text[p] for p in prompts], completions)]

    reward.__name__ = f"{task.name}_reward"  # TRL logs rewards/<name>/mean
    return Dataset.from_dict({"prompt": list(by_text)}), reward


class AdvbenchGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer with the advantages of an advbench estimator (module docstring)."""

    def __init__(
        self,
        *args: Any,
        estimator: str = "grpo",
        estimator_params: Mapping[str, Any] | None = None,
        correct_at: float = 1.0,
        **kwargs: Any,
    ) -> None:
        check_trl_version(trl.__version__)
        call = AdvantageCall(
            estimator,
            estimator_params,
            unsupported={"greedy_rewards": "TRL's GRPOTrainer does not sample (no greedy completion)"},
        )
        super().__init__(*args, **kwargs)
        if "ref_logprobs" in call.needs and self.beta == 0.0:
            raise ConfigError(
                f"estimator '{estimator}' needs reference log-probs: set GRPOConfig.beta != 0 "
                "(TRL loads a reference model only then)"
            )
        if self.multi_objective_aggregation != "sum_then_normalize":
            raise ConfigError(
                "multi_objective_aggregation must be 'sum_then_normalize' with an advbench estimator "
                f"(it takes one reward per completion), got '{self.multi_objective_aggregation}'"
            )
        self.advantage_call, self.correct_at = call, correct_at
        self.trl_advantages: torch.Tensor | None = None  # TRL's own, of the last training batch
        self._gathered_rewards: torch.Tensor | None = None
        self.rollouts = self.generated_tokens = 0  # training completions and their tokens so far

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._gathered_rewards = rewards_per_func  # [B of every process, reward functions]
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if not self.model.training:
            return output
        self.trl_advantages = output["advantages"]
        advantages, kept = self._advbench_advantages(output)
        mask = output["completion_mask"] * kept.unsqueeze(1).to(output["completion_mask"].dtype)
        loss_mask = mask if output.get("tool_mask") is None else mask * output["tool_mask"]
        output["completion_mask"] = mask
        output["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
        output["advantages"] = advantages
        return output

    def _advbench_advantages(self, output: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's advantages ([B] or [B, T]) and kept samples ([B] bool), from the whole batch."""
        per_func = self._gathered_rewards
        weights = self.reward_weights.to(per_func.device).unsqueeze(0)
        valid = ~torch.isnan(per_func).all(dim=1)
        rewards = (per_func * weights).nansum(dim=1).masked_fill(~valid, 0.0)
        local_mask = output["completion_mask"].bool()
        logps, entropy = self._rollout_logps_and_entropy(output)
        tokens = {"response_mask": local_mask, "logprobs": logps, "entropy": entropy}
        if output.get("ref_per_token_logps") is not None:
            tokens["ref_logprobs"] = output["ref_per_token_logps"]
        tokens = {key: self._gather_tokens(value) for key, value in tokens.items()}
        signals = estimators.TrainingSignals(
            step=self.state.global_step,
            total_steps=max(self.state.max_steps, 1),
            batch_pass_rate=float((rewards[valid] >= self.correct_at).float().mean()) if valid.any() else 0.0,
            entropy=self._mean_entropy(entropy, local_mask),
        )
        groups = Groups.consecutive(rewards.numel(), self.num_generations)
        advantages, kept = self.advantage_call(groups, rewards, valid, tokens, signals)
        self.rollouts += int(valid.numel())
        self.generated_tokens += int(tokens["response_mask"].sum())
        measured = two_axes(
            groups.grid(advantages),
            groups.grid(rewards),
            groups.grid(rewards >= self.correct_at, fill=False),
            groups.grid(tokens["response_mask"]),
            AGGREGATION_OF.get(self.loss_type, "token_mean"),
            valid=groups.grid(valid, fill=False),  # empty slots (fill) are invalid too
            trains=groups.grid(kept, fill=False),
        )
        for key, value in {
            **measured,
            **{f"estimator/{k}": v for k, v in signals.diagnostics.items()},
        }.items():
            self._metrics["train"][key].append(float(value))
        rows = slice(
            self.accelerator.process_index * local_mask.shape[0],
            (self.accelerator.process_index + 1) * local_mask.shape[0],
        )
        advantages = advantages[rows]
        if advantages.dim() == 2:
            advantages = advantages[:, : local_mask.shape[1]]
        return advantages.to(local_mask.device), kept[rows].to(local_mask.device)

    @torch.no_grad()
    def _rollout_logps_and_entropy(self, output: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """The sampled tokens' log-probs and the token entropy of the policy that sampled them: TRL's
        own forward (its temperature included); vLLM's sampling log-probs when TRL has them."""
        ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        attention = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        logps, entropy, _ = self._get_per_token_logps_and_entropies(
            self.model,
            ids,
            attention,
            output["completion_ids"].size(1),
            batch_size=self.args.per_device_train_batch_size,
            compute_entropy=True,
        )
        sampled = output.get("sampling_per_token_logps")
        return (logps if sampled is None else torch.nan_to_num(sampled, nan=0.0)), entropy

    def _gather_tokens(self, value: torch.Tensor) -> torch.Tensor:
        """[B, T] of this process -> [B of every process, longest T] (padded with zeros)."""
        padded = self.accelerator.pad_across_processes(value, dim=1, pad_index=0)
        return self.accelerator.gather(padded)

    def _mean_entropy(self, entropy: torch.Tensor, mask: torch.Tensor) -> float:
        """The mean token entropy over the completions of every process."""
        local = torch.stack([(entropy * mask).sum(), mask.sum()]).float()
        total, count = self.accelerator.gather(local.unsqueeze(0)).sum(dim=0).tolist()
        return total / count if count else 0.0

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
            with open(os.path.join(folder, STATE_FILE), "w") as handle:
                json.dump(self.advantage_call.state_dict(), handle)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        path = None if checkpoint is None else os.path.join(checkpoint, STATE_FILE)
        if path is not None and os.path.exists(path):
            with open(path) as handle:
                self.advantage_call.load_state_dict(json.load(handle))


class AdvbenchEval(TrainerCallback):
    """advbench's evaluation inside a TRL run, so that the run lands on advbench's leaderboard.

    Before the first step, every ``cfg.eval.every`` steps and after the last, the held-out prompts
    of ``task`` are sampled and scored as ``advbench run`` does (``evaluation.evaluate``: the same
    prompts, n, temperature and eval stream), on the main process; the metrics go to the MLflow run
    TRL's MLflow callback opened (``report_to="mlflow"``), under advbench's names (eval/pass_at_k,
    ...), with the per-prompt correct counts as an artifact and, at the end, the run's summary (the
    time-to-peak protocol, ``evaluation.summarize``) and the tags ``advbench leaderboard --runs``
    reads: advbench.trainer, advbench.label, advbench.task, advbench.model, advbench.seed.
    The main process generates alone, so the weights must be whole on it: DDP or ZeRO-1/2, not
    ZeRO-3 or FSDP's sharded parameters (the other processes would wait at TRL's next collective).
    """

    def __init__(self, trainer: AdvbenchGRPOTrainer, task: Task, cfg: RunConfig, label: str | None = None):
        self.trainer, self.task, self.cfg = trainer, task, cfg
        self.label = label or trainer.advantage_call.name
        self.prompts = task.prompts("eval")
        self.results: list[EvalResult] = []
        self.points: list[EvalPoint] = []
        self.summary = None
        self.tracker: RunTracker | None = None
        self._eval_seconds, self._start = 0.0, time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        import mlflow

        self._start = time.perf_counter()
        active = mlflow.active_run() if state.is_world_process_zero else None
        # by id: TRL's MLflow callback may close the run before ``on_train_end`` reaches this one
        self.tracker = RunTracker(mlflow.MlflowClient(), active.info.run_id) if active else None
        self._log(
            tags={
                "advbench.trainer": "trl",
                "advbench.label": self.label,
                "advbench.estimator": self.trainer.advantage_call.name,
                "advbench.estimator_params": json.dumps(self.trainer.advantage_call.params, sort_keys=True),
                "advbench.task": self.task.name,
                "advbench.model": self.cfg.model.name
                if not self.cfg.model.path
                else str(self.cfg.model.path),
                "advbench.seed": str(args.seed),
            }
        )
        self._evaluate(state)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.cfg.eval.every == 0:
            self._evaluate(state)

    def on_train_end(self, args, state, control, **kwargs):
        if not self.points or self.points[-1].step != state.global_step:
            self._evaluate(state)
        if state.is_world_process_zero and len(self.results) > 0:
            self.summary = summarize(self.results, self.points, self.cfg.eval)
            self._log(metrics=self.summary.metrics(), step=state.global_step)

    def _evaluate(self, state) -> None:
        if not state.is_world_process_zero:
            return
        started = time.perf_counter()
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        training = model.training
        model.eval()
        policy = Policy(model, self.trainer.processing_class, model.device, path=None)
        cfg = self.cfg
        result = evaluate(
            HFEngine(policy),
            self.task,
            self.prompts,
            cfg.eval,
            cfg.rollout.max_new_tokens,
            state.global_step,
            cfg.eval.seed,
        )
        model.train(training)
        self.results.append(result)
        seconds = started - self._start - self._eval_seconds  # training time, evals excluded
        self.points.append(
            EvalPoint(state.global_step, self.trainer.rollouts, self.trainer.generated_tokens, seconds)
        )
        self._eval_seconds += time.perf_counter() - started
        self._log(metrics=result.metrics(), step=state.global_step)
        if self.tracker:
            self.tracker.log_text(correct_counts(self.results, self.prompts, cfg.eval.n), CORRECT_COUNTS)

    def _log(
        self, metrics: dict[str, float] | None = None, step: int = 0, tags: dict[str, str] | None = None
    ):
        """To the run TRL opened, through advbench's own run tracker (batched, retried)."""
        if self.tracker is None:
            return
        for key, value in (tags or {}).items():
            self.tracker.set_tag(key, value)
        self.tracker.log_metrics(metrics or {}, step)
        self.tracker.flush()


# advbench's loss aggregation -> TRL's loss_type (the same normaliser)
LOSS_TYPES = {"token_mean": "dapo", "seq_mean_token_mean": "grpo", "seq_sum_const": "dr_grpo"}
AGGREGATION_OF = {loss_type: ours for ours, loss_type in LOSS_TYPES.items()}  # for the two axes' weights


def grpo_config(cfg: RunConfig, output_dir: str, world_size: int = 1, **overrides: Any) -> trl.GRPOConfig:
    """TRL's GRPOConfig for an advbench run config: the same batch (P prompts x G completions a step,
    split over ``world_size`` processes), sampling, optimiser, steps and seed; TRL's ppo_clip with
    advbench's clip range and aggregation, and its KL to the reference as ``beta``. advbench's other
    losses (dppo, drpo, ...) have no TRL equivalent: refused (verl's registry has dppo and drpo)."""
    loss = dict(cfg.loss)
    if loss["name"] != "ppo_clip":
        raise ConfigError(
            f"config key 'loss': TRL's GRPOTrainer computes its own loss; only ppo_clip maps onto it "
            f"(got '{loss['name']}'; dppo and drpo run in verl: advbench.harness.adapters.verl)"
        )
    batch = cfg.trainer.prompts_per_step * cfg.trainer.group_size
    if batch % world_size:
        raise ConfigError(f"{batch} completions a step do not split over {world_size} processes")
    args = dict(
        output_dir=output_dir,
        per_device_train_batch_size=batch // world_size,
        num_generations=cfg.trainer.group_size,
        max_completion_length=cfg.rollout.max_new_tokens,
        temperature=cfg.rollout.temperature,
        top_p=cfg.rollout.top_p,
        learning_rate=cfg.trainer.lr,
        warmup_steps=cfg.trainer.warmup_steps,
        weight_decay=cfg.trainer.weight_decay,
        max_grad_norm=cfg.trainer.max_grad_norm,
        num_iterations=cfg.trainer.update_epochs,
        max_steps=cfg.trainer.steps,
        seed=cfg.seed,
        epsilon=loss.get("clip_low", 0.2),
        epsilon_high=loss.get("clip_high", 0.2),
        loss_type=LOSS_TYPES[loss.get("aggregation", "token_mean")],
        beta=loss.get("kl_coef", 0.0),
        bf16=cfg.model.dtype == "bfloat16",
        use_cpu=cfg.model.device == "cpu",
        logging_steps=1,
        report_to=["mlflow"],
        save_strategy="steps",
        save_steps=max(1, cfg.trainer.checkpoint_every)
        if cfg.trainer.checkpoint_every
        else cfg.trainer.steps,
    )
    args.update(overrides)
    return trl.GRPOConfig(**args)


def build_trainer(
    cfg: RunConfig, output_dir: str, world_size: int = 1, **overrides: Any
) -> AdvbenchGRPOTrainer:
    """A TRL trainer for an advbench run config (``config.load``): its estimator and hyperparameters,
    task (train prompts and verifier), model (``model.path``, or the tiny model's warm start) and
    batch (``grpo_config``), with advbench's evaluation (``AdvbenchEval``) logging to the config's
    MLflow store and experiment, where ``advbench leaderboard EXPERIMENT --runs`` reads it."""
    from advbench.harness import tasks, warmstart
    from advbench.harness.tracking import Tracker

    call = AdvantageCall(cfg.estimator, cfg.estimator_params.get(cfg.estimator))  # fails before any loading
    Tracker(cfg.tracking)  # the experiment, created with the config's artifact root if new
    import mlflow

    # transformers' MLflow callback reads the environment; mlflow's own setting, when a caller made one, wins
    os.environ["MLFLOW_TRACKING_URI"] = cfg.tracking.uri
    os.environ["MLFLOW_EXPERIMENT_NAME"] = cfg.tracking.experiment
    mlflow.set_tracking_uri(cfg.tracking.uri)
    task = tasks.build(cfg.task, cfg.cache_dir)
    path = cfg.model.path or str(warmstart.load_tiny(cfg.model, task, cfg.cache_dir))
    tokenizer = warmstart.load_tokenizer(path)
    dataset, reward = task_data(task, seed=cfg.seed)
    trainer = AdvbenchGRPOTrainer(
        model=str(path),
        reward_funcs=reward,
        args=grpo_config(cfg, output_dir, world_size, **overrides),
        train_dataset=dataset,
        processing_class=tokenizer,
        estimator=call.name,
        estimator_params=call.params,
    )
    trainer.add_callback(AdvbenchEval(trainer, task, cfg, label=cfg.label or None))
    return trainer
