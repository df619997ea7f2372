"""Run checkpoints: everything a run needs to continue as if it had never stopped.

A checkpoint holds the model, optimizer and lr-schedule state, the prompt sampler's cursor and RNG,
torch (CPU and CUDA), numpy and random RNG states, the evals and time axes so far, the geometry
probe's last gradient, the step, and the MLflow run id the run logs into. It lives under
``cache_dir/checkpoints/<config hash>/state.pt`` and is written atomically (a temporary file, then a
rename), so a run killed while saving keeps its previous checkpoint. The loop flushes the run's
metrics to MLflow when it writes a checkpoint (and at the end), and a resumed run's tracker skips
every (metric, step) the store already holds: a kill between that flush and the rename resumes from
the previous checkpoint, recomputes the same values, and still logs each step once.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advbench.harness.config import RunConfig, config_hash
from advbench.harness.files import replaced


def checkpoint_path(cfg: RunConfig) -> Path:
    return Path(cfg.cache_dir).expanduser() / "checkpoints" / config_hash(cfg) / "state.pt"


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "random": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["random"])


def save(cfg: RunConfig, state: dict[str, Any]) -> Path:
    path = checkpoint_path(cfg)
    with replaced(path) as staging:  # a kill mid-save leaves the previous checkpoint whole
        torch.save(state, staging)
    return path


def load(cfg: RunConfig) -> dict[str, Any] | None:
    path = checkpoint_path(cfg)
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)  # our own file: numpy RNG state inside


def remove(cfg: RunConfig) -> None:
    shutil.rmtree(checkpoint_path(cfg).parent, ignore_errors=True)
