"""The recipes of examples/trl and examples/verl (docs/guides/beyond-one-machine.md) that run here: verl's
data and reward function for an advbench task (verl's trainer itself needs GPUs), and the TRL
script (its trainer is tested in tests/harness/test_adapter_trl.py)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from advbench.harness.tasks import Prompt

ROOT = Path(__file__).resolve().parent.parent


def module(path: str):
    spec = importlib.util.spec_from_file_location(Path(path).stem, ROOT / path)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def test_verl_data_and_reward_score_as_advbench_does(cache_dir, tmp_path):
    pd = pytest.importorskip("pandas")
    out = tmp_path / "data"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples/verl/make_data.py"),
            "task=countdown",
            "task.eval_size=8",
            "task.train_size=32",
            f"cache_dir={cache_dir}",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = pd.read_parquet(out / "eval.parquet")
    assert len(rows) == 8 and len(pd.read_parquet(out / "train.parquet")) == 32
    reward = module("examples/verl/reward.py")
    row = rows.iloc[0]
    assert row.data_source == "advbench/countdown" and row.prompt[0]["role"] == "user"
    task = reward._task("countdown")
    prompt = Prompt(
        row.prompt[0]["content"], row.reward_model["ground_truth"], json.loads(row.extra_info["entry"])
    )
    right = task.demonstration(prompt)  # the correct completion, as the warm start is taught it
    scored = reward.compute_score(row.data_source, right, row.reward_model["ground_truth"], row.extra_info)
    assert scored == {"score": 1.0, "acc": 1.0}
    wrong = reward.compute_score(row.data_source, "<answer>1 + 1</answer>", "", row.extra_info)
    assert wrong["acc"] == 0.0 and wrong["score"] < 1.0


def test_the_trl_script_refuses_a_sweep():
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples/trl/train.py"), "estimator=[grpo,rloo]"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "one run per launch; the overrides sweep 2" in done.stderr
