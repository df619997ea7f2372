"""Evaluation on held-out prompts: n samples each -> per-prompt correct counts -> pass@k, and the
run summary (peak pass@1, time-to-peak, final pass@k) from the sequence of evals.

Eval sampling draws from its own seeded RNG stream (forked from torch's), so an eval neither
disturbs the training randomness nor differs between runs that reach the same weights.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from advbench.harness import stats
from advbench.harness.config import EvalConfig
from advbench.harness.metrics import (
    RunSummary,
    distinct_correct_answers,
    distinct_n,
    k_values,
    mean_pairwise_similarity,
    pass_at_k_area,
    pass_at_k_curve,
    rise_back,
    scalerl_fit,
    time_to_peak,
)
from advbench.harness.rollout import Engine, Rollout, SamplingParams
from advbench.harness.tasks import Prompt, Task


@dataclass
class EvalResult:
    step: int  # training steps completed
    n: int
    correct: list[int]  # c_i: correct samples of prompt i, for recomputing any pass@k later
    pass_at_k: dict[int, float]
    pass_at_1_se: float  # standard error of pass@1 over prompts
    greedy_pass_at_1: float | None
    entropy: float  # mean token entropy of the eval samples
    response_length: float
    verifier_errors: int
    rejected: int = 0  # code samples that hung, crashed or hit a sandbox limit
    samples: list[dict] = field(repr=False, default_factory=list)  # what the model wrote
    diversity: dict[str, float] = field(default_factory=dict)  # means over prompts, see diversity()

    def metrics(self) -> dict[str, float]:
        out = {f"eval/pass_at_{k}": v for k, v in self.pass_at_k.items()}
        out.update(
            {
                "eval/pass_at_1_se": self.pass_at_1_se,
                "eval/entropy": self.entropy,
                "eval/response_length": self.response_length,
                "eval/verifier_errors": float(self.verifier_errors),
                "eval/rejected_samples": float(self.rejected),
            }
        )
        if self.greedy_pass_at_1 is not None:
            out["eval/greedy_pass_at_1"] = self.greedy_pass_at_1
        out.update({f"eval/{key}": value for key, value in self.diversity.items()})
        return out


def diversity(
    n: int, token_ids: list[list[int]], texts: list[str], answers: list[str], correct: list[bool]
) -> dict[str, float]:
    """Diversity of each prompt's n samples (rows i*n .. i*n+n-1), averaged over prompts.

    distinct_1..4 over response tokens, distinct_correct_answers, edit_similarity (mean pairwise
    normalised Levenshtein similarity of the texts; undefined for n = 1 and then left out).
    """
    groups = range(0, len(texts), n)
    out = {
        f"distinct_{k}": float(np.mean([distinct_n(token_ids[i : i + n], k) for i in groups]))
        for k in (1, 2, 3, 4)
    }
    out["distinct_correct_answers"] = float(
        np.mean([distinct_correct_answers(answers[i : i + n], correct[i : i + n]) for i in groups])
    )
    similarities = [s for i in groups if (s := mean_pairwise_similarity(texts[i : i + n])) is not None]
    if similarities:
        out["edit_similarity"] = float(np.mean(similarities))
    return out


def evaluate(
    engine: Engine,
    task: Task,
    prompts: Sequence[Prompt],
    cfg: EvalConfig,
    max_new_tokens: int,
    step: int,
    seed: int,
) -> EvalResult:
    """Sample ``cfg.n`` completions per prompt (and one greedy), score them, and summarise."""
    texts = [p.text for p in prompts]
    device = engine.policy.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        rollout = engine.generate(texts, cfg.n, eval_sampling(cfg, max_new_tokens))
    greedy = None
    if cfg.greedy:
        greedy = engine.generate(texts, 1, SamplingParams(max_new_tokens=max_new_tokens, greedy=True))
    return score_eval(task, prompts, cfg, step, rollout, greedy)


def eval_sampling(cfg: EvalConfig, max_new_tokens: int) -> SamplingParams:
    return SamplingParams(cfg.temperature, cfg.top_p, max_new_tokens)


def score_eval(
    task: Task,
    prompts: Sequence[Prompt],
    cfg: EvalConfig,
    step: int,
    rollout: Rollout,
    greedy_rollout: Rollout | None,
) -> EvalResult:
    """An eval's samples (``cfg.n`` per prompt, and the greedy ones when ``cfg.greedy``) scored and
    summarised."""
    scores = task.score_batch([prompts[i // cfg.n] for i in range(len(rollout.texts))], rollout.texts)
    correct = np.array([s.correct for s in scores]).reshape(len(prompts), cfg.n).sum(1)
    greedy, greedy_scores = None, []
    if greedy_rollout is not None:
        greedy_scores = task.score_batch(prompts, greedy_rollout.texts)
        greedy = float(np.mean([s.correct for s in greedy_scores]))
    per_prompt = correct / cfg.n
    samples = [
        {
            "prompt": prompts[i // cfg.n].text,
            "completion": text,
            "answer": prompts[i // cfg.n].answer,
            "extracted": task.extract_answer(text),
            "reward": s.reward,
            "correct": s.correct,
        }
        for i, (text, s) in enumerate(zip(rollout.texts, scores, strict=True))
    ]
    mask = rollout.response_mask
    curve = pass_at_k_curve(cfg.n, correct.tolist())
    token_ids = [row[m].tolist() for row, m in zip(rollout.response_ids, mask, strict=True)]
    answers = [task.extract_answer(text) or "" for text in rollout.texts]
    spread = diversity(cfg.n, token_ids, rollout.texts, answers, [s.correct for s in scores])
    spread["pass_at_k_area"] = pass_at_k_area(curve)
    return EvalResult(
        step=step,
        n=cfg.n,
        correct=correct.tolist(),
        pass_at_k=curve,
        pass_at_1_se=float(per_prompt.std(ddof=1) / np.sqrt(len(prompts))) if len(prompts) > 1 else 0.0,
        greedy_pass_at_1=greedy,
        entropy=float(rollout.entropy[mask].mean()) if mask.any() else 0.0,
        response_length=float(mask.sum(-1).float().mean()),
        verifier_errors=sum(s.error for s in [*scores, *greedy_scores]),
        rejected=sum(s.rejected for s in [*scores, *greedy_scores]),
        samples=samples,
        diversity=spread,
    )


@dataclass
class EvalPoint:
    """Where training stood at an eval: the time axes of time-to-peak."""

    step: int
    rollouts: int  # training completions generated so far
    tokens: int  # training tokens generated so far
    seconds: float  # wall-clock seconds of training so far (evals excluded)


# the artifact every run's evals leave: c_i per eval (docs/concepts/time-to-peak.md)
CORRECT_COUNTS = "eval_correct_counts.json"


def correct_counts(results: Sequence[EvalResult], prompts: Sequence[Prompt], n: int) -> str:
    """The per-prompt correct counts of every eval so far, as the ``CORRECT_COUNTS`` artifact holds
    them: any pass@k, area or bootstrap can be recomputed from it without sampling again."""
    counts = {
        "n": n,
        "prompts": [p.text for p in prompts],
        "correct": {str(r.step): r.correct for r in results},
    }
    return json.dumps(counts)


SCALERL = ("scalerl_asymptote", "scalerl_c_mid_rollouts", "scalerl_efficiency")  # RunSummary's fields


def summarize(results: Sequence[EvalResult], points: Sequence[EvalPoint], cfg: EvalConfig) -> RunSummary:
    """The time-to-peak protocol (docs/concepts/time-to-peak.md) over the evals' per-prompt counts,
    every time figure in steps, rollouts, tokens and seconds; ScaleRL's fit for a curve still
    rising; final pass@k."""
    ttp = time_to_peak(
        [r.correct for r in results],
        results[0].n,
        window=cfg.smoothing_window,
        delta_abs=cfg.peak_delta_abs,
        z=cfg.peak_z,
        level=stats.LEVEL,
        back=rise_back(cfg.every),
    )

    def times(name: str, index: int | None) -> dict[str, float | None]:
        at = None if index is None else points[index]
        return {
            f"{name}_{unit}": None if at is None else float(getattr(at, unit))
            for unit in ("step", "rollouts", "tokens", "seconds")
        }

    fit = None
    if ttp.still_rising:
        fit = scalerl_fit([p.rollouts for p in points], [r.pass_at_k[1] for r in results])
    final = results[-1]
    return RunSummary(
        initial_pass_at_1=results[0].pass_at_k[1],
        peak_pass_at_1=ttp.peak,
        peak_tolerance=ttp.tolerance,
        gain=ttp.gain,
        gain_detected=ttp.detected,
        still_rising=ttp.still_rising,
        final_entropy=final.entropy,
        final_pass_at_k={k: final.pass_at_k[k] for k in k_values(final.n)},
        **times("time_to_peak", ttp.index),
        **times("time_to_90", ttp.index_90),
        **dict(zip(SCALERL, fit or (None,) * 3, strict=True)),
        final_greedy_pass_at_1=final.greedy_pass_at_1,
        final_diversity=dict(final.diversity),
    )


def logged_counts(client, run_id: str) -> tuple[list[int], list[list[int]], int]:
    """(eval steps, per-prompt correct counts per eval, samples per prompt) as a run logged them in
    its ``CORRECT_COUNTS`` artifact (an error when it logged none)."""
    with tempfile.TemporaryDirectory() as tmp:
        data = json.loads(Path(client.download_artifacts(run_id, CORRECT_COUNTS, tmp)).read_text())
    steps = sorted(int(step) for step in data["correct"])
    return steps, [data["correct"][str(step)] for step in steps], int(data["n"])


def retimed(
    summary: RunSummary, steps: list[int], correct: list[list[int]], n: int, params: dict[str, str]
) -> RunSummary:
    """A stored run's summary with the time-to-peak protocol applied again, as the code defines it
    now, to the run's logged per-prompt counts (``logged_counts``) and its eval settings
    (``params``: the run's logged config): peak, gain, its detection, the steps of the peak and of
    90% of the gain, and the still-rising flag, so a page re-rendered from a store reads every run
    with one protocol. A time in rollouts, tokens or seconds whose step moved cannot be recomputed
    from the counts and is dropped (None)."""
    every = int(params.get("eval.every", steps[1] - steps[0] if len(steps) > 1 else 1))
    ttp = time_to_peak(
        correct,
        n,
        window=int(params.get("eval.smoothing_window", 3)),
        delta_abs=float(params.get("eval.peak_delta_abs", 0.02)),
        z=float(params.get("eval.peak_z", 1.0)),
        level=stats.LEVEL,
        back=rise_back(every),
    )
    out = dataclasses.replace(
        summary,
        peak_pass_at_1=ttp.peak,
        peak_tolerance=ttp.tolerance,
        gain=ttp.gain,
        gain_detected=ttp.detected,
        still_rising=ttp.still_rising,
    )
    for name, index in (("time_to_peak", ttp.index), ("time_to_90", ttp.index_90)):
        step = None if index is None else float(steps[index])
        if step != getattr(summary, f"{name}_step"):
            setattr(out, f"{name}_step", step)
            for unit in ("rollouts", "tokens", "seconds"):
                setattr(out, f"{name}_{unit}", None)
    return out
