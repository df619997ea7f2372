"""Peak memory of the hf engine's log-prob recording: per step (what HFEngine does) vs keeping every
step's logits (generate's ``output_logits``, what it did before), on a wide-vocabulary model.

Each variant runs in its own process (peak RSS cannot be reset), with glibc's mmap threshold fixed
at 64 KiB: by default glibc raises it after the first large free and then keeps freed step-sized
blocks in the heap, which shows as RSS that nothing holds. A randomly initialised 2-layer
Qwen2 with a 32,768-token vocabulary generates 128 completions of exactly 128 tokens on the CPU.
Both variants must record the same log-probs; the script checks it and prints the two peaks.

    python benchmarks/rollout_memory.py
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
VOCAB, ROWS, NEW_TOKENS = 32768, 128, 128


def measure(variant: str) -> dict:
    sys.path.insert(0, str(ROOT))
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from advbench.harness.rollout import _StepRecorder, logprobs_and_entropy

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, eos_token_id=None, pad_token_id=0,
    )  # fmt: skip
    model = Qwen2ForCausalLM(config).eval()
    prompts = torch.randint(1, VOCAB, (ROWS, 8))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    args = dict(
        input_ids=prompts, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=True, top_k=0
    )
    with torch.no_grad():
        if variant == "output_logits":
            out = model.generate(**args, return_dict_in_generate=True, output_logits=True)
            response = out.sequences[:, 8:]
            logprobs, _ = logprobs_and_entropy(torch.stack(out.logits, dim=1), response, 1.0)
        elif variant == "nothing":
            response = model.generate(**args)[:, 8:]
            logprobs = torch.zeros(1)
        else:
            recorder = _StepRecorder(1.0)
            response = model.generate(**args, logits_processor=[recorder])[:, 8:]
            logprobs, _ = recorder.finish(response)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"variant": variant, "peak_gib": peak / 2**20, "growth_gib": (peak - before) / 2**20,
            "logprob_sum": float(logprobs.double().sum())}  # fmt: skip


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--variant":
        torch.manual_seed(0)
        print(json.dumps(measure(sys.argv[2])))
        return
    results = []
    for variant in ("output_logits", "per_step", "nothing"):  # nothing: generate alone, the floor
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        command = [sys.executable, __file__, "--variant", variant]
        out = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    same = abs(results[0]["logprob_sum"] - results[1]["logprob_sum"]) < 1e-6 * abs(results[0]["logprob_sum"])
    print(f"{ROWS} completions x {NEW_TOKENS} tokens, vocabulary {VOCAB}; same log-probs: {same}")
    for r in results:
        print(
            f"  {r['variant']:>13}: peak RSS {r['peak_gib']:.2f} GiB "
            f"(+{r['growth_gib']:.2f} GiB during generate)"
        )


if __name__ == "__main__":
    main()
