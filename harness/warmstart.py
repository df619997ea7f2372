"""Where a run's policy starts: the built-in tiny model warm-started on task demonstrations, or
the local checkpoint at ``model.path`` (nothing is downloaded).

The warm start is cached on disk under a hash of everything that shapes it, so every estimator and
seed of a comparison starts from the same weights. The defaults' warm starts ship with the package
(``harness/warmstarts``), so that every machine starts them from the same weights: float sums, and
so warm starts, differ between CPUs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import OmegaConf

from advbench.harness.config import ConfigError, ModelConfig, TaskConfig
from advbench.harness.files import published
from advbench.harness.models import DTYPES, Policy, autocast, build_tiny, fit_tokenizer, resolve_device
from advbench.harness.tasks import Prompt, Task


def warm_start(
    model: torch.nn.Module,
    tokenizer,
    examples: list[tuple[str, str]],
    cfg: ModelConfig,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Supervised training on (prompt, completion) pairs; the loss covers completion tokens and EOS,
    with ``warmstart.label_smoothing`` (torch's cross-entropy definition). Runs where ``model`` is,
    its forward passes under ``model.autocast``."""
    ws = cfg.warmstart
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(ws.seed)
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p, _ in examples]
    target_ids = [
        tokenizer(c, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for _, c in examples
    ]
    optimizer = torch.optim.AdamW(model.parameters(), lr=ws.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, ws.steps // 10)) * max(0.1, 1 - s / max(1, ws.steps))
    )
    model.train()
    losses = []
    for step in range(ws.steps):
        rows = torch.randint(len(examples), (ws.batch_size,), generator=generator).tolist()
        sequences = [prompt_ids[r] + target_ids[r] for r in rows]
        width = max(map(len, sequences))
        input_ids = torch.full((len(rows), width), tokenizer.pad_token_id)
        labels = torch.full((len(rows), width), -100)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (r, seq) in enumerate(zip(rows, sequences, strict=True)):  # right padding; a handful of rows
            input_ids[i, : len(seq)] = torch.tensor(seq)
            attention[i, : len(seq)] = 1
            labels[i, len(prompt_ids[r]) : len(seq)] = torch.tensor(target_ids[r])
        input_ids, attention, labels = input_ids.to(device), attention.to(device), labels.to(device)
        with autocast(device, cfg.autocast):
            logits = model(input_ids=input_ids, attention_mask=attention).logits
        loss = torch.nn.functional.cross_entropy(  # position t predicts token t + 1
            logits[:, :-1].flatten(0, 1),
            labels[:, 1:].flatten(),
            ignore_index=-100,
            label_smoothing=ws.label_smoothing,
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if on_step:
            on_step(step + 1, losses[-1])
    model.eval()
    return losses


# The warm start's float sums depend on how many threads split them: 800 steps of it with 1 thread
# end 0.3 (max abs) away from 2 threads, enough to move every later pass@1 by a few points. So it
# always runs on this many threads, whatever `threads`, the machine or Ray's OMP_NUM_THREADS say,
# and every process builds the same weights (2: the reference results and baselines were made so).
WARMSTART_THREADS = 2

# They also depend on the CPU's kernels: the default warm start built on an AMD EPYC and on an Intel
# Xeon (same torch, 2 threads) started RL 0.06 eval pass@1 apart, and `advbench check smoke`, whose
# tolerances are about seed noise, failed on one machine's baseline run on the other. So the warm
# starts of the defaults ship with the package, under their cache key, and are copied, not built;
# any other config builds its own. Bump WARMSTART_RECIPE whenever the code changes what a warm
# start builds (fit_tokenizer, build_tiny, warm_start), then rebuild the shipped ones (docs/concepts/loop.md).
SHIPPED_WARMSTARTS = Path(__file__).parent / "warmstarts"
WARMSTART_RECIPE = 1


def tiny_cache_key(model_cfg: ModelConfig, task_cfg: TaskConfig) -> str:
    """A hash of everything that shapes the warm-started weights, the kind of device included (the
    warm start runs there: a GPU's sums differ from the CPU's), not which device of that kind."""
    shape = OmegaConf.to_container(OmegaConf.structured(model_cfg))
    for key in ("name", "path", "device"):
        shape.pop(key)
    task = OmegaConf.to_container(OmegaConf.structured(task_cfg))
    for key in ("name", "verifier_timeout", "packages"):  # how samples are scored, not the weights
        task.pop(key)
    payload = json.dumps(
        {
            "model": shape,
            "task": task,
            "torch": torch.__version__.split("+")[0],
            "threads": WARMSTART_THREADS,
            "recipe": WARMSTART_RECIPE,
            "device": resolve_device(model_cfg.device).type,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def load_tiny(
    model_cfg: ModelConfig,
    task: Task,
    cache_dir: str | os.PathLike[str],
    on_step: Callable[[int, float], None] | None = None,
) -> Path:
    """The cache directory of the warm-started tiny model for this task: cached, else copied from
    the shipped ones (``SHIPPED_WARMSTARTS``) when its key is there, else built."""
    path = Path(cache_dir).expanduser() / "models" / tiny_cache_name(model_cfg, task)
    if (path / "config.json").is_file():
        return path
    shipped = SHIPPED_WARMSTARTS / path.name
    if (shipped / "config.json").is_file():
        with published(path) as staging:
            shutil.copytree(shipped, staging, dirs_exist_ok=True)
        return path
    train = task.prompts("train")
    if model_cfg.warmstart.train_examples:
        train = train[: model_cfg.warmstart.train_examples]
    everything: list[Prompt] = train + task.prompts("eval")
    # The alphabet covers eval prompts too, so no eval prompt holds an unknown character; the
    # warm start itself sees only training demonstrations.
    tokenizer = fit_tokenizer([p.text + task.demonstration(p) for p in everything])
    torch.manual_seed(model_cfg.warmstart.seed)
    model = build_tiny(model_cfg, tokenizer).to(resolve_device(model_cfg.device))
    threads = torch.get_num_threads()
    torch.set_num_threads(WARMSTART_THREADS)
    try:
        losses = warm_start(
            model, tokenizer, [(p.text, task.demonstration(p)) for p in train], model_cfg, on_step
        )
    finally:
        torch.set_num_threads(threads)
    with published(path) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "warmstart.json").write_text(
            json.dumps({"final_loss": losses[-1] if losses else None, "steps": len(losses)})
        )
    return path


def tiny_cache_name(model_cfg: ModelConfig, task: Task) -> str:
    """The folder name of a warm start, in the cache and among the shipped ones."""
    return f"tiny-{task.name}-{tiny_cache_key(model_cfg, task.cfg)}"


# -- loading ---------------------------------------------------------------------------------


def load_policy(
    model_cfg: ModelConfig,
    task: Task,
    cache_dir: str | os.PathLike[str],
    on_step: Callable[[int, float], None] | None = None,
) -> Policy:
    """The policy to train: the warm-started tiny model, or the local checkpoint at model.path."""
    from transformers import AutoModelForCausalLM

    device = resolve_device(model_cfg.device)  # before any work: a cuda config fails here without CUDA
    if model_cfg.path:
        path = Path(model_cfg.path).expanduser()
        if not (path / "config.json").is_file():
            raise ConfigError(f"config key 'model.path': no Hugging Face checkpoint (config.json) in {path}")
    else:
        path = load_tiny(model_cfg, task, cache_dir, on_step)
    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=DTYPES[model_cfg.dtype])
    model.to(device)
    model.eval()
    return Policy(model=model, tokenizer=tokenizer, device=device, path=path, autocast=model_cfg.autocast)


def load_tokenizer(path: str | os.PathLike[str]):
    """The checkpoint's tokenizer as rollouts need it: left padding, and a pad token (EOS if none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, padding_side="left")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
