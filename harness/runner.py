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
            done = _finished(cfg, tracker, say)
            if done is not None:
                return done
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
            _leave(child, exc, lost=isinstance(exc, LeaseLost))
            raise
        child.finish()
        return CellOutcome(cfg, child.run_id, result.summary, "resumed" if child.resumed else "ran")


def _finished(cfg: RunConfig, tracker: Any, say: Callable[[str], None]) -> CellOutcome | None:
    """The cell's run finished in the store, reported (not run again), or None."""
    done = tracker.find_finished(cfg)
    if done is None:
        return None
    say(f"{cfg.run_name}: finished before in MLflow run {done.info.run_id}; not run again")
    return CellOutcome(cfg, done.info.run_id, RunSummary.from_metrics(done.data.metrics), "cached")


def _leave(child: Any, exc: BaseException, lost: bool) -> None:
    """Leave a run that ``exc`` stopped: untouched when its lease was ``lost`` (another process
    trains it now); on a full disk marked FAILED if the store can still take it (the store may be
    on that disk too); otherwise KILLED (interrupted) or FAILED."""
    if lost:
        child.release()
    elif disk_full(exc):
        with contextlib.suppress(Exception):
            child.finish("FAILED")
        child.release(write=False)
    else:
        child.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")


def units(cells: Sequence[RunConfig], pack: int) -> list[list[RunConfig]]:
    """How cells run: each solo cell on its own; the packed ones (trainer.packed) grouped by what
    they must share (harness/pack.py's pack_key) into packs of at most ``pack``, split evenly (16
    cells in packs of at most 12 run as two packs of 8). In the cells' order, by first cell."""
    from advbench.harness.suites import pack_key

    groups: dict[str, list[RunConfig]] = {}
    out: list[list[RunConfig]] = []
    for cfg in cells:
        if not cfg.trainer.packed:
            out.append([cfg])
            continue
        key = pack_key(cfg)
        if key not in groups:
            groups[key] = []
            out.append(groups[key])  # filled below, split after
        groups[key].append(cfg)
    size = max(1, pack)
    split: list[list[RunConfig]] = []
    for unit in out:
        if not unit[0].trainer.packed:
            split.append(unit)
            continue
        count = -(-len(unit) // size)
        each = -(-len(unit) // count)
        split.extend(unit[i : i + each] for i in range(0, len(unit), each))
    return split


def run_pack(
    cfgs: Sequence[RunConfig],
    tracker: Any,
    parent: Any,
    on_step: Callable[[RunConfig, int, dict[str, float]], None] | None = None,
    on_warmstart: Callable[[int, float], None] | None = None,
    say: Callable[[str], None] = print,
) -> tuple[list[CellOutcome], list[tuple[RunConfig, str]]]:
    """Run ``cfgs`` (packed configs that can share a pack, harness/pack.py) as one pack: each cell
    finished in the store is reported, not run; a cell another process trains is left to
    ``run_cell`` (which waits for it) after the pack; the others train together, each into its own
    MLflow child run, resumed from their checkpoints when all of them have one at the same step.
    Returns the outcomes and the cells that failed (a replica that stops fails alone)."""
    from advbench.harness import checkpoint
    from advbench.harness.pack import resumable, train_pack

    outcomes: list[CellOutcome] = []
    held: list[RunConfig] = []
    todo: list[tuple[RunConfig, Any]] = []
    with contextlib.ExitStack() as locks:
        for cfg in sorted(cfgs, key=config_hash):  # one order for every process: no deadlock
            locks.enter_context(cell_lock(cfg))
        for cfg in cfgs:
            done = _finished(cfg, tracker, say)
            if done is not None:
                outcomes.append(done)
                continue
            child = tracker.claim(cfg, parent)
            if isinstance(child, Held):
                held.append(cfg)
            else:
                child.keep_lease()
                todo.append((cfg, child))
        failures: list[tuple[RunConfig, str]] = []
        if todo:
            children = [child for _, child in todo]
            saved = [checkpoint.load(cfg, child) for cfg, child in todo]
            resume = saved if resumable(saved) else None
            if resume is not None:
                say(f"pack of {len(todo)}: resuming after step {saved[0]['step']}")
            elif any(child.resumed for child in children):
                say(f"pack of {len(todo)}: its runs stood at different steps; all start again from step 0")
            names = [cfg.run_name for cfg, _ in todo]
            say(f"pack of {len(todo)}: {', '.join(names)}")
            try:
                results = train_pack(
                    [cfg for cfg, _ in todo],
                    children,
                    on_step=(lambda r, step, m: on_step(todo[r][0], step, m)) if on_step else None,
                    on_warmstart=on_warmstart,
                    resume=resume,
                )
            except BaseException as exc:
                for child in children:  # the lost lease is one replica's: it names the child
                    _leave(child, exc, lost=isinstance(exc, LeaseLost) and bool(child.lease_lost))
                raise
            for (cfg, child), result in zip(todo, results, strict=True):
                if isinstance(result, BaseException):
                    child.finish("FAILED")
                    failures.append((cfg, f"{type(result).__name__}: {result}"))
                    continue
                child.finish()
                status = "resumed" if child.resumed else "ran"
                outcomes.append(CellOutcome(cfg, child.run_id, result.summary, status))
    for cfg in held:  # trained elsewhere: wait for it and report it, as a solo cell
        outcomes.append(run_cell(cfg, tracker, parent, say=say))
    return outcomes, failures


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


def _remote_unit(
    unit: list[RunConfig], parent_run_id: str
) -> tuple[list[CellOutcome], list[tuple[RunConfig, str]]]:
    """A Ray task: run one cell, or one pack, into the shared tracking store under the suite's
    parent run."""
    quiet_libraries()
    from advbench.harness.tracking import RunTracker, Tracker

    tracker = Tracker(unit[0].tracking)
    parent = RunTracker(tracker.client, parent_run_id)
    if unit[0].trainer.packed:
        return run_pack(unit, tracker, parent, say=lambda _: None)
    return [run_cell(unit[0], tracker, parent, say=lambda _: None)], []


def resources(cfg: RunConfig, cells_per_gpu: int = 1) -> dict[str, float]:
    """What one cell (or pack) asks Ray for: a GPU when its model runs on CUDA, CPUs otherwise. A
    solo cell on CUDA asks for 1 / ``cells_per_gpu`` of one (Ray's fractional GPUs): a model a pack
    cannot hold (a local checkpoint) then shares a GPU with others; a pack keeps a GPU to itself."""
    if cfg.model.device == "cuda":
        share = 1.0 if cfg.trainer.packed else 1.0 / max(1, cells_per_gpu)
        return {"num_gpus": share, "num_cpus": 1}
    return {"num_cpus": max(1, cfg.threads)}


def run_cells_ray(
    cells: Sequence[Sequence[RunConfig]],
    parent_run_id: str,
    address: str,
    on_done: Callable[[CellOutcome], None],
    on_failed: Callable[[RunConfig, str], None],
    cells_per_gpu: int = 1,
) -> list[CellOutcome]:
    """Run ``cells`` (units: one cell, or one pack, each; ``units``) as Ray tasks on the cluster at
    ``address``; "local" starts a new local one.

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
        task = ray.remote(max_retries=0)(_remote_unit)
        pending = {
            task.options(**resources(unit[0], cells_per_gpu)).remote(
                [absolute_tracking(cfg) for cfg in unit], parent_run_id
            ): unit
            for unit in cells
        }
        outcomes = []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            unit = pending.pop(ready[0])
            try:
                done, failed = ray.get(ready[0])
            except Exception as exc:  # the task's own error, wrapped by Ray
                for cfg in unit:
                    on_failed(cfg, f"{type(exc).__name__}: {exc}")
                continue
            for cfg, error in failed:
                on_failed(cfg, error)
            for outcome in done:
                outcomes.append(outcome)
                on_done(outcome)
        return outcomes
    finally:
        if started_here:
            ray.shutdown()
