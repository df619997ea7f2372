"""Packs: N runs of one built-in scale trained in one process as one batched model.

Every weight of the policy gains a leading replica dimension ([N, ...]). The model stays
transformers' own Qwen2 (or Llama): its Linear, Embedding and RMSNorm modules are swapped for
replica-aware ones (a batched matmul, an offset lookup, a per-replica scale), so attention, the KV
cache and ``generate`` see N x B rows unchanged, replica r's rows being the r-th block of B (on a
CPU, groups of REPLICAS_PER_CALL replicas at a time: ``replica_window``). This
is torch.func's model ensembling (stack_module_state + vmap over functional_call) written as
modules, so generate and its cache work as they are.

Each replica stays a run of its own: its config (seed, estimator, loss, learning rate and schedule,
clipping, weight decay), prompt stream, sampling stream (harness/rollout/hf.py, _GumbelMax), estimator
state, checkpoint and MLflow run. Independence is by construction: a row only ever meets its own
replica's weights; gradients are clipped by each replica's own norm (``clip_per_replica``); AdamW's
moments, step count and learning rate are per replica (``ReplicaAdamW``); a replica whose rewards,
advantages, loss or gradient turn non-finite stops alone, its update skipped, the others unchanged.
Nothing draws from torch's global random stream, so a replica's numbers do not depend on which
runs share its pack, beyond float rounding (a pack pads its prompts to the longest in its call).

A packed run's identity records that it ran packed (``trainer.packed``: its float path differs
from a solo run's), never its pack's composition, so re-packing a suite does not retrain finished
runs. Which cells can share a pack: harness/suites.py (``pack_key``, ``unpackable``).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from advbench.harness import checkpoint, losses, models, warmstart
from advbench.harness.config import ConfigError, RunConfig
from advbench.harness.evaluation import eval_sampling, score_eval, summarize
from advbench.harness.geometry import GeometryProbe
from advbench.harness.loop import (
    NonFiniteError,
    PhaseTimer,
    Run,
    RunResult,
    RunState,
    build_task,
    check_finite,
    estimate,
    lr_factor,
    micro_batches,
    peak_memory_gib,
    record_eval,
    record_mismatch,
    run_parts,
    score_rollout,
    seed_everything,
    step_metrics,
    step_seed,
)
from advbench.harness.rollout import HFEngine, Rollout, SamplingParams, sampling_precision, token_logprobs
from advbench.harness.suites import as_packed, pack_key, unpackable

# -- replica-aware modules -------------------------------------------------------------------


class _Replicated(nn.Module):
    """A replica-aware module: its weights' first dimension is the replica. ``window`` (a slice of
    replicas, set by ``replica_window``) makes it compute for those replicas alone, on views of
    their weights: the rows it is given are then that window's blocks."""

    window: slice | None = None

    def _of(self, tensor: torch.Tensor | None) -> torch.Tensor | None:
        return tensor if tensor is None or self.window is None else tensor[self.window]


class ReplicaLinear(_Replicated):
    """``nn.Linear`` for N replicas: weight [N, out, in], bias [N, out]; rows in N equal blocks."""

    def __init__(self, weight: nn.Parameter, bias: nn.Parameter | None) -> None:
        super().__init__()
        self.weight, self.bias = weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self._of(self.weight), self._of(self.bias)
        flat = x.reshape(weight.shape[0], -1, x.shape[-1])
        weight = weight.transpose(1, 2)
        out = torch.bmm(flat, weight) if bias is None else torch.baddbmm(bias.unsqueeze(1), flat, weight)
        return out.reshape(*x.shape[:-1], out.shape[-1])


class ReplicaEmbedding(_Replicated):
    """``nn.Embedding`` for N replicas: weight [N, V, H]; replica r's ids look up its own table.
    The padding id's row gets no gradient from the lookup, as nn.Embedding's padding_idx."""

    def __init__(self, weight: nn.Parameter, padding_idx: int | None) -> None:
        super().__init__()
        self.weight, self.padding_idx = weight, padding_idx

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        weight = self._of(self.weight)
        n, vocab = weight.shape[:2]
        offsets = torch.arange(n, device=ids.device).unsqueeze(1) * vocab
        out = nn.functional.embedding(ids.reshape(n, -1) + offsets, weight.reshape(n * vocab, -1))
        out = out.reshape(*ids.shape, -1)
        if self.padding_idx is not None:
            out = torch.where((ids == self.padding_idx).unsqueeze(-1), out.detach(), out)
        return out


class ReplicaRMSNorm(_Replicated):
    """Qwen2's (and Llama's) RMSNorm for N replicas: weight [N, H], the same arithmetic."""

    def __init__(self, weight: nn.Parameter, eps: float) -> None:
        super().__init__()
        self.weight, self.variance_epsilon = weight, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        hidden = x.to(torch.float32)
        hidden = hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        weight = self._of(self.weight)
        blocks = hidden.to(dtype).reshape(weight.shape[0], -1, x.shape[-1])
        return (weight.unsqueeze(1) * blocks).reshape(x.shape)


@contextlib.contextmanager
def replica_window(packed: nn.Module, replicas: slice):
    """Within it, ``packed`` computes for ``replicas`` alone, as a pack of those replicas would
    (views of their weights, nothing copied): for generating in groups of replicas."""
    modules = [m for m in packed.modules() if isinstance(m, _Replicated)]
    for module in modules:
        module.window = replicas
    try:
        yield
    finally:
        for module in modules:
            module.window = None


def _is_rms_norm(module: nn.Module) -> bool:
    return type(module).__name__.endswith("RMSNorm") and hasattr(module, "variance_epsilon")


def pack_models(solo: Sequence[nn.Module]) -> nn.Module:
    """One model holding ``solo``'s N models (same architecture) as replicas: a copy of the first
    with every Linear, Embedding and RMSNorm replaced by its replica-aware twin over the N stacked
    weights. Tied weights stay tied. Any other parameter is refused (nothing would replicate it)."""
    packed = copy.deepcopy(solo[0])
    stacked: dict[int, nn.Parameter] = {}  # id(first model's parameter) -> its stacked twin

    def stack(name: str, attr: str) -> nn.Parameter | None:
        first = getattr(solo[0].get_submodule(name), attr)
        if first is None:
            return None
        if id(first) not in stacked:
            tensors = [getattr(model.get_submodule(name), attr).detach() for model in solo]
            stacked[id(first)] = nn.Parameter(torch.stack(tensors).clone(), requires_grad=first.requires_grad)
        return stacked[id(first)]

    for name, module in list(solo[0].named_modules()):
        if isinstance(module, nn.Linear):
            twin = ReplicaLinear(stack(name, "weight"), stack(name, "bias"))
        elif isinstance(module, nn.Embedding):
            twin = ReplicaEmbedding(stack(name, "weight"), module.padding_idx)
        elif _is_rms_norm(module):
            twin = ReplicaRMSNorm(stack(name, "weight"), module.variance_epsilon)
        else:
            continue
        parent, _, child = name.rpartition(".")
        setattr(packed.get_submodule(parent) if parent else packed, child, twin)
    left = [name for name, p in packed.named_parameters() if p.dim() == 0 or p.shape[0] != len(solo)]
    replicated = {id(p) for p in stacked.values()}
    left += [name for name, p in packed.named_parameters() if id(p) not in replicated]
    if left:
        raise ConfigError(
            f"a pack cannot replicate these weights of the model: {', '.join(sorted(set(left)))}"
        )
    return packed


def replica_names(packed: nn.Module) -> set[str]:
    """The state_dict keys that hold replicated weights (the others, e.g. rotary tables, are shared)."""
    params = {id(p) for p in packed.parameters()}
    return {name for name, t in packed.state_dict(keep_vars=True).items() if id(t) in params}


def replica_state(packed: nn.Module, r: int) -> dict[str, torch.Tensor]:
    """Replica ``r``'s weights as a solo model's state_dict (copies, on the CPU)."""
    names = replica_names(packed)
    return {
        name: (t[r] if name in names else t).detach().cpu().clone() for name, t in packed.state_dict().items()
    }


@torch.no_grad()
def load_replica(packed: nn.Module, r: int, state: dict[str, torch.Tensor]) -> None:
    """Replica ``r``'s weights from a solo model's state_dict (``replica_state``'s inverse)."""
    tensors = packed.state_dict(keep_vars=True)
    for name in replica_names(packed):
        tensors[name][r].copy_(state[name])


# -- per-replica optimisation ----------------------------------------------------------------


def _per_replica(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[N] values shaped to broadcast over a replicated tensor [N, ...]."""
    return values.to(like.device, like.dtype).view(-1, *([1] * (like.dim() - 1)))


def clip_per_replica(params: Sequence[nn.Parameter], max_norm: torch.Tensor) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` replica by replica: each replica's gradient is scaled by
    its own total 2-norm (returned, [N]) against its own ``max_norm`` [N]."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch.stack([g.reshape(g.shape[0], -1).float().norm(dim=1) for g in grads]).norm(dim=0)
    coef = (max_norm.to(norms.device) / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(_per_replica(coef, g))
    return norms


class ReplicaAdamW:
    """AdamW (torch's defaults: betas 0.9, 0.999, eps 1e-8; its arithmetic) over replicated
    parameters, with a learning rate, weight decay and step count per replica, and a mask of the
    replicas that step: a stopped replica's weights and moments are left as they are."""

    def __init__(self, params: Sequence[nn.Parameter], replicas: int, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = [p for p in params if p.requires_grad]
        self.betas, self.eps = betas, eps
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.steps = torch.zeros(replicas, dtype=torch.float64)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, lr: torch.Tensor, weight_decay: torch.Tensor, active: torch.Tensor) -> None:
        beta1, beta2 = self.betas
        self.steps += active.double()
        steps = self.steps.clamp(min=1)
        bias1 = 1 - beta1**steps
        bias2_sqrt = (1 - beta2**steps).sqrt()
        for p, exp_avg, exp_avg_sq in zip(self.params, self.exp_avg, self.exp_avg_sq, strict=True):
            grad = p.grad if p.grad is not None else torch.zeros_like(p)
            keep = _per_replica(active, p).bool()
            new_avg = exp_avg.lerp(grad, 1 - beta1)
            new_avg_sq = exp_avg_sq.mul(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (new_avg_sq.sqrt() / _per_replica(bias2_sqrt, p)).add_(self.eps)
            decayed = p.mul(1 - _per_replica(lr * weight_decay, p))
            new_p = decayed - _per_replica(lr / bias1, p) * new_avg / denom
            p.copy_(torch.where(keep, new_p, p))
            exp_avg.copy_(torch.where(keep, new_avg, exp_avg))
            exp_avg_sq.copy_(torch.where(keep, new_avg_sq, exp_avg_sq))

    def replica_state(self, r: int) -> dict:
        return {
            "exp_avg": [t[r].detach().cpu().clone() for t in self.exp_avg],
            "exp_avg_sq": [t[r].detach().cpu().clone() for t in self.exp_avg_sq],
            "step": float(self.steps[r]),
        }

    @torch.no_grad()
    def load_replica(self, r: int, state: dict) -> None:
        for mine, saved in zip(self.exp_avg, state["exp_avg"], strict=True):
            mine[r].copy_(saved)
        for mine, saved in zip(self.exp_avg_sq, state["exp_avg_sq"], strict=True):
            mine[r].copy_(saved)
        self.steps[r] = state["step"]


# -- the pack's loop -------------------------------------------------------------------------


@dataclass
class Pack:
    """A pack's shared objects and its replicas' own (each a loop.Run over the packed policy)."""

    replicas: list[Run]
    policy: models.Policy  # the packed model
    engine: HFEngine
    optimizer: ReplicaAdamW
    states: list[RunState]
    errors: list[BaseException | None]  # what stopped each replica; None while it trains

    @property
    def size(self) -> int:
        return len(self.replicas)

    def live(self) -> list[int]:
        return [r for r, error in enumerate(self.errors) if error is None]

    @property
    def active(self) -> torch.Tensor:
        """[N] bool: the replicas still training."""
        return torch.tensor([error is None for error in self.errors])

    def stop(self, r: int, error: BaseException) -> None:
        """Replica ``r`` stops (its error kept for its run); the others go on."""
        self.errors[r] = error


def build_pack(cfgs: Sequence[RunConfig], trackers: Sequence, on_warmstart: Callable | None) -> Pack:
    first = cfgs[0]
    keys = {pack_key(cfg) for cfg in cfgs}
    if len(keys) > 1:
        raise ConfigError(
            "these runs cannot share a pack: they differ in model, task, rollout or batch shape"
        )
    for cfg in cfgs:
        why = unpackable(cfg)
        if why:
            raise ConfigError(f"{cfg.run_name} cannot run in a pack: {why}")
    task = build_task(first, None)
    for tracker in trackers:
        if tracker:
            for key, value in task.tags().items():
                tracker.set_tag(key, value)
    solo = warmstart.load_policy(first.model, task, first.cache_dir, on_warmstart)
    packed = pack_models([solo.model] * len(cfgs)).to(solo.device)
    policy = dataclasses.replace(solo, model=packed)
    if first.trainer.gradient_checkpointing:
        models.enable_activation_checkpointing(policy.model)
    engine = HFEngine(
        policy,
        cache=first.rollout.cache,
        compile=first.rollout.compile,
        precision=sampling_precision(first.rollout, policy),
    )
    replicas = [run_parts(cfg, task, policy, engine) for cfg in cfgs]
    for r, run in enumerate(replicas):
        geo = run.cfg.geometry
        if geo.every:
            run.geometry = GeometryProbe(
                policy.model, geo.modules, geo.every, geo.top_k, geo.zero_tol, replica=r
            )
    if policy.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(policy.device)
    return Pack(
        replicas=replicas,
        policy=policy,
        engine=engine,
        optimizer=ReplicaAdamW(list(packed.parameters()), len(cfgs)),
        states=[RunState(estimator_state=run.estimator.new_state()) for run in replicas],
        errors=[None] * len(cfgs),
    )


def _generators(pack: Pack, seeds: Sequence[int]) -> list[torch.Generator]:
    return [torch.Generator(device=pack.policy.device).manual_seed(seed) for seed in seeds]


# Replicas per generate call and per forward of the update, by device type (absent: the whole
# pack at once). On a CPU a pack of 8 or 16 in one call works on tensors that fall out of the
# caches: packs of 4 trained at 0.95x the runs per hour of runs one at a time on 2 cores, 8 at
# 0.86x and 16 at 0.67x in one call (docs/results/performance.md#packs). A GPU's small-model decode
# is launch-bound, so the more rows per call the better. A replica's tokens and gradients are the
# same in any grouping (its stream and its loss are its own).
REPLICAS_PER_CALL: dict[str, int] = {"cpu": 4}


def _windows(pack: Pack) -> list[slice]:
    """The pack's replicas in groups of REPLICAS_PER_CALL, in order."""
    size = pack.size
    group = REPLICAS_PER_CALL.get(pack.policy.device.type, size)
    return [slice(start, min(start + group, size)) for start in range(0, size, group)]


def pack_generate(
    pack: Pack, texts: Sequence[Sequence[str]], n: int, sampling: SamplingParams, seeds: Sequence[int] | None
) -> list[Rollout]:
    """Each replica's ``n`` samples of its own ``texts[r]`` (sampled from a generator seeded with
    ``seeds[r]``; greedy when None), generated in calls of REPLICAS_PER_CALL replicas."""
    parts: list[Rollout] = []
    for window in _windows(pack):
        prompts = [text for r in range(window.start, window.stop) for text in texts[r]]
        generators = None if seeds is None else _generators(pack, seeds[window])
        with replica_window(pack.policy.model, window):
            batch = pack.engine.generate(prompts, n, sampling, generators)
        parts += _split(batch, window.stop - window.start)
    return parts


def _split(batch: Rollout, parts: int) -> list[Rollout]:
    """A pack's rollout as its replicas' own (equal blocks of rows)."""
    rows = batch.response_ids.shape[0] // parts
    out = []
    for r in range(parts):
        block = slice(r * rows, (r + 1) * rows)
        out.append(Rollout(**{f.name: getattr(batch, f.name)[block] for f in dataclasses.fields(Rollout)}))
    return out


# Held-out prompts per replica in one eval generate call. One call over all of them for N replicas
# makes tensors N times a solo eval's, which on a CPU fall out of the caches (the KV cache's growth
# alone doubled); calls of 64 prompts per replica made a pack of 4's eval 1.6x faster than one
# call and faster than 4 solo evals (docs/results/performance.md#packs). A constant, not a function
# of N, so a replica's eval does not depend on its pack's size.
EVAL_CHUNK = 64


def pack_eval(pack: Pack, trackers: Sequence, step: int) -> None:
    """Every live replica evaluated on the same held-out prompts, each chunk of ``EVAL_CHUNK``
    prompts for all replicas (in calls of REPLICAS_PER_CALL), sampled from the eval seed's stream
    for that chunk (the stream every run's evals share, restarted per chunk, so a chunk's draws
    never depend on how long another replica's samples in an earlier chunk ran); recorded as a solo
    run's eval is."""
    n, first = pack.size, pack.replicas[0].cfg
    prompts = pack.replicas[0].eval_prompts
    max_new = first.rollout.max_new_tokens
    sampled: list[list[Rollout]] = [[] for _ in range(n)]
    greedy: list[list[Rollout]] = [[] for _ in range(n)]
    sampling = eval_sampling(first.eval, max_new)
    greedy_sampling = SamplingParams(max_new_tokens=max_new, greedy=True)
    for index, start in enumerate(range(0, len(prompts), EVAL_CHUNK)):
        texts = [[p.text for p in prompts[start : start + EVAL_CHUNK]]] * n  # a stopped replica's too
        seeds = [step_seed(first.eval.seed, index)] * n
        for r, part in enumerate(pack_generate(pack, texts, first.eval.n, sampling, seeds)):
            sampled[r].append(part)
        if first.eval.greedy:
            for r, part in enumerate(pack_generate(pack, texts, 1, greedy_sampling, None)):
                greedy[r].append(part)
    for r in pack.live():
        run = pack.replicas[r]
        greedy_rollout = concat_rollouts(greedy[r], run.policy.tokenizer.pad_token_id) if greedy[r] else None
        rollout = concat_rollouts(sampled[r], run.policy.tokenizer.pad_token_id)
        result = score_eval(run.task, prompts, run.cfg.eval, step, rollout, greedy_rollout)
        record_eval(run, pack.states[r], trackers[r], result)


def concat_rollouts(parts: Sequence[Rollout], pad: int) -> Rollout:
    """Rollouts of consecutive prompts as one: prompts left-padded and responses right-padded to the
    widest (padding off every mask, zero log-probs and entropy), rows in order."""
    if len(parts) == 1:
        return parts[0]
    prompt_width = max(p.prompt_ids.shape[1] for p in parts)
    width = max(p.response_ids.shape[1] for p in parts)

    def left(t: torch.Tensor, value) -> torch.Tensor:
        return nn.functional.pad(t, (prompt_width - t.shape[1], 0), value=value)

    def right(t: torch.Tensor, value) -> torch.Tensor:
        return nn.functional.pad(t, (0, width - t.shape[1]), value=value)

    return Rollout(
        prompt_ids=torch.cat([left(p.prompt_ids, pad) for p in parts]),
        prompt_mask=torch.cat([left(p.prompt_mask, 0) for p in parts]),
        response_ids=torch.cat([right(p.response_ids, pad) for p in parts]),
        response_mask=torch.cat([right(p.response_mask, False) for p in parts]),
        logprobs=torch.cat([right(p.logprobs, 0.0) for p in parts]),
        entropy=torch.cat([right(p.entropy, 0.0) for p in parts]),
        texts=[text for p in parts for text in p.texts],
        truncated=torch.cat([p.truncated for p in parts]),
    )


def _stopping(pack: Pack, r: int, fn: Callable, *args):
    """``fn(*args)``, or None after stopping replica ``r`` when it finds a non-finite value."""
    try:
        return fn(*args)
    except NonFiniteError as exc:
        pack.stop(r, exc)
        return None


def _finite(pack: Pack, r: int, tensor: torch.Tensor, name: str, step: int) -> bool:
    """Whether replica ``r``'s ``tensor`` is finite; if not, the replica stops (loop.check_finite's
    error kept for its run) and the others go on."""
    try:
        check_finite(tensor, name, step, pack.replicas[r].cfg.estimator)
    except NonFiniteError as exc:
        pack.stop(r, exc)
        return False
    return True


def pack_step(pack: Pack, trackers: Sequence, step: int) -> dict[int, dict[str, float]]:
    """One training step of every live replica: one batched rollout, each replica's own scoring,
    estimator and loss, one backward per group of replicas, each replica's own clipping and AdamW step."""
    timer, start = PhaseTimer(), time.perf_counter()
    runs, n = pack.replicas, pack.size
    P, G = runs[0].prompts, runs[0].samples
    prompts = [run.sampler.next(P) for run in runs]
    with timer("rollout"):
        texts = [[p.text for p in batch] for batch in prompts]
        seeds = [step_seed(run.cfg.seed, step) for run in runs]
        pad = pack.policy.tokenizer.pad_token_id
        batch = concat_rollouts(pack_generate(pack, texts, G, runs[0].sampling, seeds), pad)
        greedy: list = [None] * n
        if "greedy_rewards" in runs[0].needs:
            greedy_sampling = SamplingParams(max_new_tokens=runs[0].sampling.max_new_tokens, greedy=True)
            greedy = pack_generate(pack, texts, 1, greedy_sampling, None)
    parts = _split(batch, n)  # each replica's rows, padded as the whole pack's
    scored, estimated = [None] * n, [None] * n
    with timer("scoring"):
        for r in pack.live():
            scored[r] = _stopping(pack, r, score_rollout, runs[r], step, prompts[r], parts[r], greedy[r])
    with timer("estimator"):
        for r in pack.live():
            estimated[r] = _stopping(pack, r, estimate, runs[r], pack.states[r], step, scored[r])
    with timer("update"):
        advantages, per_token = [], []  # each replica's [P * G] or [P * G, T]; over tokens
        for r in range(n):
            if estimated[r] is None:  # a stopped replica still fills its rows; nothing trains on them
                advantages.append(None)
                per_token.append(torch.zeros_like(parts[r].logprobs))
                continue
            a = estimated[r].advantages
            advantages.append(a.reshape(P * G, *a.shape[2:]).to(pack.policy.device))
            a = advantages[r]
            per_token.append(a.unsqueeze(-1).expand_as(parts[r].logprobs) if a.dim() == 1 else a)
        train_rows = torch.cat(
            [
                estimated[r].selected.reshape(-1)
                if estimated[r] is not None
                else torch.zeros(P * G, dtype=torch.bool)
                for r in range(n)
            ]
        ).to(pack.policy.device)
        update = update_pack(pack, batch, torch.cat(per_token), train_rows, step)
    metrics: dict[int, dict[str, float]] = {}
    with timer("logging"):
        for r in pack.live():
            metrics[r] = step_metrics(
                runs[r], pack.states[r], step, scored[r], estimated[r], advantages[r], update[r], start
            )
            if trackers[r]:
                trackers[r].log_metrics(metrics[r], step)
    machine = {f"time/{phase}": seconds for phase, seconds in timer.seconds.items()}
    machine["time/step"] = time.perf_counter() - start
    machine["system/peak_memory_gib"] = peak_memory_gib(pack.policy.device)
    machine["system/pack_size"] = float(n)
    for r in metrics:
        if trackers[r]:
            trackers[r].log_metrics(machine, step)
        metrics[r].update(machine)
    return metrics


def _replica_rows(order: list[torch.Tensor], rows_each: int) -> torch.Tensor:
    """Global row indices of a pack batch: replica r's local rows ``order[r]`` in block r."""
    return torch.cat([r * rows_each + rows for r, rows in enumerate(order)])


@dataclass
class _Update:
    """What every micro-batch of one pack update reads."""

    batch: Rollout
    advantages: torch.Tensor  # [rows, T]
    mask: torch.Tensor  # [rows, T] the tokens that train
    old_logprobs: torch.Tensor
    rows_each: int
    budget: int  # trainer.micro_batch_tokens
    on_sampling_weights: bool
    step: int


def _step_settings(runs: Sequence[Run], step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each replica's learning rate at ``step`` (its own schedule), weight decay and clip threshold."""
    trainers = [run.cfg.trainer for run in runs]
    lr = [t.lr * lr_factor(step - 1, t.steps, t.warmup_steps, t.lr_schedule) for t in trainers]
    return (
        torch.tensor(lr, dtype=torch.float64),
        torch.tensor([t.weight_decay for t in trainers], dtype=torch.float64),
        torch.tensor([t.max_grad_norm for t in trainers]),
    )


def update_pack(
    pack: Pack, batch: Rollout, advantages: torch.Tensor, train_rows: torch.Tensor, step: int
) -> dict[int, dict[str, float]]:
    """loop.update_policy for every replica at once: update_epochs passes of minibatch steps, each
    replica's rows in its own order (its own seed), its loss on its own rows only, backwards for
    all, then each replica's own clip and AdamW step. Returns each live replica's metrics."""
    runs, n, policy = pack.replicas, pack.size, pack.policy
    trainer = runs[0].cfg.trainer  # the shape every replica shares (pack_key)
    rows_each = batch.response_ids.shape[0] // n
    collected: list[dict[str, list[float]]] = [defaultdict(list) for _ in range(n)]
    on_sampling_weights = trainer.update_epochs * trainer.minibatches == 1 and not any(
        run.loss_params.tis_cap for run in runs
    )
    old_logprobs = batch.logprobs
    if not on_sampling_weights:
        old = []
        for window in _windows(pack):
            rows = torch.arange(window.start * rows_each, window.stop * rows_each, device=policy.device)
            with torch.no_grad(), policy.compute(), replica_window(policy.model, window):
                old.append(token_logprobs(policy.model, batch, rows, runs[0].cfg.rollout.temperature)[0])
        old_logprobs = torch.cat(old)
    update = _Update(
        batch,
        advantages,
        batch.response_mask & train_rows.unsqueeze(-1),
        old_logprobs,
        rows_each,
        trainer.micro_batch_tokens,
        on_sampling_weights,
        step,
    )
    generators = [torch.Generator().manual_seed(step_seed(run.cfg.seed, step)) for run in runs]
    lr, weight_decay, max_norm = _step_settings(runs, step)
    per_forward = max(w.stop - w.start for w in _windows(pack))
    geometry: dict[int, dict[str, float]] = {}
    policy.model.train()
    for epoch in range(trainer.update_epochs):
        orders = [
            torch.randperm(rows_each, generator=g) if trainer.minibatches > 1 else torch.arange(rows_each)
            for g in generators
        ]
        for chunk in zip(*(order.chunk(trainer.minibatches) for order in orders), strict=True):
            pack.optimizer.zero_grad()
            losses_total = [0.0] * n
            for local in _micro_chunks(batch, chunk, rows_each, update.budget, per_forward):
                _micro_backward(pack, update, chunk, local, epoch, collected, losses_total)
            if epoch == 0 and not geometry:  # this step's first gradient, before clipping
                geometry = {
                    r: runs[r].geometry.observe(step) for r in pack.live() if runs[r].geometry is not None
                }
            norms = clip_per_replica(pack.optimizer.params, max_norm)
            for r in pack.live():
                _finite(pack, r, norms[r], "gradient norm", step)
            active = pack.active  # after the norms' check, which may stop a replica
            for p in pack.optimizer.params:  # a stopped replica's gradient is not stepped on
                if p.grad is not None:
                    p.grad.mul_(_per_replica(active.float(), p.grad)).nan_to_num_(0.0, 0.0, 0.0)
            pack.optimizer.step(lr, weight_decay, active)
            for r in pack.live():
                collected[r]["loss"].append(losses_total[r])
                collected[r]["grad_norm"].append(float(norms[r]))
    policy.model.eval()
    return {
        r: {
            **{
                f"train/{key}": (max(values) if key.endswith("_max") else float(np.mean(values)))
                for key, values in collected[r].items()
            },
            "train/lr": float(lr[r]),
            **geometry.get(r, {}),
        }
        for r in pack.live()
    }


def _micro_backward(
    pack: Pack,
    u: _Update,
    chunk: Sequence[torch.Tensor],
    local: Sequence[torch.Tensor],
    epoch: int,
    collected: list[dict[str, list[float]]],
    losses_total: list[float],
) -> None:
    """One micro-batch (``local``: each replica's rows of the minibatch ``chunk``): per group of
    REPLICAS_PER_CALL replicas one forward, each live replica's own loss on its own rows (weighted
    by its share of its minibatch's normaliser when the minibatch is split), one backward of their
    sum (the gradients of the groups' weights add up in the pack's parameters)."""
    live = pack.live()
    for window in _windows(pack):
        replicas = [r for r in live if window.start <= r < window.stop]
        if replicas:
            with replica_window(pack.policy.model, window):  # a recomputed forward needs it too
                _window_backward(pack, u, chunk, local, window, replicas, epoch, collected, losses_total)


def _window_backward(
    pack: Pack,
    u: _Update,
    chunk: Sequence[torch.Tensor],
    local: Sequence[torch.Tensor],
    window: slice,
    replicas: list[int],
    epoch: int,
    collected: list[dict[str, list[float]]],
    losses_total: list[float],
) -> None:
    runs, policy = pack.replicas, pack.policy
    each = len(local[0])
    rows = _replica_rows(local, u.rows_each)[window.start * each : window.stop * each].to(policy.device)
    with policy.compute():
        temperature = runs[0].cfg.rollout.temperature
        logprobs, entropy = token_logprobs(policy.model, u.batch, rows, temperature, trim=bool(u.budget))
    total = None
    for r in replicas:
        at = r - window.start
        mine, part = rows[at * each : (at + 1) * each], slice(at * each, (at + 1) * each)
        loss_batch = losses.LossBatch(
            logprobs=logprobs[part],
            old_logprobs=u.old_logprobs[mine],
            advantages=u.advantages[mine],
            mask=u.mask[mine],
            max_len=runs[r].cfg.rollout.max_new_tokens,
            rollout_logprobs=u.batch.logprobs[mine],
            ref_logprobs=None,
            entropy=entropy[part],
        )
        value, loss_metrics = losses.policy_loss(runs[r].loss, loss_batch, runs[r].loss_params)
        if not _finite(pack, r, value.detach(), "loss", u.step):
            continue
        if u.budget:
            step_mask = u.mask[r * u.rows_each + chunk[r]]
            value = value * losses.share(loss_batch.mask, step_mask, runs[r].loss_params.aggregation)
        total = value if total is None else total + value
        losses_total[r] += value.item()
        for key, v in loss_metrics.items():
            collected[r][key].append(v)
        if epoch == 0:
            detached = loss_batch.entropy.detach()
            collected[r]["policy_entropy"].append(detached[loss_batch.mask].mean().item())
            if u.on_sampling_weights:
                detached = loss_batch.logprobs.detach()
                record_mismatch(collected[r], detached, loss_batch.rollout_logprobs, loss_batch.mask)
    if total is not None:
        total.backward()


def _micro_chunks(
    batch: Rollout, chunk: Sequence[torch.Tensor], rows_each: int, budget: int, per_forward: int
):
    """A minibatch's micro-batches: the same number of rows of every replica in each (a batched
    forward needs equal blocks), as many as keep one forward's padded tokens (``per_forward``
    replicas' rows) within ``budget`` (trainer.micro_batch_tokens: the memory of one forward,
    whatever the pack's size), each replica's rows taking an equal share of it."""
    if not budget:
        yield list(chunk)
        return
    share = max(1, budget // per_forward)
    size = min(
        min(len(m) for m in micro_batches(batch, r * rows_each + rows, share)) for r, rows in enumerate(chunk)
    )
    for start in range(0, len(chunk[0]), max(1, size)):
        yield [rows[start : start + size] for rows in chunk]


# -- checkpoints -----------------------------------------------------------------------------


def save_pack(pack: Pack, trackers: Sequence) -> None:
    """Each live replica's checkpoint, in its own run's place (harness/checkpoint.py): its weights
    and AdamW moments as a solo model's, its sampler, evals and estimator state."""
    for r in pack.live():
        run, state, tracker = pack.replicas[r], pack.states[r], trackers[r]
        if tracker:
            tracker.flush()
        checkpoint.save(
            run.cfg,
            tracker,
            {
                "step": state.step,
                "pack": True,
                "model": replica_state(pack.policy.model, r),
                "optimizer": pack.optimizer.replica_state(r),
                "sampler": run.sampler.state(),
                "evals": [dataclasses.replace(e, samples=[]) for e in state.evals],
                "points": state.points,
                "progress": state.progress,
                "initial_entropy": state.initial_entropy,
                "estimator_state": dataclasses.asdict(state.estimator_state)
                if state.estimator_state
                else None,
                "geometry": run.geometry.previous if run.geometry else {},
                "mlflow_run_id": tracker.run_id if tracker else None,
            },
        )


def restore_pack(pack: Pack, saved: Sequence[dict]) -> None:
    """Every replica back where its checkpoint left it (all at one step: ``resumable``)."""
    for r, state in enumerate(saved):
        run = pack.replicas[r]
        load_replica(pack.policy.model, r, state["model"])
        pack.optimizer.load_replica(r, state["optimizer"])
        pack.states[r] = RunState.of_run(run, state)


def resumable(saved: Sequence[dict | None]) -> bool:
    """A pack resumes when every replica has a pack checkpoint and all stand at the same step."""
    return all(s is not None and s.get("pack") for s in saved) and len({s["step"] for s in saved}) == 1


# -- one pack, start to end -------------------------------------------------------------------


def train_pack(
    cfgs: Sequence[RunConfig],
    trackers: Sequence | None = None,
    on_step: Callable[[int, int, dict[str, float]], None] | None = None,
    on_warmstart: Callable[[int, float], None] | None = None,
    resume: Sequence[dict] | None = None,
) -> list[RunResult | BaseException]:
    """Train ``cfgs`` as one pack; each run's result, or the error that stopped it alone.

    ``trackers``: one per run (None: untracked). ``on_step(r, step, metrics)`` after each step of
    each live replica. ``resume``: every run's checkpoint, all at one step (``resumable``).
    """
    cfgs = [cfg if cfg.trainer.packed else as_packed(cfg) for cfg in cfgs]
    trackers = list(trackers) if trackers is not None else [None] * len(cfgs)
    first = cfgs[0]
    if first.threads:
        torch.set_num_threads(first.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    seed_everything(0)  # nothing in a pack draws from the global streams; fixed all the same
    pack = build_pack(cfgs, trackers, on_warmstart)
    every = first.trainer.checkpoint_every
    for tracker in trackers:
        if tracker and every:
            tracker.auto_flush = False
    if resume is None:
        pack_eval(pack, trackers, 0)
    else:
        restore_pack(pack, resume)
    for step in range(pack.states[0].step + 1, first.trainer.steps + 1):
        if not pack.live():
            break
        metrics = pack_step(pack, trackers, step)
        for r in pack.live():
            pack.states[r].step = step
        if step % first.eval.every == 0 or step == first.trainer.steps:
            pack_eval(pack, trackers, step)
            for r in pack.live():
                metrics[r].update(pack.states[r].evals[-1].metrics())
        if every and step % every == 0 and step < first.trainer.steps:
            save_pack(pack, trackers)
        if on_step:
            for r in pack.live():
                on_step(r, step, metrics[r])
    results: list[RunResult | BaseException] = []
    memory = peak_memory_gib(pack.policy.device)
    for r, cfg in enumerate(cfgs):
        if pack.errors[r] is not None:
            results.append(pack.errors[r])
            continue
        state = pack.states[r]
        summary = summarize(state.evals, state.points, cfg.eval)
        summary.peak_memory_gib = memory
        if trackers[r]:
            trackers[r].log_metrics(summary.metrics(), cfg.trainer.steps)
            trackers[r].flush()
        checkpoint.remove(cfg, trackers[r])
        results.append(RunResult(cfg=cfg, evals=state.evals, summary=summary))
    return results
