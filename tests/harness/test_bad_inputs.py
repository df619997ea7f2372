"""Every bad input gets one line naming the key, the value and the fix, before anything is loaded
or written, and leaves nothing RUNNING or deleted: the careless user's list, one test each."""

import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from advbench.harness import checkpoint
from advbench.harness.cli import main
from advbench.harness.config import ConfigError, load
from advbench.harness.suites import load_suite
from tests.conftest import FAST, REQUIRE_ISOLATION

REFUSED = {
    "a negative seed": (["seed=-1"], "config key 'seed': must be >= 0, got -1"),
    "a store MLflow cannot open": (["tracking.uri=garbage://x"], "'garbage://x' is not a store"),
    "MLflow's refused file store": (["tracking.uri=mlruns"], "'mlruns' is not a store"),
    "a huge eval set": (["task.eval_size=100000000"], "'task.eval_size': must be in [1, 65536]"),
    "an environment variable on the command line": (
        ["trainer.steps=${oc.env:HOME}"],
        "'trainer.steps' (command line): '${oc.env:HOME}' reads the environment",
    ),
    "a store in a folder that does not exist": (
        ["tracking.uri=sqlite:////nonexistent-advbench/dir/x.db"],
        "does not exist; create it first (mkdir -p /nonexistent-advbench/dir)",
    ),
    "a group of one for a group-relative estimator": (
        ["estimator=grpo", "trainer.group_size=1"],
        "'trainer.group_size': estimator 'grpo' compares the samples of a group",
    ),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_a_bad_config_is_one_line_before_anything_runs(name, fast_overrides, tmp_path, capsys):
    items, message = REFUSED[name]
    assert main(["run", *fast_overrides, *items]) == 2
    err = capsys.readouterr().err
    assert message in " ".join(err.split()), err
    assert "Traceback" not in err
    assert not (tmp_path / "mlflow.db").exists()  # refused before the tracking store was opened
    assert not Path("/nonexistent-advbench").exists()


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("garbage://x", "'garbage://x' is not a store"),
        ("sqlite:////nonexistent-advbench/dir/x.db", "does not exist; create it first"),
    ],
)
def test_a_bad_store_given_as_a_flag_is_one_line_too(uri, message, capsys):
    """--tracking-uri (leaderboard, axes) is checked as tracking.uri in a config is."""
    assert main(["leaderboard", "smoke", "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert message in " ".join(err.split()) and "Traceback" not in err
    assert not Path("/nonexistent-advbench").exists()


def test_a_group_of_one_is_fine_for_an_estimator_that_learns_from_one_sample(fast_overrides):
    (cfg,) = load([*fast_overrides, "estimator=nsr", "trainer.group_size=1"])
    assert cfg.trainer.group_size == 1


def test_an_environment_variable_in_a_config_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVBENCH_TEST_SECRET", "hunter2")
    path = tmp_path / "run.yaml"
    path.write_text("tracking:\n  experiment: ${oc.env:ADVBENCH_TEST_SECRET}\n")
    with pytest.raises(ConfigError, match=r"'tracking.experiment' \(config file\).*reads the environment"):
        load([], path)


def test_a_cache_dir_that_cannot_be_written_is_named(fast_overrides, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["run", *fast_overrides, f"cache_dir={blocker}/cache"]) == 2
    err = capsys.readouterr().err
    assert f"config key 'cache_dir': cannot write {blocker}/cache" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize(
    "matrix", ["{estimator: []}", "{estimator: [grpo], seed: []}", "{estimator: [grpo], task: []}"]
)
def test_a_suite_with_an_empty_matrix_axis_is_refused(tmp_path, matrix):
    path = tmp_path / "s.yaml"
    path.write_text(f"matrix: {matrix}\n")
    with pytest.raises(ConfigError, match=r"matrix\.\w+ is empty; give it at least one value"):
        load_suite(path)


def test_a_suite_or_leaderboard_name_cannot_lead_out_of_its_folder(tmp_path, capsys, monkeypatch):
    path = tmp_path / "s.yaml"
    path.write_text("name: ../../..\nmatrix: {estimator: [grpo]}\n")
    with pytest.raises(ConfigError, match=r"name '../../..' must be letters, digits"):
        load_suite(path)
    monkeypatch.chdir(tmp_path)
    db = f"sqlite:///{tmp_path}/x.db"
    assert main(["leaderboard", "../../..", "--tracking-uri", db]) == 2
    assert "cannot name a folder under leaderboards/" in capsys.readouterr().err


def test_a_damaged_store_is_named_not_a_traceback(fast_overrides, tmp_path, capsys):
    good = tmp_path / "good.db"
    MlflowClient(tracking_uri=f"sqlite:///{good}").create_experiment("advbench")
    bad = tmp_path / "bad.db"
    bad.write_bytes(good.read_bytes()[:40_000])  # a copy cut short
    assert main(["run", *fast_overrides, f"tracking.uri=sqlite:///{bad}"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"the SQLite store sqlite:///{bad} cannot be read" in err and "move it aside" in err, err
    assert "Traceback" not in err


def test_an_unreadable_checkpoint_is_moved_aside_and_the_one_before_used(fast_overrides):
    (cfg,) = load(fast_overrides)
    checkpoint.save(cfg, None, {"step": 2})
    checkpoint.save(cfg, None, {"step": 4})  # step 2 becomes previous.pt
    path = checkpoint.checkpoint_path(cfg, None)
    path.write_bytes(path.read_bytes()[:20])  # cut short
    with pytest.warns(UserWarning, match="cannot be read .* moved aside"):
        assert checkpoint.load(cfg, None)["step"] == 2
    assert not path.exists() and list(path.parent.glob("state.pt.unreadable-*"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the bad file is not met again
        assert checkpoint.load(cfg, None)["step"] == 2
    checkpoint.remove(cfg, None)


CLI = "import sys; from advbench.harness.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 and not REQUIRE_ISOLATION, reason="mounting a small tmpfs needs root")
def test_a_full_disk_stops_the_run_with_one_error_and_it_resumes_once_there_is_room(cache_dir, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(disk)], check=True)
    try:
        shutil.copytree(cache_dir, disk / "cache", ignore=shutil.ignore_patterns("checkpoints", "locks"))
        args = [
            *FAST,
            f"cache_dir={disk}/cache",
            f"tracking.uri=sqlite:///{disk}/mlflow.db",
            f"tracking.artifact_root={disk}/artifacts",
            "estimator=nsr",
            "trainer.steps=12",
            "trainer.checkpoint_every=2",
            "eval.every=4",
            "tracking.lease_seconds=2",
        ]
        process = subprocess.Popen(
            [sys.executable, "-c", CLI, "run", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 240
        while not list((disk / "cache" / "checkpoints").glob("*/*/state.pt")):
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        process.send_signal(signal.SIGSTOP)  # fill the disk between two of its steps
        filler = disk / "filler"
        with open(filler, "wb") as file, pytest.raises(OSError):
            while True:
                file.write(b"\0" * 2**20)
        process.send_signal(signal.SIGCONT)
        out, err = process.communicate(timeout=240)
        err = " ".join(err.split())  # the console wraps long lines at its width
        assert process.returncode == 1, err[-3000:]
        assert "no space left on the device" in err and "Traceback" not in err, err[-3000:]
        filler.unlink()
        time.sleep(2.5)  # its lease could not be given back: it expires
        rerun = subprocess.run(
            [sys.executable, "-c", CLI, "run", *args], capture_output=True, text=True, timeout=300
        )
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert "resuming MLflow run" in " ".join(rerun.stderr.split())
        client = MlflowClient(tracking_uri=f"sqlite:///{disk}/mlflow.db")
        (run,) = client.search_runs(
            [client.get_experiment_by_name("advbench").experiment_id], "tags.`advbench.kind` = 'run'"
        )
        assert run.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/reward_mean")]
        assert sorted(steps) == list(range(1, 13))
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
