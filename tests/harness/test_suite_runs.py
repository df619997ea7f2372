"""Suites end to end through MLflow: run, re-run, leaderboard, check, kill, Ray, two processes at once."""

import importlib.util
import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from advbench.harness.cli import main
from tests.conftest import FAST

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CLI = "import sys; from advbench.harness.cli import main; sys.exit(main(sys.argv[1:]))"
SUITE = """
name: tiny
reference: grpo
matrix:
  estimator: [grpo, nsr]
  seed: [0, 1]
overrides:
  tracking: {experiment: tiny}
"""


@pytest.fixture
def suite(tmp_path, cache_dir):
    """A 4-cell suite on the fast test model, with its own store; returns (file, overrides, db)."""
    path = tmp_path / "tiny.yaml"
    path.write_text(SUITE)
    db = tmp_path / "mlflow.db"
    overrides = [*FAST, f"cache_dir={cache_dir}", f"tracking.uri=sqlite:///{db}", "trainer.steps=6"]
    return path, overrides, db


def store(db, experiment="tiny"):
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name(experiment)
    parents = client.search_runs([exp.experiment_id], "tags.`advbench.kind` = 'suite'")
    children = client.search_runs([exp.experiment_id], "tags.`advbench.kind` = 'run'")
    return client, parents, children


def cell_statuses(db) -> list[str]:
    """The statuses of the cells' runs, read without MLflow (whose client would migrate a new store)."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            rows = con.execute(
                "SELECT r.status FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                "WHERE t.key = 'advbench.kind' AND t.value = 'run' AND r.lifecycle_stage = 'active'"
            ).fetchall()
    except sqlite3.Error:  # tables not there yet
        return []
    return [status for (status,) in rows]


def running_step(db) -> int:
    """The last step the running cell has flushed to the store (-1 when none)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            (step,) = con.execute(
                "SELECT MAX(m.step) FROM metrics m JOIN runs r ON r.run_uuid = m.run_uuid "
                "WHERE r.status = 'RUNNING' AND m.key = 'train/reward_mean' AND r.lifecycle_stage = 'active'"
            ).fetchone()
    except sqlite3.Error:
        return -1
    return -1 if step is None else step


def assert_each_cell_once(db, cells: int):
    client, parents, children = store(db)
    assert len(parents) == 1, [p.info.run_id for p in parents]
    assert len(children) == cells, [(c.info.run_name, c.info.status) for c in children]
    assert {c.info.status for c in children} == {"FINISHED"}
    assert len({c.data.tags["advbench.config_hash"] for c in children}) == cells
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    for child in children:
        for key in ("train/reward_mean", "eval/pass_at_1", "axes/sign_balance"):
            steps = [m.step for m in client.get_metric_history(child.info.run_id, key)]
            assert len(steps) == len(set(steps)), f"{child.info.run_name}: {key} logged twice at a step"
    return client, parents[0], children


def test_suite_runs_every_cell_once_and_a_rerun_skips_them(suite, tmp_path, capsys, monkeypatch):
    path, overrides, db = suite
    assert main(["suite", str(path), *overrides]) == 0
    client, parent, children = assert_each_cell_once(db, 4)
    assert {c.data.tags["advbench.label"] for c in children} == {"grpo", "nsr"}
    ids = {c.info.run_id for c in children}

    assert main(["suite", str(path), *overrides]) == 0
    out = capsys.readouterr()
    assert "4/4 cells finished (0 run now, 4 before)" in out.err
    _, parent_again, children = assert_each_cell_once(db, 4)
    assert parent_again.info.run_id == parent.info.run_id and {c.info.run_id for c in children} == ids

    # the leaderboard reads MLflow only: from another directory, by the suite's name
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{db}"
    assert main(["leaderboard", "tiny", "--tracking-uri", uri, "--experiment", "tiny"]) == 0
    board = tmp_path / "leaderboards" / "tiny"
    numbers = json.loads((board / "leaderboard.json").read_text())["estimators"]
    for label in ("grpo", "nsr"):
        peaks = [
            c.data.metrics["summary/peak_pass_at_1"]
            for c in children
            if c.data.tags["advbench.label"] == label
        ]
        assert numbers[label]["peak_pass_at_1"] == pytest.approx(np.mean(peaks), abs=1e-6)
        assert numbers[label]["seeds"] == 2
    page = (board / "index.html").read_text()
    assert "<h1>Leaderboard: tiny</h1>" in page and page.count('<img src="') == 4

    # benchmarks/suite_metrics.py: the same store, per-label means over seeds of chosen metrics
    spec = importlib.util.spec_from_file_location("suite_metrics", ROOT / "benchmarks" / "suite_metrics.py")
    suite_metrics = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite_metrics)
    capsys.readouterr()
    args = ["tiny", "--tracking-uri", uri, "--experiment", "tiny", "--train", "axes/sign_balance"]
    assert suite_metrics.main([*args, "--summary", "summary/peak_pass_at_1"]) == 0
    table = {line.split("|")[1].strip(): line for line in capsys.readouterr().out.splitlines()[2:]}
    assert set(table) == {"grpo", "nsr"} and "-1 ± 0" in table["nsr"]  # nsr's mass is all negative
    grpo_peaks = [
        c.data.metrics["summary/peak_pass_at_1"] for c in children if c.data.tags["advbench.label"] == "grpo"
    ]
    assert f"{np.mean(grpo_peaks):.4g}" in table["grpo"]


def test_check_passes_a_shifted_seed_rerun_and_catches_a_flipped_sign(tmp_path, cache_dir, capsys):
    """The small version of benchmarks/check_noise.py: the baseline records its runs and their
    noise; the same suite on other seeds (what another CPU family's rounding does to RL runs)
    passes; GRPO with its advantages negated fails."""
    gate = (
        "name: gate\nmatrix: {{estimator: [grpo], seed: {seeds}}}\n"
        "overrides: {{tracking: {{experiment: gate}}}}\n"
    )
    path, shifted = tmp_path / "gate.yaml", tmp_path / "shifted" / "gate.yaml"
    path.write_text(gate.format(seeds=[0, 1, 2]))
    shifted.parent.mkdir()
    shifted.write_text(gate.format(seeds=[3, 4, 5]))
    baseline = tmp_path / "baseline.json"

    def overrides(db):
        # the default tiny model (its shipped warm start is what RL sharpens) on the smoke suite's budget
        return [f"cache_dir={cache_dir}", f"tracking.uri=sqlite:///{tmp_path / db}", "trainer.steps=60",
                "eval.every=10", "geometry.every=0"]  # fmt: skip

    assert main(["check", str(path), "--baseline", str(baseline), "--update", *overrides("a.db")]) == 0
    stored = json.loads(baseline.read_text())
    assert stored["format"] == 2 and [r["seed"] for r in stored["estimators"]["grpo"]["runs"]] == [0, 1, 2]
    assert stored["noise"]["gain"]["df"] == 2 and stored["noise"]["gain"]["sd"] > 0
    assert min(r["gain"] for r in stored["estimators"]["grpo"]["runs"]) > 0.02  # it does learn in 60 steps
    assert main(["check", str(path), "--baseline", str(baseline), *overrides("a.db")]) == 0
    assert "check passed" in capsys.readouterr().err
    assert main(["check", str(shifted), "--baseline", str(baseline), *overrides("a.db")]) == 0
    said = " ".join(capsys.readouterr().err.split())
    assert "check passed" in said and "threshold = t(1 - 0.05/4, df 2)" in said

    planted = [
        sys.executable,
        "benchmarks/planted_regression.py",
        str(path),
        "grpo",
        "--baseline",
        str(baseline),
    ]
    flipped = subprocess.run(
        [*planted, *overrides("b.db")], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert flipped.returncode == 1, flipped.stderr[-3000:]
    assert "REGRESSED grpo final_pass_at_1" in " ".join(flipped.stderr.split())


def test_a_nan_in_a_stored_eval_curve_stops_the_leaderboard_with_the_run_named(suite, tmp_path, capsys):
    path, overrides, db = suite
    assert main(["suite", str(path), *overrides]) == 0
    client, _, children = store(db)
    victim = children[0]
    client.log_metric(victim.info.run_id, "eval/pass_at_1", float("nan"), step=3)
    uri = f"sqlite:///{db}"
    capsys.readouterr()
    args = ["tiny", "--tracking-uri", uri, "--experiment", "tiny", "--out", str(tmp_path / "board")]
    assert main(["leaderboard", *args]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"run {victim.info.run_id}" in err and "non-finite eval pass@1 at step(s) 3" in err


def test_check_refuses_a_missing_broken_or_old_baseline(tmp_path, suite, capsys):
    path, overrides, _ = suite
    assert main(["check", str(path), "--baseline", str(tmp_path / "none.json"), *overrides]) == 2
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert main(["check", str(path), "--baseline", str(broken), *overrides]) == 2
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"suite": "tiny", "tolerances": {}, "estimators": {"grpo": {"gain": 0.05}}}))
    capsys.readouterr()
    assert main(["check", str(path), "--baseline", str(old), *overrides]) == 2
    said = " ".join(capsys.readouterr().err.split())
    assert (
        "recorded by an older advbench" in said and f"advbench check tiny --baseline {old} --update" in said
    )


def test_a_killed_suite_rerun_finishes_every_cell_once(suite, tmp_path):
    path, overrides, db = suite
    overrides = [*overrides, "trainer.steps=16", "trainer.checkpoint_every=2"]
    command = [sys.executable, "-c", CLI, "suite", str(path), *overrides]
    rng = random.Random(0)
    for kill_after_cells in (0, 2):  # in the first cell, then in the third
        target = rng.randint(2, 14)  # a step inside the cell's 16
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline:
            statuses = cell_statuses(db)
            if statuses.count("FINISHED") >= kill_after_cells and running_step(db) >= target:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert time.time() < deadline, "the suite never got to the kill point"
    assert cell_statuses(db).count("FINISHED") < 4  # the kills left work to do
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # the cell killed last was picked up where it died: from its checkpoint, or from the start
    # into the same MLflow run when it died before one
    assert "resuming MLflow run" in " ".join(done.stderr.split())
    assert_each_cell_once(db, 4)


def test_two_suite_processes_on_one_store_share_the_cells(suite):
    path, overrides, db = suite
    command = [sys.executable, "-c", CLI, "suite", str(path), *overrides]
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    assert_each_cell_once(db, 4)
    # every cell was trained by one process and reported as finished by the other
    assert sum(err.count("not run again") for _, err in outputs) == 4


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (advbench[ray])")
def test_ray_runs_cells_in_parallel_into_the_same_store(suite):
    """A local Ray on this machine's CPUs (2 here): one CPU per cell, so two cells at a time."""
    path, overrides, db = suite
    overrides = [*overrides, "trainer.steps=10", "threads=1"]
    command = [sys.executable, "-c", CLI, "suite", str(path), "--ray", *overrides]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    _, _, children = assert_each_cell_once(db, 4)
    spans = sorted((c.info.start_time, c.info.end_time) for c in children)
    overlapping = sum(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False))
    assert overlapping >= 1, f"no two cells ran at the same time: {spans}"


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (advbench[ray])")
def test_ray_dispatches_packs(suite):
    """--ray --pack 2: the suite's 4 cells go to Ray as two packs, each cell its own finished run,
    recorded as packed."""
    path, overrides, db = suite
    command = [sys.executable, "-c", CLI, "suite", str(path), "--ray", "--pack", "2", *overrides, "threads=1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    _, _, children = assert_each_cell_once(db, 4)
    assert {c.data.params["trainer.packed"] for c in children} == {"True"}


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (advbench[ray])")
def test_a_cell_failing_on_ray_does_not_stop_the_others(tmp_path, suite):
    _, overrides, db = suite
    path = tmp_path / "broken.yaml"
    path.write_text(
        "name: tiny\nmatrix:\n  estimator:\n    - grpo\n"
        "    - {name: nsr, overrides: {defaults: {model: local}, model: {path: /nonexistent/model}}}\n"
        "overrides: {tracking: {experiment: tiny}}\n"
    )
    command = [sys.executable, "-c", CLI, "suite", str(path), "--ray", *overrides, "threads=1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "1/2 cells finished" in done.stderr and "1 failed" in done.stderr
    assert "nsr-arithmetic-local-s0" in done.stderr
    assert cell_statuses(db).count("FINISHED") == 1
