"""Run checkpoints: everything a run needs to continue as if it had never stopped.

A checkpoint holds the model, optimizer and lr-schedule state, the prompt sampler's cursor and RNG,
torch (CPU and CUDA), numpy and random RNG states, the evals and time axes so far, the geometry
probe's last gradient, the step, and the MLflow run id the run logs into. It lives under
``cache_dir/checkpoints/<store key>/<MLflow run id>/state.pt`` (a run without a store: ``untracked/
<config hash>``), so two stores sharing a cache never touch each other's checkpoints. It is written
atomically (a temporary file, then a rename), so a run killed while saving keeps its previous
checkpoint, and the one before it is kept too (``previous.pt``): a file that cannot be read (a disk
that filled, a copy cut short) is moved aside with a warning and the run resumes from the other.
The loop flushes the run's metrics to MLflow when it writes a checkpoint (and at the end), and a
resumed run's tracker skips every (metric, step) the store already holds: a kill between that flush
and the rename resumes from the previous checkpoint, recomputes the same values, and still logs
each step once.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advbench.harness.config import RunConfig, config_hash
from advbench.harness.files import replaced


def store_key(uri: str) -> str:
    """A short stable name for a tracking store (a local SQLite path made absolute first)."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    return hashlib.sha256(uri.encode()).hexdigest()[:12]


def checkpoint_dir(cfg: RunConfig, tracker: Any | None) -> Path:
    """Where the checkpoints of ``cfg``'s run in ``tracker``'s store live (module docstring)."""
    root = Path(cfg.cache_dir).expanduser() / "checkpoints"
    if tracker is None:
        return root / "untracked" / config_hash(cfg)
    return root / store_key(tracker.client.tracking_uri) / tracker.run_id


def checkpoint_path(cfg: RunConfig, tracker: Any | None) -> Path:
    return checkpoint_dir(cfg, tracker) / "state.pt"


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


def save(cfg: RunConfig, tracker: Any | None, state: dict[str, Any]) -> Path:
    path = checkpoint_path(cfg, tracker)
    if path.is_file():  # the last checkpoint stays until this one is whole
        os.replace(path, path.with_name("previous.pt"))
    with replaced(path) as staging:  # a kill mid-save leaves the previous checkpoint whole
        torch.save(state, staging)
    return path


def load(cfg: RunConfig, tracker: Any | None) -> dict[str, Any] | None:
    """The newest readable checkpoint of the run (state.pt, else previous.pt), or None."""
    folder = checkpoint_dir(cfg, tracker)
    for name in ("state.pt", "previous.pt"):
        path = folder / name
        if not path.is_file():
            continue
        try:
            # our own file: numpy RNG state inside
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # truncated, zeroed, not a checkpoint at all
            aside = path.with_name(f"{name}.unreadable-{int(time.time())}")
            os.replace(path, aside)
            warnings.warn(
                f"{cfg.run_name}: checkpoint {path} cannot be read ({type(exc).__name__}: "
                f"{str(exc)[:120]}); moved aside to {aside.name}",
                stacklevel=2,
            )
    return None


def remove(cfg: RunConfig, tracker: Any | None) -> None:
    shutil.rmtree(checkpoint_dir(cfg, tracker), ignore_errors=True)
