"""Rollout throughput, training step time, MFU and peak memory of each built-in scale, per engine.

For each scale (configs/model/<scale>.yaml, randomly initialised: speed does not depend on what the
weights know) this measures, through advbench's own code paths:

  rollout   generated tokens per second of each engine's ``generate`` (prompts x samples, up to
            --new-tokens each, stopping at EOS as in training: tokens counted are the responses'
            real tokens, so an engine that idles on finished rows pays for it). Engines:
              hf           transformers generate, dynamic KV cache (the baseline, no cache tricks)
              hf-static    generate over a pre-allocated static KV cache
              hf-compiled  static cache + compiled decode step (CUDA only)
              paged        transformers continuous batching
              vllm         vLLM, colocated (CUDA and the vllm extra only)
            an engine that cannot run here is listed with the reason.
  train     seconds per optimizer step of ``update_policy`` (forward, backward, AdamW) on
            --train-rows sequences of --train-seq tokens, under the scale's precision; model FLOPs
            utilisation = (6 N + 12 L d T) x tokens / time / the device's peak bf16 FLOP/s (dense),
            N the non-embedding parameters, T the sequence length (PaLM's accounting).
  memory    peak CUDA memory allocated during each measurement (the process's peak RSS on CPU).

Writes a Markdown table to stdout and, with --results, appends it to that file with the date, the
device and the command; --json keeps the raw numbers, --plot draws them (PNG).

    python benchmarks/gpu.py                                   # on a GPU: every scale and engine
    python benchmarks/gpu.py --device cpu --scales tiny --engines hf,hf-static,paged \\
        --prompts 8 --samples 4 --new-tokens 32 --train-rows 8 --train-seq 64      # a CPU smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from advbench.harness import losses, models, rollout, warmstart  # noqa: E402
from advbench.harness.config import load  # noqa: E402
from advbench.harness.loop import peak_memory_gib, update_policy  # noqa: E402
from advbench.harness.rollout import EngineUnavailable, Rollout, SamplingParams  # noqa: E402

SCALES = ("tiny", "10m", "50m", "200m")
ENGINES = ("hf", "hf-static", "hf-compiled", "paged", "vllm")
ALPHABET = "0123456789+-*/=() abcdefghijklmnopqrstuvwxyz.,?"
# Dense bf16 peak FLOP/s by device name (vendor data sheets); others: --peak-tflops.
PEAK_BF16 = {"H100 SXM": 989.4e12, "H100 80GB HBM3": 989.4e12, "H100 PCIe": 756.5e12, "H200": 989.4e12,
             "A100": 312e12, "L40S": 362e12}  # fmt: skip


def peak_flops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_BF16.items() if key in name), None)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def build_policy(scale: str, device: str, workdir: Path) -> tuple[models.Policy, object]:
    """A randomly initialised model of ``scale``, saved (vLLM loads from a path) and loaded back."""
    (cfg,) = load([f"model={scale}", f"model.device={device}"])
    tokenizer = models.fit_tokenizer([ALPHABET])
    torch.manual_seed(0)
    path = workdir / scale
    models.build_tiny(cfg.model, tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    model_cfg = dataclasses.replace(cfg.model, path=str(path))
    return warmstart.load_policy(model_cfg, task=None, cache_dir=workdir), cfg


def make_engine(name: str, policy: models.Policy) -> rollout.Engine:
    if name == "hf":
        return rollout.HFEngine(policy)
    if name == "hf-static":
        return rollout.HFEngine(policy, cache="static")
    if name == "hf-compiled":
        return rollout.HFEngine(policy, cache="static", compile=True)
    if name == "paged":
        return rollout.PagedEngine(policy)
    return rollout.VLLMEngine(policy)


def bench_rollout(engine, prompts: list[str], samples: int, new_tokens: int, repeats: int, device) -> dict:
    sampling = SamplingParams(max_new_tokens=new_tokens)
    torch.manual_seed(0)
    engine.generate(prompts, samples, sampling)  # warm-up: compilation, CUDA graphs, allocator
    reset_peak(device)
    tokens, seconds = 0, 0.0
    for repeat in range(repeats):
        torch.manual_seed(1 + repeat)
        synchronize(device)
        start = time.perf_counter()
        out = engine.generate(prompts, samples, sampling)
        synchronize(device)
        seconds += time.perf_counter() - start
        tokens += int(out.response_mask.sum())
    return {
        "tokens_per_s": tokens / seconds,
        "mean_length": tokens / repeats / (len(prompts) * samples),
        "peak_gib": peak_memory_gib(device),
    }


def synthetic_batch(policy: models.Policy, rows: int, seq: int, generator: torch.Generator) -> Rollout:
    """``rows`` sequences of ``seq`` tokens: a quarter prompt, the rest response, all real tokens."""
    prompt_len, response_len = seq // 4, seq - seq // 4
    vocab = policy.model.config.vocab_size
    device = policy.device

    def tokens(width: int) -> torch.Tensor:
        return torch.randint(2, vocab, (rows, width), generator=generator).to(device)  # no pad, no EOS

    return Rollout(
        prompt_ids=tokens(prompt_len),
        prompt_mask=torch.ones((rows, prompt_len), dtype=torch.long, device=device),
        response_ids=tokens(response_len),
        response_mask=torch.ones((rows, response_len), dtype=torch.bool, device=device),
        logprobs=torch.full((rows, response_len), -3.0, device=device),
        entropy=torch.zeros((rows, response_len), device=device),
        texts=[""] * rows,
        truncated=torch.zeros(rows, dtype=torch.bool, device=device),
    )


def bench_train(
    policy, cfg, rows: int, seq: int, micro_tokens: int, checkpointing: bool, repeats: int
) -> dict:
    device = policy.device
    generator = torch.Generator().manual_seed(0)
    batch = synthetic_batch(policy, rows, seq, generator)
    advantages = torch.randn(rows, generator=generator).to(device)
    cfg = dataclasses.replace(
        cfg,
        trainer=dataclasses.replace(
            cfg.trainer, micro_batch_tokens=micro_tokens, gradient_checkpointing=checkpointing
        ),
        rollout=dataclasses.replace(cfg.rollout, max_new_tokens=batch.response_ids.shape[1]),
        geometry=dataclasses.replace(cfg.geometry, every=0),
    )
    if checkpointing:
        models.enable_activation_checkpointing(policy.model)
    loss = losses.get("ppo_clip")
    params = loss.params()
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=1e-6)
    update_policy(policy, optimizer, batch, advantages, loss, params, cfg, step=1)  # warm-up
    reset_peak(device)
    synchronize(device)
    start = time.perf_counter()
    for step in range(repeats):
        update_policy(policy, optimizer, batch, advantages, loss, params, cfg, step=2 + step)
    synchronize(device)
    seconds = (time.perf_counter() - start) / repeats
    if checkpointing:
        policy.model.gradient_checkpointing_disable()
    config = policy.model.config
    embedding = policy.model.get_input_embeddings().weight.numel()
    non_embedding = sum(p.numel() for p in policy.model.parameters()) - embedding
    flops_per_token = 6 * non_embedding + 12 * config.num_hidden_layers * config.hidden_size * seq
    return {
        "step_s": seconds,
        "tokens_per_s": rows * seq / seconds,
        "model_flops_per_s": flops_per_token * rows * seq / seconds,
        "peak_gib": peak_memory_gib(device),
    }


def run(args: argparse.Namespace) -> list[dict]:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device (use --device cpu for a smoke run)")
    peak = peak_flops(device, args.peak_tflops)
    generator = torch.Generator().manual_seed(0)
    prompts = [
        "".join(ALPHABET[i] for i in torch.randint(len(ALPHABET), (args.prompt_chars,), generator=generator))
        for _ in range(args.prompts)
    ]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for scale in args.scales:
            policy, cfg = build_policy(scale, args.device, Path(tmp))
            params = sum(p.numel() for p in policy.model.parameters())
            row = {"scale": scale, "params": params, "precision": f"{cfg.model.dtype}+{cfg.model.autocast}"}
            for name in args.engines:
                try:
                    engine = make_engine(name, policy)
                    row[name] = bench_rollout(
                        engine, prompts, args.samples, args.new_tokens, args.repeats, device
                    )
                except EngineUnavailable as exc:
                    row[name] = {"unavailable": str(exc).split(": ", 1)[-1]}
                except Exception as exc:  # one engine's failure is a result, not the end
                    row[name] = {"unavailable": f"failed, {type(exc).__name__}: {exc}"[:300]}
                print(f"{scale} {name}: {row[name]}", file=sys.stderr)
            row["train"] = bench_train(
                policy,
                cfg,
                args.train_rows,
                args.train_seq,
                args.micro_batch_tokens,
                args.checkpointing,
                args.repeats,
            )
            if peak:
                row["train"]["mfu"] = row["train"]["model_flops_per_s"] / peak
            print(f"{scale} train: {row['train']}", file=sys.stderr)
            results.append(row)
            if args.json:  # after every scale: a run cut short by a lease still leaves its numbers
                write_json(args.json, device, args.command, results)
            del policy
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return results


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"


def write_json(path: Path, device: torch.device, command: str, results: list[dict]) -> None:
    payload = {
        "device": device_name(device),
        "torch": torch.__version__,
        "command": command,
        "results": results,
    }
    path.write_text(json.dumps(payload, indent=1))


def table(results: list[dict], args: argparse.Namespace) -> str:
    engines = list(args.engines)
    header = ["scale", "params", "precision", *[f"{e} tok/s" for e in engines]]
    if "hf" in engines:
        header.append("best / hf")
    header += ["train step s", "train tok/s", "MFU", "peak GiB (rollout max / train)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in results:
        speeds = {e: row[e].get("tokens_per_s") for e in engines}
        cells = [row["scale"], f"{row['params'] / 1e6:.1f}M", row["precision"]]
        cells += [f"{speeds[e]:,.0f}" if speeds[e] else "n/a" for e in engines]
        if "hf" in engines:
            best = max(v for v in speeds.values() if v)
            cells.append(f"{best / speeds['hf']:.2f}x" if speeds["hf"] else "n/a")
        train = row["train"]
        rollout_peak = max((row[e].get("peak_gib", 0.0) for e in engines), default=0.0)
        cells += [
            f"{train['step_s']:.3f}",
            f"{train['tokens_per_s']:,.0f}",
            f"{train['mfu']:.1%}" if "mfu" in train else "n/a",
            f"{rollout_peak:.2f} / {train['peak_gib']:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    unavailable = sorted(
        {f"{e}: {row[e]['unavailable']}" for row in results for e in engines if "unavailable" in row[e]}
    )
    if unavailable:
        lines += ["", "Not measured here: " + "; ".join(unavailable) + "."]
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--scales", type=lambda s: s.split(","), default=list(SCALES))
    parser.add_argument("--engines", type=lambda s: s.split(","), default=list(ENGINES))
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--prompt-chars", type=int, default=32)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--train-rows", type=int, default=64)
    parser.add_argument("--train-seq", type=int, default=512)
    parser.add_argument("--micro-batch-tokens", type=int, default=16384)
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak bf16 TFLOP/s")
    parser.add_argument("--results", type=Path, default=None, help="append the table to this Markdown file")
    parser.add_argument("--json", type=Path, default=None, help="write the raw numbers here")
    parser.add_argument("--plot", type=Path, default=None, help="draw throughput and MFU into this PNG")
    args = parser.parse_args(argv)
    args.command = "python benchmarks/gpu.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    unknown = sorted(set(args.scales) - set(SCALES)) + sorted(set(args.engines) - set(ENGINES))
    if unknown:
        parser.error(f"unknown scale or engine {', '.join(unknown)}; scales: {SCALES}, engines: {ENGINES}")
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse(argv)
    results = run(args)
    text = table(results, args)
    print(text)
    device = torch.device(args.device)
    name = device_name(device)
    if args.results:
        with args.results.open("a") as out:
            out.write(
                f"\n### GPU path benchmark, {datetime.date.today().isoformat()}, {name}\n\n"
                f"`{args.command}` (torch {torch.__version__})\n\n{text}\n"
            )
    if args.plot:
        from advbench.harness.plots import plot_gpu_benchmark

        plot_gpu_benchmark(results, args.engines, args.plot)
    if args.json:
        write_json(args.json, device, args.command, results)
    return results


if __name__ == "__main__":
    main()
