"""`advbench run` and `advbench list` end to end, through MLflow's local SQLite store."""

import importlib
import json
import sys

import pytest
from mlflow.tracking import MlflowClient

from advbench.harness.cli import main

pytestmark = pytest.mark.slow


def _runs(uri: str, experiment: str = "advbench"):
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


def test_run_compares_estimators_under_one_parent_and_records_everything(fast_overrides, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["run", "estimator=[grpo,rloo]", *fast_overrides]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "peak pass@1" in out and "grpo" in out and "rloo" in out and "ppo_clip" in out  # the closing table
    # no terminal here: a plain progress line at each eval instead of rich's bars (silent in a log)
    assert "grpo-arithmetic-tiny-s0: step 2/4 reward" in captured.err and "| eval pass@1" in captured.err

    client, runs = _runs(uri)
    experiment = client.get_experiment_by_name("advbench")
    # where to look: MLflow's model-training view of this experiment, whatever its UI's switch says
    said = " ".join(captured.err.split())
    assert (
        f"browse: mlflow ui --backend-store-uri {uri}, then http://127.0.0.1:5000/#/experiments/"
        f"{experiment.experiment_id}/runs?workflowType=machine_learning"
    ) in said
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    parents = [r for r in runs if r.data.tags.get("advbench.kind") == "invocation"]
    children = [r for r in runs if r.data.tags.get("advbench.kind") == "run"]
    assert len(parents) == 1 and len(children) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert {c.data.tags["advbench.estimator"] for c in children} == {"grpo", "rloo"}
    assert all(r.info.status == "FINISHED" for r in runs)

    child = children[0]
    assert child.data.params["trainer.steps"] == "4" and child.data.params["loss.name"] == "ppo_clip"
    for key in (
        "summary/peak_pass_at_1",
        "summary/gain",
        "summary/gain_detected",
        "summary/final_pass_at_4",
        "eval/pass_at_1",
        "eval/greedy_pass_at_1",
        "train/reward_mean",
        "train/entropy",
        "train/clip_fraction",
        "time/rollout",
        "time/update",
    ):
        assert key in child.data.metrics, key
    # Each step logged exactly once; evals at 0, 2, 4.
    history = client.get_metric_history(child.info.run_id, "train/reward_mean")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]
    assert sorted(m.step for m in client.get_metric_history(child.info.run_id, "eval/pass_at_1")) == [0, 2, 4]

    artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"config.yaml", "eval_correct_counts.json", "eval_samples"} <= artifacts
    local = client.download_artifacts(child.info.run_id, "eval_correct_counts.json", str(tmp_path / "dl"))
    with open(local) as f:
        counts = json.load(f)
    assert counts["n"] == 4 and set(counts["correct"]) == {"0", "2", "4"} and len(counts["prompts"]) == 16
    samples = client.download_artifacts(
        child.info.run_id, "eval_samples/step_000004.jsonl", str(tmp_path / "dl")
    )
    with open(samples) as f:
        first = json.loads(f.readline())
    assert set(first) == {"prompt", "completion", "extracted", "answer", "reward", "correct"}


def test_rerunning_a_finished_run_does_not_train_or_log_again(fast_overrides, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["run", "estimator=rloo", *fast_overrides]) == 0
    assert main(["run", "estimator=rloo", *fast_overrides]) == 0
    assert "not run again" in capsys.readouterr().err
    client, runs = _runs(uri)
    children = [r for r in runs if r.data.tags.get("advbench.kind") == "run"]
    assert len(children) == 1
    assert len(client.get_metric_history(children[0].info.run_id, "train/reward_mean")) == 4


EDITED = '''
from advbench.estimators.grpo import group_normalised
from advbench.estimators.registry import register

SCALE = {scale}


@register("test_edited", source="test")
def edited(batch, signals, params):
    """GRPO's advantage times SCALE."""
    return SCALE * group_normalised(batch.rewards, batch.valid, 1e-6, True)
'''


def test_an_edited_estimator_trains_again_instead_of_reporting_the_old_run(
    fast_overrides, tmp_path, capsys, monkeypatch
):
    """A run's identity includes its estimator's code (version and source hash): the same config
    with the estimator edited is a new run, not the old one found finished."""
    from advbench.estimators import registry

    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # an edit within the same second
    args = ["run", "estimator=test_edited", *fast_overrides]
    identities = []
    for scale in ("1.0", "0.25"):
        (tmp_path / "edited_estimator.py").write_text(EDITED.format(scale=scale))
        sys.modules.pop("edited_estimator", None)
        with registry.temporary():
            importlib.import_module("edited_estimator")
            identities.append(registry.get("test_edited").identity)
            assert main(args) == 0 and main(args) == 0
        assert capsys.readouterr().err.count("not run again") == 1  # the second of each pair
    client, runs = _runs(f"sqlite:///{tmp_path}/mlflow.db")
    children = [r for r in runs if r.data.tags.get("advbench.kind") == "run"]
    assert len(children) == 2 and identities[0] != identities[1]
    assert sorted(r.data.params["code.estimator"] for r in children) == sorted(identities)
    assert len({r.data.tags["advbench.config_hash"] for r in children}) == 2


def test_list_shows_estimators_losses_tasks_and_models(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("grpo", "rloo", "reinforce_batch", "ppo_clip", "arithmetic", "countdown", "tiny", "hf"):
        assert name in out
    assert "arXiv 2402.03300" in out
    assert "arXiv 2606.09821 [primary]" in " ".join(out.split())  # a loss's source (drpo)


def test_list_fits_the_width_columns_gives_it_when_piped(capsys, monkeypatch):
    """Piped (not a terminal), the listing is as wide as COLUMNS says, and a source too long for
    its column (a DOI) folds instead of being cut."""
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= 80
    assert "…" not in "".join(lines)
    assert "doi:10.1007/BF00992696" in "".join(line.strip() for line in lines)


def test_a_reader_that_leaves_early_is_not_an_error():
    """`advbench list | grep -q NAME` under `set -o pipefail` (as CI checks the wheel): the reader
    exits at its first match, and the listing must then end with success and no traceback, not
    with rich's status 1. The pipe's read end is closed before anything is written, so every
    write meets the broken pipe whatever the timing."""
    import os
    import subprocess

    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "advbench.harness.cli", "list"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


def test_axes_plots_a_parent_runs_trajectories(fast_overrides, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["run", "estimator=[psr,nsr]", "--name", "signs", *fast_overrides]) == 0
    client, runs = _runs(uri)
    child = next(r for r in runs if r.data.tags.get("advbench.estimator") == "psr")
    assert {"axes/sign_balance", "axes/mean_difficulty", "axes/ess"} <= set(child.data.metrics)
    out = tmp_path / "signs.png"
    assert main(["axes", "signs", "--out", str(out), "--tracking-uri", uri]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    with pytest.raises(ValueError, match="no MLflow run"):
        main(["axes", "nope", "--out", str(out), "--tracking-uri", uri])
