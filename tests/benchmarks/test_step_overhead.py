"""How much of a training step is the harness's own work, at the default batch size (P=32, G=8).

Times, on one real batch of the warm-started tiny model:
  core      engine.generate (rollout) and update_policy (forward, backward, optimizer step)
  overhead  everything else a step does: scoring with the task's verifier, building the
            AdvantageBatch and running the estimator, assembling and logging step metrics to MLflow

Run:  pytest tests/benchmarks --benchmark-enable --benchmark-json=bench.json
(in the normal test run benchmarks are disabled and each body runs once, as a smoke test).
The share overhead / (core + overhead) is computed from the means in docs/results/performance.md.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from advbench import estimators
from advbench.harness import losses, rollout, tasks, warmstart
from advbench.harness.config import load
from advbench.harness.loop import update_policy
from advbench.harness.tracking import Tracker


def benchmarking(config: pytest.Config) -> bool:
    """Whether pytest-benchmark times (--benchmark-enable) or runs each body once (the default here)."""
    return config.getoption("benchmark_enable") or not config.getoption("benchmark_disable")


@pytest.fixture(scope="module")
def setup(request, tmp_path_factory, cache_dir):
    tmp = tmp_path_factory.mktemp("bench")
    # Timed: a warm start as long as a real run's. Run once as a smoke test (the test suite): the
    # harness tests' shorter one, already in the cache, instead of 50 s building another.
    warm = ["model.warmstart.steps=200"] if benchmarking(request.config) else [
        "model.warmstart.steps=60", "task.train_size=400"
    ]  # fmt: skip
    (cfg,) = load(
        [
            f"cache_dir={cache_dir}",
            f"tracking.uri=sqlite:///{tmp}/mlflow.db",
            f"tracking.artifact_root={tmp}/artifacts",
            *warm,
        ]
    )
    task = tasks.build(cfg.task, cfg.cache_dir)
    policy = warmstart.load_policy(cfg.model, task, cfg.cache_dir)
    engine = rollout.HFEngine(policy)
    prompts = task.prompts("train", cfg.trainer.prompts_per_step, seed=0)
    sampling = rollout.SamplingParams(cfg.rollout.temperature, cfg.rollout.top_p, cfg.rollout.max_new_tokens)
    torch.manual_seed(0)
    batch = engine.generate([p.text for p in prompts], cfg.trainer.group_size, sampling)
    tracker = Tracker(cfg.tracking)
    child = tracker.start_child(tracker.start_parent("bench"), cfg)
    return cfg, task, policy, engine, prompts, sampling, batch, child


@pytest.mark.benchmark(group="step")
def test_core_generate(benchmark, setup):
    cfg, task, policy, engine, prompts, sampling, batch, child = setup
    benchmark(engine.generate, [p.text for p in prompts], cfg.trainer.group_size, sampling)


@pytest.mark.benchmark(group="eval-generate")
@pytest.mark.parametrize("share_prompts", [False, True], ids=["prefill-per-row", "prefill-per-prompt"])
def test_eval_generate(benchmark, setup, share_prompts):
    """One eval's sampling (the default's 256 prompts x 8 samples): each prompt's prefill once and
    its cache repeated for its samples (HFEngine's default) against a prefill for every row."""
    cfg, task, policy, engine, prompts, sampling, batch, child = setup
    texts = [p.text for p in task.prompts("eval", cfg.task.eval_size, seed=0)]
    engine = rollout.HFEngine(policy, share_prompts=share_prompts)
    out = benchmark.pedantic(engine.generate, args=(texts, cfg.eval.n, sampling), rounds=3)
    assert out.response_ids.shape[0] == len(texts) * cfg.eval.n == 2048


@pytest.mark.benchmark(group="step")
def test_core_update(benchmark, setup):
    cfg, task, policy, engine, prompts, sampling, batch, child = setup
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=1e-12)  # ~no change to the weights
    advantages = torch.randn(batch.response_ids.shape[0], generator=torch.Generator().manual_seed(0))
    loss = losses.get(cfg.loss["name"])
    params = loss.params(**{k: v for k, v in cfg.loss.items() if k != "name"})
    benchmark(update_policy, policy, optimizer, batch, advantages, loss, params, cfg, 1)


@pytest.mark.benchmark(group="step")
def test_overhead_scoring_estimator_logging(benchmark, setup):
    cfg, task, policy, engine, prompts, sampling, batch, child = setup
    P, G = cfg.trainer.prompts_per_step, cfg.trainer.group_size
    estimator = estimators.get(cfg.estimator)
    step = iter(range(1, 10**9))

    def overhead():
        scores = [task.score(prompts[i // G], text) for i, text in enumerate(batch.texts)]
        rewards = torch.tensor([s.reward for s in scores]).view(P, G)
        advantages = estimator(
            estimators.AdvantageBatch(
                rewards, lengths=batch.lengths.view(P, G), response_mask=batch.response_mask.view(P, G, -1)
            ),
            estimators.TrainingSignals(step=1, total_steps=cfg.trainer.steps),
        )
        metrics = {f"train/m{i}": float(advantages.abs().mean()) for i in range(30)}  # ~the loop's count
        child.log_metrics(metrics, next(step))  # buffered; flushed every 1000 metrics, as in the loop

    benchmark(overhead)


@pytest.mark.benchmark(group="config-error")
def test_bad_config_exit_latency(benchmark):
    """Wall time of `advbench run estimator=nope` in a fresh interpreter (no torch: names are read
    from the registries' files). Target: under 1 s."""
    code = "import sys; from advbench.harness.cli import main; sys.exit(main(['run', 'estimator=nope']))"

    def run():
        return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60).returncode

    assert benchmark.pedantic(run, rounds=5, iterations=1) == 2


@pytest.fixture(scope="module")
def probed(setup):
    """The default geometry probe with a real gradient of the default batch on its matrices."""
    from advbench.harness.geometry import GeometryProbe

    cfg, task, policy, engine, prompts, sampling, batch, child = setup
    geo = cfg.geometry
    probe = GeometryProbe(policy.model, geo.modules, geo.every, geo.top_k, geo.zero_tol)
    loss = losses.get(cfg.loss["name"])
    params = loss.params(**{k: v for k, v in cfg.loss.items() if k != "name"})
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=1e-12)
    advantages = torch.randn(batch.response_ids.shape[0], generator=torch.Generator().manual_seed(1))
    update_policy(policy, optimizer, batch, advantages, loss, params, cfg, 1)  # leaves .grad in place
    probe.observe(1)  # a previous gradient, for the cosine
    return probe, geo.every


@pytest.mark.benchmark(group="step")
def test_geometry_svd_step(benchmark, probed):
    probe, every = probed
    benchmark(probe.observe, every)  # a step that runs the SVD metrics


@pytest.mark.benchmark(group="step")
def test_geometry_cosine_step(benchmark, probed):
    probe, every = probed
    benchmark(probe.observe, every + 1)  # the other steps: cosine only
