"""MLflow tracking: a parent run per invocation (or per suite), a child run per cell.

Uses MlflowClient with explicit run ids (no global active run), so runs can be created from any
process. Step metrics are buffered and sent with log_batch. A child run is identified by the hash
of its resolved config (tag ``advbench.config_hash``): a finished one is found and not run again.
A suite's parent run is identified by its cells (tag ``advbench.suite_hash``) and found again when
the same suite runs again, so its cells gather under one parent however often it was interrupted.

Who trains a run is decided in the store itself: the process that trains a child run holds a lease
on it (tag ``advbench.lease``: host, pid, a token and an expiry), renewed by a heartbeat every
quarter of ``tracking.lease_seconds``. Any process on the same store, whatever its cache folder,
waits while a lease is live and may take a run over only once its lease has expired; nothing with
a live lease is ever deleted. Expiry compares the writer's clock with the reader's: processes on
several machines need their clocks in step (NTP) to within a small part of the lease. A lease whose
owner ran in this machine's PID space and is gone (SIGKILL, a crash) is not waited for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np

from advbench.harness.config import RunConfig, TrackingConfig, config_hash, flatten, to_yaml
from advbench.harness.errors import disk_full

if TYPE_CHECKING:
    from advbench.harness.suites import Suite

CONFIG_HASH_TAG = "advbench.config_hash"
LEASE_TAG = "advbench.lease"
# MLflow 3.0-3.x UIs open an experiment in the view its kind names; untagged, they guess the GenAI
# "Traces" view, which is empty for training runs. Later UIs (3.17 measured) follow a global
# GenAI / Model-training switch instead, which a URL's workflowType selects: browse_url.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
MLFLOW_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default


def browse_hint(uri: str, experiment_id: str) -> str:
    """How to look at an experiment's runs in MLflow's model-training view: the URL (with
    ``workflowType=machine_learning``, which MLflow's UI honours whatever its switch was left at)
    and, for a store a local `mlflow ui` must serve, the command that serves it."""
    page = f"#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    if uri.startswith(("http://", "https://")):
        return f"browse: {uri.rstrip('/')}/{page}"
    return f"browse: mlflow ui --backend-store-uri {uri}, then {MLFLOW_UI}/{page}"


CLAIM_SETTLE_SECONDS = 0.5  # between writing a claim and reading it back: a rival's write lands first
SUITE_TAG = "advbench.suite"
SUITE_HASH_TAG = "advbench.suite_hash"
PARENT_TAG = "mlflow.parentRunId"
MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limits
MAX_PARAMS_PER_BATCH = 100


def metric_history(client: Any, run_id: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    """A metric's (steps, values) in step order."""
    points = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
    return np.array([p[0] for p in points], dtype=int), np.array([p[1] for p in points], dtype=float)


# Seconds between attempts of a failed tracking call: a store away for ~15 s costs no metrics.
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)
# MLflow errors that another attempt cannot fix (the request itself is wrong).
PERMANENT_ERRORS = (
    "INVALID_PARAMETER_VALUE",
    "RESOURCE_ALREADY_EXISTS",
    "RESOURCE_DOES_NOT_EXIST",
    "BAD_REQUEST",
)
log = logging.getLogger("advbench.tracking")


def retrying(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, tried again after each of RETRY_DELAYS on a transient failure."""
    for delay in (*RETRY_DELAYS, None):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if delay is None or getattr(exc, "error_code", None) in PERMANENT_ERRORS or disk_full(exc):
                raise
            log.warning(
                "tracking: %s failed (%s: %s); retrying in %.1f s", what, type(exc).__name__, exc, delay
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail within ``timeout`` seconds, naming the URI, when a tracking server does not answer."""
    import urllib.error
    import urllib.request

    from advbench.harness.config import ConfigError

    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
                pass
        except urllib.error.HTTPError:
            pass  # it answered: a server without /health is still a server
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"config key 'tracking.uri': the MLflow tracking server at {uri} is unreachable ({exc})"
            ) from None
    elif scheme == "sqlite" and uri not in ("sqlite://", "sqlite:///:memory:"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"config key 'tracking.uri': cannot create the SQLite store {uri}: {exc}"
            ) from None
        if not os.access(folder, os.W_OK):
            raise ConfigError(
                f"config key 'tracking.uri': cannot write the SQLite store {uri} (folder read-only)"
            )


def _create_sqlite_store(uri: str) -> None:
    """Create a new SQLite store atomically: its schema is built in a temporary file, then linked.

    MLflow builds a new store's schema in many migrations; a process killed (or a second process
    starting) in the middle leaves a file that no later run can open. The link either puts a
    complete store in place or finds one there already.
    """
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite" or uri in ("sqlite://", "sqlite:///:memory:"):
        return
    path = Path(uri.removeprefix("sqlite:///"))
    if path.exists():
        return
    from mlflow.tracking import MlflowClient

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        MlflowClient(tracking_uri=f"sqlite:///{tmp.resolve()}").search_experiments()  # builds the schema
        with contextlib.suppress(FileExistsError):  # another process was first: use its store
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _is_local(uri: str) -> bool:
    return urlparse(uri).scheme in ("sqlite", "file", "")


class RunTracker:
    """The child run of one training run: buffered step metrics, params, artifacts."""

    def __init__(self, client: Any, run_id: str, lease: Lease | None = None) -> None:
        self.client = client
        self.run_id = run_id
        self.lease = lease  # held while this process trains the run (Tracker.claim)
        self._heartbeat: threading.Thread | None = None
        self._stop_heartbeat = threading.Event()
        self.lease_lost: str | None = None  # why another process owns the run now
        self.resumed = False  # an existing run taken over (Tracker.claim), not a new one
        self._buffer: list[Any] = []
        # The loop turns this off while it checkpoints: it then flushes with each checkpoint.
        self.auto_flush = True
        self._logged_through: dict[str, int] = {}  # per key, the last step already in the store

    def skip_logged(self) -> None:
        """Drop from now on what the store already holds: a resumed run recomputes the steps after
        its checkpoint, and a kill between a flush and the checkpoint's rename must not log them twice."""
        run = retrying("get_run", self.client.get_run, self.run_id)
        self._logged_through = {
            key: max(
                m.step
                for m in retrying("get_metric_history", self.client.get_metric_history, self.run_id, key)
            )
            for key in run.data.metrics
        }

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._buffer.extend(
            Metric(key, float(value), now, step)
            for key, value in metrics.items()
            if step > self._logged_through.get(key, -1)
        )
        if self.auto_flush and len(self._buffer) >= MAX_METRICS_PER_BATCH:
            self.flush()

    def flush(self) -> None:
        """Send the buffered metrics; a batch leaves the buffer only once the store has it."""
        if self.lease_lost:
            raise LeaseLost(f"MLflow run {self.run_id}: {self.lease_lost}; this process stops training it")
        while self._buffer:
            batch = self._buffer[:MAX_METRICS_PER_BATCH]
            retrying("log_batch", self.client.log_batch, self.run_id, metrics=batch, synchronous=True)
            del self._buffer[: len(batch)]

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(key, value[:6000]) for key, value in params.items()]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            batch = items[i : i + MAX_PARAMS_PER_BATCH]
            retrying("log_batch", self.client.log_batch, self.run_id, params=batch, synchronous=True)

    def log_text(self, text: str, artifact_file: str) -> None:
        retrying("log_text", self.client.log_text, self.run_id, text, artifact_file)

    def log_jsonl(self, rows: list[dict], artifact_file: str) -> None:
        self.log_text("".join(json.dumps(row) + "\n" for row in rows), artifact_file)

    def set_tag(self, key: str, value: str) -> None:
        retrying("set_tag", self.client.set_tag, self.run_id, key, value)

    def finish(self, status: str = "FINISHED") -> None:
        try:
            self.flush()
            retrying("set_terminated", self.client.set_terminated, self.run_id, status=status)
        finally:
            self.release()

    def keep_lease(self) -> None:
        """Renew the lease in the background until ``release``; a renewal that finds another
        process's token marks the lease lost (the next flush raises LeaseLost)."""
        if self.lease is None or self._heartbeat is not None:
            return

        def beat() -> None:
            while not self._stop_heartbeat.wait(self.lease.seconds / 4):
                try:
                    held = Lease.held(self.client, self.run_id)
                    if held is not None and held.token != self.lease.token:
                        self.lease_lost = f"its lease passed to {held.owner}"
                        return
                    self.lease = self.lease.renewed()
                    retrying("set_tag", self.client.set_tag, self.run_id, LEASE_TAG, self.lease.tag())
                except Exception as exc:  # the store is away: the next beat tries again
                    log.warning("tracking: lease heartbeat failed (%s: %s)", type(exc).__name__, exc)

        self._heartbeat = threading.Thread(target=beat, name=f"lease-{self.run_id[:8]}", daemon=True)
        self._heartbeat.start()

    def release(self, write: bool = True) -> None:
        """Stop renewing and give the lease up (expired at once), if this process still holds it;
        ``write=False`` leaves it to expire (a full disk: the store cannot take the write)."""
        if self.lease is None:
            return
        self._stop_heartbeat.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        if write and not self.lease_lost:
            with contextlib.suppress(Exception):
                released = dataclasses.replace(self.lease, until=0.0)
                retrying("set_tag", self.client.set_tag, self.run_id, LEASE_TAG, released.tag())
        self.lease = None


class LeaseLost(RuntimeError):
    """Another process took over the run this process was training (its lease had expired)."""


def _process_space() -> str:
    """Where a pid means one process: this boot of this kernel and this PID namespace ("" where
    it cannot be told, e.g. not Linux). Two containers on one host share the boot, not the PIDs."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return ""


PROCESS_SPACE = _process_space()


@dataclass(frozen=True)
class Lease:
    """Who trains a run, until when (seconds since the epoch): the tag ``advbench.lease``."""

    host: str
    pid: int
    token: str
    until: float
    seconds: float
    space: str = ""  # _process_space() of the owner

    @classmethod
    def new(cls, seconds: float) -> Lease:
        import socket
        import uuid

        return cls(
            socket.gethostname(), os.getpid(), uuid.uuid4().hex, time.time() + seconds, seconds, PROCESS_SPACE
        )

    def renewed(self) -> Lease:
        return dataclasses.replace(self, until=time.time() + self.seconds)

    def tag(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def parse(cls, tags: dict[str, str]) -> Lease | None:
        """The lease in a run's tags, or None when it has none (a run of an older version, or a
        tag that cannot be read: neither is a live owner)."""
        try:
            return cls(**json.loads(tags[LEASE_TAG]))
        except (KeyError, TypeError, ValueError):
            return None

    @classmethod
    def held(cls, client: Any, run_id: str) -> Lease | None:
        """The lease the store holds on ``run_id`` now (read with retries)."""
        return cls.parse(retrying("get_run", client.get_run, run_id).data.tags)

    @property
    def live(self) -> bool:
        """Not expired, and its owner not seen dead: a process in this PID space whose pid is gone
        (killed, crashed) holds nothing, so a rerun here takes over at once instead of waiting."""
        if self.until <= time.time():
            return False
        if self.space and self.space == PROCESS_SPACE and self.pid != os.getpid():
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:  # alive, another user's
                pass
        return True

    @property
    def owner(self) -> str:
        return f"{self.host} pid {self.pid}"


@dataclass(frozen=True)
class Held:
    """A run another process is training: wait for it."""

    run_id: str
    lease: Lease


class Tracker:
    """The tracking store of one invocation."""

    def __init__(self, cfg: TrackingConfig) -> None:
        from mlflow.tracking import MlflowClient

        self.cfg = cfg
        check_reachable(cfg.uri)
        _create_sqlite_store(cfg.uri)
        try:
            self.client = MlflowClient(tracking_uri=cfg.uri)
            experiment = self.client.get_experiment_by_name(cfg.experiment)
        except Exception as exc:
            if urlparse(cfg.uri).scheme != "sqlite":
                raise
            from advbench.harness.config import ConfigError

            reason = " ".join(str(exc).split("[SQL:")[0].split())[:200]
            raise ConfigError(
                f"config key 'tracking.uri': the SQLite store {cfg.uri} cannot be read ({reason}); "
                "if it is damaged (a copy cut short, a full disk), move it aside and run again"
            ) from None
        if experiment is None:
            # A local store keeps artifacts in a folder beside it, named by the config.
            location = Path(cfg.artifact_root).resolve().as_uri() if _is_local(cfg.uri) else None
            try:
                self.experiment_id = self.client.create_experiment(
                    cfg.experiment, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
                )
            except Exception:  # another process created it in the meantime
                experiment = self.client.get_experiment_by_name(cfg.experiment)
                if experiment is None:
                    raise
                self.experiment_id = experiment.experiment_id
        else:
            self.experiment_id = experiment.experiment_id
            if EXPERIMENT_KIND_TAG not in experiment.tags:  # made by an older version: tagged now
                retrying(
                    "set_experiment_tag",
                    self.client.set_experiment_tag,
                    self.experiment_id,
                    EXPERIMENT_KIND_TAG,
                    EXPERIMENT_KIND,
                )

    def start_parent(self, name: str, tags: dict[str, str] | None = None) -> RunTracker:
        run = self.client.create_run(
            self.experiment_id, run_name=name, tags={"advbench.kind": "invocation", **(tags or {})}
        )
        return RunTracker(self.client, run.info.run_id)

    def start_suite(self, suite: Suite, tags: dict[str, str] | None = None) -> RunTracker:
        """The suite's parent run: the one an earlier run of the same suite made, or a new one.

        It holds the suite file and its cells (``cells.json``: hash, label, task, model, seed), which
        is all the leaderboard needs to find the cells' runs.
        """
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{SUITE_HASH_TAG}` = '{suite.hash}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if found:
            self.client.update_run(found[0].info.run_id, status="RUNNING")
            return RunTracker(self.client, found[0].info.run_id)
        run = self.client.create_run(
            self.experiment_id,
            run_name=suite.name,
            tags={
                "advbench.kind": "suite",
                SUITE_TAG: suite.name,
                SUITE_HASH_TAG: suite.hash,
                "advbench.reference": suite.reference,
                "mlflow.note.content": suite.description,
                **(tags or {}),
            },
        )
        parent = RunTracker(self.client, run.info.run_id)
        parent.log_text(suite.path.read_text(), "suite.yaml")
        parent.log_text(
            json.dumps({"labels": suite.labels, "cells": suite.records()}, indent=1), "cells.json"
        )
        return parent

    def find_suite(self, name: str) -> Any | None:
        """The newest parent run of the suite called ``name``."""
        return self._newest(f"tags.`{SUITE_TAG}` = '{name}' and tags.`advbench.kind` = 'suite'")

    def find_finished(self, cfg: RunConfig | str) -> Any | None:
        """A finished child run with this resolved config (or config hash), if any (the newest)."""
        digest = cfg if isinstance(cfg, str) else config_hash(cfg)
        return self._newest(f"tags.`{CONFIG_HASH_TAG}` = '{digest}' and attributes.status = 'FINISHED'")

    def _newest(self, filter_string: str) -> Any | None:
        """The most recently started run of this experiment that matches ``filter_string``."""
        runs = retrying(
            "search_runs",
            self.client.search_runs,
            [self.experiment_id],
            filter_string=filter_string,
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return runs[0] if runs else None

    def _unfinished(self, digest: str) -> list[Any]:
        """The active, unfinished child runs of a config hash, oldest first."""
        runs = retrying(
            "search_runs",
            self.client.search_runs,
            [self.experiment_id],
            filter_string=f"tags.`{CONFIG_HASH_TAG}` = '{digest}' and attributes.status != 'FINISHED'",
        )
        return sorted(runs, key=lambda run: (run.info.start_time, run.info.run_id))

    def claim(self, cfg: RunConfig, parent: RunTracker) -> RunTracker | Held:
        """This process's lease on the run of ``cfg``: the unfinished run whose lease expired (to
        resume), or a new child run; or Held when another process's lease on it is live.

        A claim is written, then read back after CLAIM_SETTLE_SECONDS: of two processes claiming at
        once the later write wins and the other backs off. A new run that finds a rival live run
        deletes itself (its own, just made, nothing logged) and the claim is tried again; so a live
        run younger than 2 x CLAIM_SETTLE_SECONDS is read again once settled before it is called Held.
        Store errors are retried and then raised, never taken for "nothing to resume".
        """
        digest = config_hash(cfg)
        seconds = self.cfg.lease_seconds
        tries = 20
        for attempt in range(tries):
            unfinished = self._unfinished(digest)
            live = [
                (run, lease) for run in unfinished if (lease := Lease.parse(run.data.tags)) and lease.live
            ]
            if live:
                run, lease = live[0]
                # a run made a moment ago may yet back off from a rival and delete itself (after
                # logging its params): read again once it has settled rather than wait on a run
                # about to vanish (a negative age, clocks apart, reads again too, 20 tries at most)
                young = time.time() - run.info.start_time / 1000 < 2 * CLAIM_SETTLE_SECONDS
                if young and attempt < tries - 1:
                    time.sleep(CLAIM_SETTLE_SECONDS)
                    continue
                return Held(run.info.run_id, lease)
            if unfinished:
                run_id = unfinished[-1].info.run_id  # the newest: older ones are leftovers
                lease = Lease.new(seconds)
                retrying("set_tag", self.client.set_tag, run_id, LEASE_TAG, lease.tag())
                time.sleep(CLAIM_SETTLE_SECONDS)
                held = Lease.held(self.client, run_id)
                if held is None or held.token != lease.token:
                    continue  # a rival's claim landed after ours: it holds the run now
                retrying("update_run", self.client.update_run, run_id, status="RUNNING")
                retrying("set_tag", self.client.set_tag, run_id, "advbench.resumed_by", parent.run_id)
                child = RunTracker(self.client, run_id, lease.renewed())
                child.resumed = True
                child.skip_logged()
                return child
            child = self.start_child(parent, cfg, Lease.new(seconds))
            rivals = [run for run in self._unfinished(digest) if run.info.run_id != child.run_id]
            if not any((lease := Lease.parse(run.data.tags)) and lease.live for run in rivals):
                return child
            retrying("delete_run", self.client.delete_run, child.run_id)
            time.sleep(random.uniform(0.1, 1.0))  # both may have backed off: try again apart
        raise RuntimeError(f"{cfg.run_name}: could not claim its run in the store after {tries} tries")

    def start_child(self, parent: RunTracker, cfg: RunConfig, lease: Lease | None = None) -> RunTracker:
        tags = {
            PARENT_TAG: parent.run_id,
            CONFIG_HASH_TAG: config_hash(cfg),
            "advbench.kind": "run",
            "advbench.estimator": cfg.estimator,
            "advbench.label": cfg.display_label,
            "advbench.task": cfg.task.name,
            "advbench.model": cfg.model.name,
            "advbench.seed": str(cfg.seed),
        }
        if lease is not None:
            tags[LEASE_TAG] = lease.tag()
        run = retrying(
            "create_run", self.client.create_run, self.experiment_id, run_name=cfg.run_name, tags=tags
        )
        child = RunTracker(self.client, run.info.run_id, lease)
        child.log_params(flatten(cfg))
        child.log_text(to_yaml(cfg), "config.yaml")
        return child
