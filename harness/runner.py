"""Running cells: one resolved config each, in this process or as Ray tasks.

``run_cell`` is the one way a config becomes a finished MLflow run, for ``advbench run``, ``suite``
and ``check`` alike: a cell already finished in the tracking store (same config hash) is reported,
not run; a cell another process is training (a live lease in the store, harness/tracking.py) is
waited for; a cell that died resumes into its MLflow run, from its checkpoint when this cache holds
one, else from step 0 with the steps the store already holds skipped; otherwise it starts a new
child run under the given parent. Nothing is deleted but a run this process has just made and lost
to a rival. A file lock per config hash (under ``cache_dir/locks``) also makes two processes that
share a cache take turns on a cell without asking the store.
"""

from __future__ import annotations

import contextlib
import copy
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from advbench.harness.config import ConfigError, RunConfig, config_hash
from advbench.harness.errors import disk_full
from advbench.harness.metrics import RunSummary
from advbench.harness.tracking import Held, LeaseLost


@dataclass
class CellOutcome:
    cfg: RunConfig
    run_id: str
    summary: RunSummary
    status: str  # "ran" | "resumed" | "cached"


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import logging

    import mlflow  # noqa: F401  configures its loggers on import; quiet them after
    import transformers

    for name in ("mlflow", "alembic"):  # schema migrations of a new store are not news
        logging.getLogger(name).setLevel(logging.WARNING)
    # MLflow logs each failed database call with its traceback and then raises it to us as well:
    # the harness's retries and errors say it once.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def cell_lock(cfg: RunConfig, name: str | None = None):
    """A lock file under cache_dir/locks: the cell's (by config hash) or the one called ``name``."""
    from filelock import FileLock

    path = Path(cfg.cache_dir).expanduser() / "locks" / f"{name or config_hash(cfg)}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path)


def run_cell(
    cfg: RunConfig,
    tracker: Any,
    parent: Any,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    on_warmstart: Callable[[int, float], None] | None = None,
    say: Callable[[str], None] = print,
) -> CellOutcome:
    """Run ``cfg`` to the end (or report it finished) and return its summary."""
    from advbench.harness import checkpoint
    from advbench.harness.loop import train

    with cell_lock(cfg):
        waiting_for = None
        while True:
            done = tracker.find_finished(cfg)
            if done is not None:
                summary = RunSummary.from_metrics(done.data.metrics)
                say(f"{cfg.run_name}: finished before in MLflow run {done.info.run_id}; not run again")
                return CellOutcome(cfg, done.info.run_id, summary, "cached")
            child = tracker.claim(cfg, parent)
            if not isinstance(child, Held):
                break
            if waiting_for != child.run_id:
                owner = child.lease.owner
                say(f"{cfg.run_name}: MLflow run {child.run_id} is being trained by {owner}; waiting")
                waiting_for = child.run_id
            time.sleep(min(5.0, cfg.tracking.lease_seconds / 2))
        child.keep_lease()
        try:
            state = checkpoint.load(cfg, child)
            if state is not None:
                say(f"{cfg.run_name}: resuming MLflow run {child.run_id} after step {state['step']}")
            elif child.resumed:
                say(f"{cfg.run_name}: resuming MLflow run {child.run_id} from the start (no checkpoint here)")
            result = train(cfg, child, on_step=on_step, on_warmstart=on_warmstart, resume=state)
        except BaseException as exc:
            if isinstance(exc, LeaseLost):  # another process trains it now: touch nothing
                child.release()
            elif disk_full(exc):  # the store may be on the full disk too: marked FAILED if it can be
                with contextlib.suppress(Exception):
                    child.finish("FAILED")
                child.release(write=False)
            else:
                child.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise
        child.finish()
        return CellOutcome(cfg, child.run_id, result.summary, "resumed" if child.resumed else "ran")


# ---------------------------------------------------------------------------------------------
# Ray


def check_cache_dirs(cells: Sequence[RunConfig]) -> None:
    """Before anything starts here, each cell's cache_dir must be a folder this process can write
    (made if missing): a ConfigError naming the key otherwise. Not for Ray, as check_devices."""
    for folder in sorted({cell.cache_dir for cell in cells}):
        path = Path(folder).expanduser()
        try:
            path.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
                pass
        except OSError as exc:
            raise ConfigError(
                f"config key 'cache_dir': cannot write {folder} ({exc.strerror or exc}); give a "
                "folder you may write, e.g. cache_dir=~/.cache/advbench"
            ) from None


def check_devices(cells: Sequence[RunConfig]) -> None:
    """Before anything starts here, the devices the cells ask for must exist on this machine (a
    ConfigError naming model.device otherwise). Not for Ray: its workers may have GPUs this
    machine lacks."""
    from advbench.harness.models import resolve_device

    for device in sorted({cell.model.device for cell in cells}):
        resolve_device(device)


def absolute_tracking(cfg: RunConfig) -> RunConfig:
    """The config with a local store's relative paths made absolute, for workers in other directories."""
    cfg = copy.deepcopy(cfg)
    uri = cfg.tracking.uri
    if urlparse(uri).scheme == "sqlite" and not uri.startswith("sqlite:////"):
        cfg.tracking.uri = "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    cfg.tracking.artifact_root = str(Path(cfg.tracking.artifact_root).resolve())
    cfg.cache_dir = str(Path(cfg.cache_dir).expanduser().resolve())
    return cfg


def _remote_cell(cfg: RunConfig, parent_run_id: str) -> CellOutcome:
    """A Ray task: run one cell into the shared tracking store under the suite's parent run."""
    quiet_libraries()
    from advbench.harness.tracking import RunTracker, Tracker

    tracker = Tracker(cfg.tracking)
    return run_cell(cfg, tracker, RunTracker(tracker.client, parent_run_id), say=lambda _: None)


def resources(cfg: RunConfig) -> dict[str, float]:
    """What one cell asks Ray for: a GPU when its model runs on CUDA, CPUs otherwise."""
    if cfg.model.device == "cuda":
        return {"num_gpus": 1, "num_cpus": 1}
    return {"num_cpus": max(1, cfg.threads)}


def run_cells_ray(
    cells: Sequence[RunConfig],
    parent_run_id: str,
    address: str,
    on_done: Callable[[CellOutcome], None],
    on_failed: Callable[[RunConfig, str], None],
) -> list[CellOutcome]:
    """Run ``cells`` as Ray tasks on the cluster at ``address``; "local" starts a new local one.

    "local" never joins a cluster that happens to run on the machine (plain ``ray.init()`` would:
    another suite's, even one about to shut down).

    A cell that fails is reported to ``on_failed`` and the others go on, as in one process.
    """
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs Ray: pip install 'advbench[ray]'") from None

    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        except (ValueError, ConnectionError, RuntimeError) as exc:
            raise ConfigError(f"--ray {address}: cannot start or reach a Ray cluster: {exc}") from None
    try:
        task = ray.remote(max_retries=0)(_remote_cell)
        pending = {
            task.options(**resources(cfg)).remote(absolute_tracking(cfg), parent_run_id): cfg for cfg in cells
        }
        outcomes = []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            cfg = pending.pop(ready[0])
            try:
                outcome = ray.get(ready[0])
            except Exception as exc:  # the task's own error, wrapped by Ray
                on_failed(cfg, f"{type(exc).__name__}: {exc}")
                continue
            outcomes.append(outcome)
            on_done(outcome)
        return outcomes
    finally:
        if started_here:
            ray.shutdown()
