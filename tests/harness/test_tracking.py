"""Tracking that fails clearly when the store is away and loses nothing when it blinks."""

import socket
import threading
import time

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST
from mlflow.tracking import MlflowClient

from advbench.harness import tracking
from advbench.harness.cli import main
from advbench.harness.config import ConfigError, TrackingConfig
from advbench.harness.loop import machine_dependent
from advbench.harness.tracking import RunTracker, Tracker


def test_a_refused_tracking_server_fails_at_once_naming_the_uri():
    with socket.socket() as sock:  # a free port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=f"tracking server at http://127.0.0.1:{port} is unreachable"):
        Tracker(TrackingConfig(uri=f"http://127.0.0.1:{port}"))
    assert time.perf_counter() - start < 5


def test_a_silent_tracking_server_fails_within_the_timeout():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()  # accepts connections, never answers
    threading.Thread(target=lambda: server.accept(), daemon=True).start()
    uri = f"http://127.0.0.1:{server.getsockname()[1]}"
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=f"{uri} is unreachable"):
        tracking.check_reachable(uri, timeout=1.0)
    assert time.perf_counter() - start < 4
    server.close()


def test_the_cli_reports_an_unreachable_store_as_a_config_error(capsys, fast_overrides):
    assert main(["run", *fast_overrides, "tracking.uri=http://127.0.0.1:9"]) == 2
    assert "http://127.0.0.1:9 is unreachable" in capsys.readouterr().err


def test_an_sqlite_store_that_cannot_be_created_is_named(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="the folder of the SQLite store .*a-file/sub/x.db does not exist"):
        TrackingConfig(uri=f"sqlite:///{blocker}/sub/x.db")  # absolute: no folders are made
    monkeypatch.chdir(tmp_path)  # relative: its folders are made under the working directory
    with pytest.raises(ConfigError, match="cannot create the SQLite store sqlite:///a-file/sub/x.db"):
        Tracker(TrackingConfig(uri="sqlite:///a-file/sub/x.db"))


class Flaky:
    """Wraps a client method: the first ``failures`` calls of each ``every``-th batch raise."""

    def __init__(self, fn, failures=2):
        self.fn, self.failures, self.calls, self.raised = fn, failures, 0, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.raised < self.failures:
            self.raised += 1
            raise MlflowException("database is locked")
        return self.fn(*args, **kwargs)


def test_a_transient_failure_is_retried_and_nothing_is_lost(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "RETRY_DELAYS", (0.0, 0.0, 0.0))
    tracker = Tracker(TrackingConfig(uri=f"sqlite:///{tmp_path}/m.db", artifact_root=str(tmp_path / "a")))
    run = tracker.start_parent("p")
    flaky = Flaky(tracker.client.log_batch, failures=2)
    monkeypatch.setattr(run.client, "log_batch", flaky)
    for step in range(5):
        run.log_metrics({"x": float(step)}, step)
    run.flush()
    assert flaky.raised == 2
    history = MlflowClient(f"sqlite:///{tmp_path}/m.db").get_metric_history(run.run_id, "x")
    assert sorted((m.step, m.value) for m in history) == [(s, float(s)) for s in range(5)]


def test_metrics_survive_a_store_away_longer_than_the_retries(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "RETRY_DELAYS", (0.0,))
    tracker = Tracker(TrackingConfig(uri=f"sqlite:///{tmp_path}/m.db", artifact_root=str(tmp_path / "a")))
    run = tracker.start_parent("p")
    real = run.client.log_batch
    monkeypatch.setattr(run.client, "log_batch", Flaky(real, failures=5))
    run.log_metrics({"x": 1.0}, 1)
    with pytest.raises(MlflowException):
        run.flush()  # two attempts, both fail: the error reaches the caller ...
    run.client.log_batch = real
    run.flush()  # ... and the metrics are still buffered for the next flush
    assert [m.value for m in run.client.get_metric_history(run.run_id, "x")] == [1.0]


def test_a_permanent_error_is_not_retried(monkeypatch):
    monkeypatch.setattr(tracking, "RETRY_DELAYS", (0.0, 0.0))
    calls = []

    def bad():
        calls.append(1)
        raise MlflowException("no such run", error_code=RESOURCE_DOES_NOT_EXIST)

    with pytest.raises(MlflowException):
        tracking.retrying("get_run", bad)
    assert len(calls) == 1


def test_a_run_with_a_flaky_store_logs_what_a_clean_run_logs(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setattr(tracking, "RETRY_DELAYS", (0.0, 0.0, 0.0))

    def run(db, flaky):
        from tests.conftest import FAST

        if flaky:
            original = RunTracker.flush

            def flush(self):
                # every flush first meets a store that fails twice
                self.client.log_batch = Flaky(MlflowClient.log_batch.__get__(self.client), failures=2)
                original(self)

            monkeypatch.setattr(RunTracker, "flush", flush)
        args = [
            *FAST,
            f"cache_dir={cache_dir}",
            f"tracking.uri=sqlite:///{tmp_path / db}",
            "trainer.checkpoint_every=2",
        ]
        assert main(["run", *args]) == 0
        monkeypatch.undo()
        monkeypatch.setattr(tracking, "RETRY_DELAYS", (0.0, 0.0, 0.0))
        client = MlflowClient(f"sqlite:///{tmp_path / db}")
        child = client.search_runs(
            [client.get_experiment_by_name("advbench").experiment_id], "tags.`advbench.kind` = 'run'"
        )[0]
        return {
            key: sorted((m.step, m.value) for m in client.get_metric_history(child.info.run_id, key))
            for key in child.data.metrics
            if not machine_dependent(key)
        }

    clean, flaky = run("clean.db", False), run("flaky.db", True)
    assert flaky == clean


def test_experiments_open_in_mlflows_model_training_view(tmp_path):
    uri = f"sqlite:///{tmp_path}/x.db"
    tracker = Tracker(TrackingConfig(uri=uri, experiment="fresh"))
    kind = tracker.client.get_experiment(tracker.experiment_id).tags.get("mlflow.experimentKind")
    assert kind == "custom_model_development"
    client = MlflowClient(tracking_uri=uri)
    older = client.create_experiment("older")  # as an older version made it: untagged
    Tracker(TrackingConfig(uri=uri, experiment="older"))
    assert client.get_experiment(older).tags["mlflow.experimentKind"] == "custom_model_development"
