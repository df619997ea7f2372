"""benchmarks/gpu.py runs end to end on the CPU (the tiny scale, small sizes): its table, its raw
numbers and its record in a results file. The numbers themselves are the device's business."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"


@pytest.fixture(scope="module")
def gpu_script():
    spec = importlib.util.spec_from_file_location("gpu_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU smoke run of the script")
def test_the_gpu_benchmark_script_measures_the_tiny_scale_on_the_cpu(gpu_script, tmp_path):
    results_file, raw = tmp_path / "RESULTS.md", tmp_path / "gpu.json"
    results_file.write_text("# results\n")
    # fmt: off
    args = ["--device", "cpu", "--scales", "tiny", "--engines", "hf,hf-static,hf-compiled,paged,vllm",
            "--prompts", "4", "--samples", "2", "--new-tokens", "8", "--repeats", "1",
            "--train-rows", "4", "--train-seq", "32", "--micro-batch-tokens", "64",
            "--results", str(results_file), "--json", str(raw), "--plot", str(tmp_path / "gpu.png")]
    # fmt: on
    (row,) = gpu_script.main(args)
    for engine in ("hf", "hf-static", "paged"):
        assert row[engine]["tokens_per_s"] > 0 and 0 < row[engine]["mean_length"] <= 8
    assert "needs CUDA" in row["hf-compiled"]["unavailable"] and "needs CUDA" in row["vllm"]["unavailable"]
    assert row["train"]["step_s"] > 0 and "mfu" not in row["train"]  # no peak FLOP/s known for a CPU
    text = results_file.read_text()
    assert text.startswith("# results\n") and "### GPU path benchmark" in text and "CPU (" in text
    assert "| tiny | 0.4M | float32+none |" in text and "Not measured here: hf-compiled" in text
    assert json.loads(raw.read_text())["results"][0]["scale"] == "tiny"
    assert (tmp_path / "gpu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_scales_and_engines_are_refused(gpu_script):
    with pytest.raises(SystemExit):
        gpu_script.parse(["--scales", "tiny,huge"])
    with pytest.raises(SystemExit):
        gpu_script.parse(["--engines", "sglang"])


def test_mfu_uses_the_device_peak_or_the_one_given(gpu_script):
    assert gpu_script.peak_flops(torch.device("cpu"), None) is None
    assert gpu_script.peak_flops(torch.device("cpu"), 100.0) == 100e12
