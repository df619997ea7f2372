"""Who trains a run is decided in the tracking store: two processes on one store agree whatever
their cache folders, a run is taken over only once its lease has expired, checkpoints are kept
apart by store, and nothing alive is deleted. The scenarios run real processes."""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from advbench.harness import tracking
from advbench.harness.config import load
from advbench.harness.loop import machine_dependent
from advbench.harness.tracking import Held, Lease, LeaseLost, RunTracker, Tracker
from tests.conftest import FAST

CLI = "import sys; from advbench.harness.cli import main; sys.exit(main(sys.argv[1:]))"


def overrides(cache, db, steps=12, lease_seconds=3):
    return [
        *FAST,
        f"cache_dir={cache}",
        f"tracking.uri=sqlite:///{db}",
        f"tracking.artifact_root={db.parent}/artifacts",
        "estimator=nsr",
        f"trainer.steps={steps}",
        "trainer.checkpoint_every=2",
        "eval.every=4",
        f"tracking.lease_seconds={lease_seconds}",
    ]


def start(cache, db, **kw):
    return subprocess.Popen(
        [sys.executable, "-c", CLI, "run", *overrides(cache, db, **kw)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},  # a line is readable as soon as it is printed
    )


def finish(process, timeout=300):
    """What the process printed, its lines joined (the console wraps long lines at its width)."""
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return " ".join((out + err).split())


def runs(db, view=ViewType.ACTIVE_ONLY):
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("advbench")
    return client, client.search_runs(
        [experiment.experiment_id], filter_string="tags.`advbench.kind` = 'run'", run_view_type=view
    )


def each_step_once(client, run):
    for key in run.data.metrics:
        if machine_dependent(key):
            continue
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert len(steps) == len(set(steps)), f"{key} logged twice: {sorted(steps)}"


def wait_for(condition, timeout=240):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def checkpoints(cache):
    return sorted((cache / "checkpoints").glob("*/*/state.pt"))


@pytest.fixture
def caches(cache_dir, tmp_path):
    """Two cache folders with the same warm start (copied: building it again costs a minute)."""
    first, second = tmp_path / "cache-a", tmp_path / "cache-b"
    for folder in (first, second):
        shutil.copytree(cache_dir, folder, ignore=shutil.ignore_patterns("checkpoints", "locks"))
    return first, second


@pytest.mark.slow
def test_a_second_process_on_another_cache_waits_instead_of_deleting_a_live_run(caches, tmp_path):
    """The first process is paused (SIGSTOP) once it trains, so the second meets a live run however
    fast this machine is, and resumed once the second has said it waits; the lease (60 s) outlives
    the pause."""
    db = tmp_path / "store.db"
    first = start(caches[0], db, lease_seconds=60)
    wait_for(lambda: checkpoints(caches[0]))
    first.send_signal(signal.SIGSTOP)
    try:
        second = start(caches[1], db, lease_seconds=60)
        waited = []

        def read_until_waiting():
            for line in second.stderr:  # messages go to stderr, the tables to stdout
                waited.append(line)
                if "being trained by" in line:
                    return

        reader = threading.Thread(target=read_until_waiting, daemon=True)
        reader.start()
        reader.join(timeout=240)
        assert any("being trained by" in line for line in waited), "".join(waited)
    finally:
        first.send_signal(signal.SIGCONT)
    first_log, second_log = finish(first), " ".join(waited) + " " + finish(second)
    assert "finished before" in second_log, second_log
    assert "deleted" not in first_log + second_log
    client, found = runs(db, ViewType.ALL)
    assert len(found) == 1 and found[0].info.status == "FINISHED"
    each_step_once(client, found[0])


@pytest.mark.slow
def test_two_stores_sharing_a_cache_keep_their_checkpoints_apart(caches, tmp_path):
    cache = caches[0]
    store_a, store_b = tmp_path / "a.db", tmp_path / "b.db"
    killed = start(cache, store_a)
    wait_for(lambda: any(p.parent.name for p in checkpoints(cache)))
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    (kept,) = checkpoints(cache)
    finish(start(cache, store_b))  # the same config, another store, the same cache
    assert kept.exists()  # store b's run neither resumed nor removed store a's checkpoint
    time.sleep(3.5)  # the killed run's lease expires
    rerun = finish(start(cache, store_a))
    assert "resuming MLflow run" in rerun and "after step" in rerun, rerun
    client, found = runs(store_a, ViewType.ALL)
    assert len(found) == 1 and found[0].info.status == "FINISHED"
    each_step_once(client, found[0])


@pytest.mark.slow
def test_two_processes_on_different_caches_resume_a_killed_run_exactly_once(caches, tmp_path):
    db = tmp_path / "store.db"
    killed = start(caches[0], db)
    wait_for(lambda: len(checkpoints(caches[0])) == 1)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    resumers = [start(caches[0], db), start(caches[1], db)]  # one holds the checkpoint, one does not
    logs = [finish(process) for process in resumers]
    resumed = [log for log in logs if "resuming MLflow run" in log]
    assert len(resumed) == 1, logs
    assert sum("finished before" in log for log in logs) == 1, logs
    client, found = runs(db, ViewType.ALL)
    assert len(found) == 1 and found[0].info.status == "FINISHED"  # nothing deleted, nothing doubled
    each_step_once(client, found[0])


# The lease itself, in one process.


@pytest.fixture
def store(tmp_path, fast_overrides):
    (cfg,) = load([*fast_overrides, "tracking.lease_seconds=2"])
    tracker = Tracker(cfg.tracking)
    return cfg, tracker, tracker.start_parent("test")


def test_claims_racing_for_one_config_give_it_to_exactly_one(fast_overrides):
    """Three claims at once (the winner's lease live throughout, as its heartbeat keeps it)."""
    (cfg,) = load([*fast_overrides, "tracking.lease_seconds=30"])
    tracker = Tracker(cfg.tracking)
    parent = tracker.start_parent("test")
    results = []
    threads = [threading.Thread(target=lambda: results.append(tracker.claim(cfg, parent))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    owners = [r for r in results if isinstance(r, RunTracker)]
    assert len(owners) == 1 and sum(isinstance(r, Held) for r in results) == 2, results
    assert {r.run_id for r in results} == {owners[0].run_id}


def test_a_live_lease_is_held_and_an_expired_one_taken_over(store):
    cfg, tracker, parent = store
    first = tracker.claim(cfg, parent)
    first.keep_lease()  # renewed every half second: stays live
    time.sleep(2.5)
    held = tracker.claim(cfg, parent)
    assert isinstance(held, Held) and held.run_id == first.run_id
    first._stop_heartbeat.set()  # the owner hangs: no more renewals
    time.sleep(2.5)
    second = tracker.claim(cfg, parent)
    assert isinstance(second, RunTracker) and second.run_id == first.run_id and second.resumed
    first._stop_heartbeat.clear()
    first._heartbeat = None
    first.keep_lease()  # the old owner wakes up: its next renewal finds the new token
    wait_for(lambda: first.lease_lost is not None, timeout=10)
    with pytest.raises(LeaseLost, match="its lease passed to"):
        first.flush()
    second.finish()
    assert Lease.parse(tracker.client.get_run(second.run_id).data.tags).live is False


def test_a_store_that_cannot_be_read_is_retried_then_raised_and_nothing_is_deleted(store, monkeypatch):
    cfg, tracker, parent = store
    child = tracker.claim(cfg, parent)
    child.release()  # an unfinished run whose owner is gone
    monkeypatch.setattr(tracking, "RETRY_DELAYS", (0.01, 0.01))
    real = tracker.client.search_runs
    calls = []

    def locked(*args, **kwargs):
        calls.append(1)
        if len(calls) <= 2:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return real(*args, **kwargs)

    monkeypatch.setattr(tracker.client, "search_runs", locked)
    again = tracker.claim(cfg, parent)
    assert again.run_id == child.run_id and again.resumed  # retried, then the same run resumed
    again.release()
    monkeypatch.setattr(tracker.client, "search_runs", lambda *args, **kwargs: _raise())
    with pytest.raises(RuntimeError, match="database is locked"):
        tracker.claim(cfg, parent)
    assert tracker.client.get_run(child.run_id).info.lifecycle_stage == "active"


def _raise():
    raise RuntimeError("(sqlite3.OperationalError) database is locked")


def test_a_lease_whose_owner_died_on_this_machine_is_not_waited_for():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # reaped: its pid is gone
    mine = Lease.new(60.0)
    assert mine.live
    assert not Lease(**{**mine.__dict__, "pid": dead.pid}).live
    elsewhere = Lease(**{**mine.__dict__, "pid": dead.pid, "space": "another-machine"})
    assert elsewhere.live  # a pid of another machine or container says nothing here: wait for expiry
    assert not Lease(**{**mine.__dict__, "until": time.time() - 1}).live
