"""Packs (harness/pack.py): N runs as one batched model, each replica a run of its own.

Every test here can fail on a real defect: a replica that sees another's rows or weights, a
clipping or Adam step shared across replicas, a sampling stream that depends on the pack's
composition, a NaN that leaks, a resume that does not continue where the pack stopped.
"""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch

from advbench.harness import pack as packing
from advbench.harness.config import config_hash, identity, load
from advbench.harness.loop import machine_dependent
from advbench.harness.pack import (
    ReplicaAdamW,
    clip_per_replica,
    load_replica,
    pack_models,
    replica_state,
    replica_window,
    train_pack,
)
from advbench.harness.rollout import HFEngine, SamplingParams, token_logprobs
from advbench.harness.suites import as_packed, pack_key
from tests.conftest import FAST


def _perturbed(model: torch.nn.Module, seed: int, scale: float = 0.05) -> torch.nn.Module:
    """A copy of ``model`` with its weights moved at random: N different replicas."""
    out = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))
    return out


@pytest.fixture(scope="module")
def solos(setup):
    _, _, policy, _, _ = setup
    return [_perturbed(policy.model, seed) for seed in range(3)]


def test_replica_logits_equal_a_solo_model_with_its_weights(setup, solos):
    _, _, policy, _, batch = setup
    packed = pack_models(solos)
    rows = batch.response_ids.shape[0]
    stacked = type(batch)(
        **{f: torch.cat([getattr(batch, f)] * 3) if f != "texts" else batch.texts * 3 for f in vars(batch)}
    )
    with torch.no_grad():
        together = token_logprobs(packed, stacked, torch.arange(3 * rows), 1.0)[0]
        for r, solo in enumerate(solos):
            alone = token_logprobs(solo, batch, torch.arange(rows), 1.0)[0]
            torch.testing.assert_close(together[r * rows : (r + 1) * rows], alone, atol=1e-5, rtol=1e-5)
        # a window of replicas 1 and 2 computes for them alone, rows in two blocks
        with replica_window(packed, slice(1, 3)):
            window = token_logprobs(packed, stacked, torch.arange(2 * rows), 1.0)[0]
        torch.testing.assert_close(window, together[rows:], atol=1e-5, rtol=1e-5)
        assert torch.equal(token_logprobs(packed, stacked, torch.arange(3 * rows), 1.0)[0], together)
    # and the weights come back out as a solo model's state_dict
    state = replica_state(packed, 1)
    for name, tensor in solos[1].state_dict().items():
        torch.testing.assert_close(state[name], tensor)


def test_one_packed_update_equals_n_solo_updates(setup, solos):
    """Different learning rates, weight decays and clipping thresholds per replica: after one
    backward of the summed losses, per-replica clipping and one ReplicaAdamW step, every replica's
    weights equal a solo AdamW step with clip_grad_norm_ on its own loss."""
    _, _, _, _, batch = setup
    rows = batch.response_ids.shape[0]
    lrs, decays, norms = [1e-3, 3e-4, 1e-2], [0.0, 0.1, 0.01], [1.0, 0.05, 10.0]

    def loss_of(model, stacked, count):
        logprobs = token_logprobs(model, stacked, torch.arange(count), 1.0)[0]
        weights = torch.linspace(-1.0, 1.0, logprobs.shape[0]).unsqueeze(-1)
        return logprobs, weights

    solo_after = []
    for r, solo in enumerate(solos):
        model = copy.deepcopy(solo)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lrs[r], weight_decay=decays[r])
        for _ in range(2):  # two steps: the moments and bias corrections matter on the second
            optimizer.zero_grad()
            logprobs, weights = loss_of(model, batch, rows)
            (-(weights * logprobs * batch.response_mask).sum() / (r + 1)).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), norms[r])
            optimizer.step()
        solo_after.append(model.state_dict())

    packed = pack_models(solos)
    stacked = type(batch)(
        **{f: torch.cat([getattr(batch, f)] * 3) if f != "texts" else batch.texts * 3 for f in vars(batch)}
    )
    optimizer = ReplicaAdamW(list(packed.parameters()), 3)
    for _ in range(2):
        optimizer.zero_grad()
        logprobs = token_logprobs(packed, stacked, torch.arange(3 * rows), 1.0)[0]
        total = 0.0
        for r in range(3):
            mine = logprobs[r * rows : (r + 1) * rows]
            weights = torch.linspace(-1.0, 1.0, rows).unsqueeze(-1)
            total = total + (-(weights * mine * batch.response_mask).sum() / (r + 1))
        total.backward()
        clip_per_replica(optimizer.params, torch.tensor(norms))
        optimizer.step(
            torch.tensor(lrs, dtype=torch.float64),
            torch.tensor(decays, dtype=torch.float64),
            torch.ones(3, dtype=torch.bool),
        )
    for r in range(3):
        state = replica_state(packed, r)
        for name, tensor in solo_after[r].items():
            torch.testing.assert_close(state[name], tensor, atol=1e-5, rtol=1e-5, msg=f"replica {r} {name}")


def test_clipping_and_adam_of_one_replica_do_not_touch_another():
    """A huge gradient in replica 0 is clipped by its own norm (replica 1's scale stays 1); a NaN
    gradient in a stopped replica leaves the others' step, weights and moments what they would be."""
    weight = torch.nn.Parameter(torch.zeros(3, 4, 2))
    weight.grad = torch.stack([torch.full((4, 2), 1e6), torch.full((4, 2), 0.01), torch.full((4, 2), 0.02)])
    norms = clip_per_replica([weight], torch.tensor([1.0, 1.0, 1.0]))
    assert norms[0] > 1e6 and weight.grad[0].norm() == pytest.approx(1.0, rel=1e-5)
    assert torch.equal(weight.grad[1], torch.full((4, 2), 0.01))  # untouched: below its own threshold

    def stepped(poison: bool) -> tuple[torch.Tensor, torch.Tensor]:
        p = torch.nn.Parameter(torch.ones(3, 5))
        opt = ReplicaAdamW([p], 3)
        for i in range(3):
            p.grad = torch.stack([torch.full((5,), 0.5 + i), torch.full((5,), -1.0), torch.full((5,), 2.0)])
            active = torch.ones(3, dtype=torch.bool)
            if poison:
                p.grad[1] = float("nan")
                active[1] = False
                p.grad[1] = 0.0  # what update_pack does to a stopped replica's gradient
            opt.step(
                torch.tensor([1e-2, 1e-2, 1e-3], dtype=torch.float64),
                torch.zeros(3, dtype=torch.float64),
                active,
            )
        return p.detach().clone(), opt.exp_avg[0].clone()

    clean, clean_avg = stepped(False)
    poisoned, poisoned_avg = stepped(True)
    for r in (0, 2):
        assert torch.equal(clean[r], poisoned[r]) and torch.equal(clean_avg[r], poisoned_avg[r])
    assert torch.equal(poisoned[1], torch.ones(5))  # the stopped replica did not move


def test_a_replicas_rollout_does_not_depend_on_its_packs_composition(setup, solos):
    """Replica 0 (the same weights, prompts and seed) in a pack with two others and in a pack with
    one different other: the same tokens, token for token, whatever torch's global stream."""
    _, _, policy, prompts, _ = setup

    def rollout(models, prompt_sets, seeds):
        packed = pack_models(models)
        engine = HFEngine(policy.__class__(packed, policy.tokenizer, policy.device, policy.path))
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        texts = [t for block in prompt_sets for t in block]
        batch = engine.generate(texts, 4, SamplingParams(max_new_tokens=8), generators)
        rows = len(prompt_sets[0]) * 4
        return [
            row[mask].tolist()
            for row, mask in zip(batch.response_ids[:rows], batch.response_mask[:rows], strict=True)
        ]

    torch.manual_seed(123)
    in_three = rollout(solos, [prompts[:4], prompts[4:8], prompts[2:6]], [7, 8, 9])
    torch.manual_seed(456)
    in_two = rollout([solos[0], solos[2]], [prompts[:4], ["1+1=", "22+3=", "9+9=", "4+0="]], [7, 99])
    assert in_three == in_two
    # and the stream is the seed's: another seed samples other tokens
    assert rollout([solos[0]], [prompts[:4]], [8]) != in_three


def test_static_and_dynamic_caches_sample_the_same_tokens(setup, solos):
    _, _, policy, prompts, _ = setup
    packed = pack_models(solos[:2])
    sampled = {}
    for cache in ("dynamic", "static"):
        engine = HFEngine(policy.__class__(packed, policy.tokenizer, policy.device, policy.path), cache=cache)
        generators = [torch.Generator().manual_seed(s) for s in (3, 4)]
        batch = engine.generate(prompts[:8], 2, SamplingParams(max_new_tokens=8), generators)
        sampled[cache] = batch.response_ids * batch.response_mask
    assert torch.equal(sampled["dynamic"], sampled["static"])


def _pack_cfgs(overrides, estimators_and_seeds, extra=()):
    return [
        load([*overrides, f"estimator={e}", f"seed={s}", "trainer.packed=true", *extra])[0]
        for e, s in estimators_and_seeds
    ]


def test_a_pack_trains_runs_of_different_estimators_and_rates(fast_overrides):
    cfgs = _pack_cfgs(fast_overrides, [("grpo", 0), ("fade", 1), ("rloo", 2)])
    cfgs[2].trainer.lr = 1e-3
    results = train_pack(cfgs)
    assert all(not isinstance(r, BaseException) for r in results)
    assert [[e.step for e in r.evals] for r in results] == [[0, 2, 4]] * 3
    # the same warm start and eval stream: equal at step 0, then each run's own
    assert len({tuple(r.evals[0].correct) for r in results}) == 1
    assert len({r.summary.final_entropy for r in results}) == 3


def test_a_nan_in_one_replica_stops_it_alone(fast_overrides, monkeypatch):
    """Replica 1's advantages turn NaN at step 2 (after the estimator's own check: the loss finds
    them): it stops with the loop's error, the others finish
    with exactly the metrics of a pack without the poisoned replica's failure (same weights and
    streams: replica independence)."""
    cfgs = _pack_cfgs(fast_overrides, [("grpo", 0), ("grpo", 1), ("grpo", 2)])
    clean = train_pack(copy.deepcopy(cfgs))
    real = packing.estimate

    def poisoned(run, state, step, scored):
        out = real(run, state, step, scored)
        if run.cfg.seed == 1 and step == 2:
            out.advantages = out.advantages * float("nan")
        return out

    monkeypatch.setattr(packing, "estimate", poisoned)
    dirty = train_pack(copy.deepcopy(cfgs))
    assert isinstance(dirty[1], packing.NonFiniteError) and str(dirty[1]).startswith("step 2: loss")
    for r in (0, 2):
        assert [e.correct for e in dirty[r].evals] == [e.correct for e in clean[r].evals]
        assert dirty[r].summary.final_entropy == clean[r].summary.final_entropy


def test_packed_identity_records_packing_not_composition(fast_overrides):
    (solo,) = load(fast_overrides)
    (packed,) = load([*fast_overrides, "trainer.packed=true"])
    assert config_hash(solo) != config_hash(packed)
    # a solo run's identity is what it was before packs existed: no `packed` key in it
    assert "packed" not in identity(solo) and "packed: true" in identity(packed)
    a, b = _pack_cfgs(fast_overrides, [("grpo", 0), ("fade", 3)])
    c = copy.deepcopy(a)
    c.trainer.lr = 1e-3
    assert pack_key(a) == pack_key(b) == pack_key(c)  # estimator, seed, lr: each run's own
    (other_task,) = load([*fast_overrides, "task=countdown", "trainer.packed=true"])
    assert pack_key(other_task) != pack_key(a)


def test_resume_after_a_kill_gives_the_same_metrics(fast_overrides, tmp_path):
    """A pack checkpointed after step 2 and restored into a fresh pack ends with the same evals and
    step metrics as an uninterrupted pack."""
    cfgs = _pack_cfgs(fast_overrides, [("grpo", 0), ("fade", 1)], extra=("trainer.checkpoint_every=2",))
    steps: dict[int, list] = {0: [], 1: []}
    whole = train_pack(copy.deepcopy(cfgs), on_step=lambda r, s, m: steps[r].append(m))

    saved = {}
    real_save = packing.save_pack

    def stop_after_first_save(pack, trackers):
        real_save(pack, trackers)
        saved["states"] = [packing.checkpoint.load(cfg, None) for cfg in cfgs]
        raise KeyboardInterrupt

    packing.save_pack = stop_after_first_save
    try:
        with pytest.raises(KeyboardInterrupt):
            train_pack(copy.deepcopy(cfgs))
    finally:
        packing.save_pack = real_save
    assert packing.resumable(saved["states"]) and saved["states"][0]["step"] == 2
    resumed_steps: dict[int, list] = {0: [], 1: []}
    resumed = train_pack(
        copy.deepcopy(cfgs), on_step=lambda r, s, m: resumed_steps[r].append(m), resume=saved["states"]
    )
    for r in (0, 1):
        assert [e.correct for e in resumed[r].evals] == [e.correct for e in whole[r].evals]
        after = [{k: v for k, v in m.items() if not machine_dependent(k)} for m in steps[r][2:]]
        again = [{k: v for k, v in m.items() if not machine_dependent(k)} for m in resumed_steps[r]]
        assert after == again


def test_load_replica_is_replica_states_inverse(solos):
    packed = pack_models(solos)
    load_replica(packed, 0, solos[2].state_dict())
    for name, tensor in solos[2].state_dict().items():
        torch.testing.assert_close(replica_state(packed, 0)[name], tensor)
    for name, tensor in solos[1].state_dict().items():
        torch.testing.assert_close(replica_state(packed, 1)[name], tensor)


@pytest.mark.parametrize(("chunk", "group"), [(64, 4), (4, 4), (4, 2)])
def test_a_replica_trains_as_it_would_in_another_pack(fast_overrides, monkeypatch, chunk, group):
    """Replica (grpo, seed 0) in a pack of three and in a pack of two with another run: the same
    evals and final entropy up to float rounding (its numbers are its own, not its pack's); with
    evals in chunks of 4 prompts too, where another replica's longer samples in one chunk must not
    shift this replica's draws in the next, and in calls of two replicas (the pack of three's last
    call holding one)."""
    monkeypatch.setattr(packing, "EVAL_CHUNK", chunk)
    monkeypatch.setattr(packing, "REPLICAS_PER_CALL", {"cpu": group})
    longer = ("rollout.max_new_tokens=12",)  # samples of many lengths: calls of many decode steps
    three = train_pack(_pack_cfgs(fast_overrides, [("grpo", 0), ("fade", 1), ("rloo", 2)], extra=longer))
    two = train_pack(_pack_cfgs(fast_overrides, [("grpo", 0), ("psr", 5)], extra=longer))
    assert [e.correct for e in three[0].evals] == [e.correct for e in two[0].evals]
    assert three[0].summary.final_entropy == pytest.approx(two[0].summary.final_entropy, abs=1e-4)


def test_rollouts_of_consecutive_prompts_join_as_one(setup):
    _, _, policy, prompts, _ = setup
    engine = HFEngine(policy)
    torch.manual_seed(0)
    parts = [engine.generate(prompts[:3], 2, SamplingParams(max_new_tokens=8)),
             engine.generate(prompts[3:8], 2, SamplingParams(max_new_tokens=5))]  # fmt: skip
    joined = packing.concat_rollouts(parts, policy.tokenizer.pad_token_id)
    assert joined.texts == parts[0].texts + parts[1].texts
    assert joined.response_ids.shape[0] == 16 and joined.prompt_ids.shape[0] == 16
    for part, rows in ((parts[0], slice(0, 6)), (parts[1], slice(6, 16))):
        assert torch.equal(joined.response_mask[rows].sum(-1), part.response_mask.sum(-1))
        assert torch.equal(joined.prompt_mask[rows].sum(-1), part.prompt_mask.sum(-1))
        mine = joined.response_ids[rows][:, : part.response_ids.shape[1]]
        assert torch.equal(mine[part.response_mask], part.response_ids[part.response_mask])
        assert joined.entropy[rows][joined.response_mask[rows]].sum() == pytest.approx(
            float(part.entropy[part.response_mask].sum())
        )


@pytest.mark.slow
def test_a_pack_killed_with_sigkill_resumes_to_the_uninterrupted_packs_metrics(tmp_path, cache_dir):
    """`advbench run 'estimator=[nsr,fade]' --pack 2`, killed after its step-4 checkpoint and run
    again: both runs resume into their MLflow runs and end with every metric of an uninterrupted
    pack, each step logged once (fade carries estimator state through the checkpoint)."""
    import signal
    import subprocess
    import sys
    import time

    from mlflow.tracking import MlflowClient

    from advbench.harness.checkpoint import checkpoint_dir
    from tests.harness.test_resume import CLI, _Store

    def command(db):
        return [
            sys.executable, "-c", CLI, "run", "estimator=[nsr,fade]", "--pack", "2",
            *FAST, f"cache_dir={cache_dir}", f"tracking.uri=sqlite:///{db}", "trainer.steps=12",
            "trainer.checkpoint_every=2", "eval.every=4", "geometry.every=2", "tracking.lease_seconds=2",
        ]  # fmt: skip

    def histories(db):
        client = MlflowClient(tracking_uri=f"sqlite:///{db}")
        exp = client.get_experiment_by_name("advbench")
        runs = client.search_runs(
            [exp.experiment_id],
            filter_string="tags.`advbench.kind` = 'run' and attributes.status = 'FINISHED'",
        )
        out = {}
        for run in runs:
            history = {}
            for key in run.data.metrics:
                if machine_dependent(key):
                    continue
                points = client.get_metric_history(run.info.run_id, key)
                steps = [m.step for m in points]
                assert len(steps) == len(set(steps)), f"{key} logged twice at a step: {sorted(steps)}"
                history[key] = sorted((m.step, m.value) for m in points)
            out[run.info.run_name] = history
        return out

    subprocess.run(command(tmp_path / "reference.db"), check=True, capture_output=True, timeout=300)
    reference = histories(tmp_path / "reference.db")
    assert len(reference) == 2 and all(len(h["train/reward_mean"]) == 12 for h in reference.values())

    db = tmp_path / "killed.db"
    (cfg,) = load([*FAST, f"cache_dir={cache_dir}", "estimator=nsr"])
    folder = checkpoint_dir(cfg, _Store(db)).parent
    process = subprocess.Popen(command(db), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while process.poll() is None and time.monotonic() < deadline:
        steps = []
        for path in folder.glob("*/state.pt"):
            with contextlib.suppress(Exception):  # being replaced
                steps.append(torch.load(path, weights_only=False)["step"])
        if len(steps) == 2 and min(steps) >= 4:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    rerun = subprocess.run(command(db), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "pack of 2: resuming after step" in " ".join(rerun.stderr.split()), rerun.stderr[-2000:]
    resumed = histories(db)
    assert resumed.keys() == reference.keys()
    for name, history in resumed.items():
        assert {k: [s for s, _ in v] for k, v in history.items()} == {
            k: [s for s, _ in v] for k, v in reference[name].items()
        }, name
        for key, points in history.items():
            assert [v for _, v in points] == pytest.approx(
                [v for _, v in reference[name][key]], rel=1e-5, abs=1e-6
            ), f"{name}: {key}"
    assert not list(folder.glob("*/*.pt"))  # finished runs remove their checkpoints


def test_a_suites_cells_are_grouped_into_packs_of_what_they_share(tmp_path):
    """16 packable cells in packs of at most 12: two packs of 8; a cell a pack cannot hold (the
    paged engine) runs solo; two tasks never share a pack; --pack 0 turns the file's key off."""
    from advbench.harness.runner import units
    from advbench.harness.suites import load_suite

    path = tmp_path / "packs.yaml"
    path.write_text(
        "pack: 12\n"
        "matrix:\n"
        "  estimator: [grpo, rloo, {name: grpo, label: grpo-paged, overrides: {rollout: {engine: paged}}}]\n"
        "  seed: [0, 1, 2, 3, 4, 5, 6, 7]\n"
        "  task: [arithmetic, countdown]\n"
    )
    suite = load_suite(path)
    assert suite.pack == 12
    paged = [c for c in suite.cells if c.display_label == "grpo-paged"]
    assert paged and not any(c.trainer.packed for c in paged)
    assert all(c.trainer.packed for c in suite.cells if c.display_label != "grpo-paged")
    groups = units(suite.cells, suite.pack)
    packs = [u for u in groups if u[0].trainer.packed]
    assert sorted(len(u) for u in packs) == [8, 8, 8, 8]  # 16 arithmetic, 16 countdown
    assert all(len({c.task.name for c in u}) == 1 for u in packs)
    assert sum(len(u) for u in groups) == len(suite.cells) == 48
    assert not any(c.trainer.packed for c in load_suite(path, pack=0).cells)


def test_a_packed_suite_reruns_nothing_it_finished(fast_overrides, tmp_path):
    from advbench.harness.runner import run_pack
    from advbench.harness.tracking import Tracker

    cfgs = _pack_cfgs(fast_overrides, [("grpo", 0), ("rloo", 1)])
    tracker = Tracker(cfgs[0].tracking)
    parent = tracker.start_parent("packs")
    first, failed = run_pack(cfgs, tracker, parent, say=lambda _: None)
    assert not failed and [o.status for o in first] == ["ran", "ran"]
    said: list[str] = []
    again, _ = run_pack(cfgs, tracker, parent, say=said.append)
    assert [o.status for o in again] == ["cached", "cached"]
    assert [o.run_id for o in again] == [o.run_id for o in first]
    assert all("not run again" in line for line in said)


def test_micro_batches_minibatches_and_groups_give_the_same_update(fast_overrides, monkeypatch):
    """A pack whose update is split into micro-batches (trainer.micro_batch_tokens, the pack's whole
    budget shared by its replicas), minibatches (each replica's own row order) or groups of replicas
    per forward (REPLICAS_PER_CALL) trains like the same pack in one forward per minibatch: the same
    losses and gradient norms (float rounding). (policy_entropy is a mean of per-micro-batch means,
    in a solo run too: not compared.)"""
    extra = ("trainer.minibatches=2", "trainer.update_epochs=2", "trainer.steps=2", "eval.every=2")
    seen: dict[tuple, dict] = {}
    for budget, group in ((0, 4), (40, 4), (40, 2)):
        monkeypatch.setattr(packing, "REPLICAS_PER_CALL", {"cpu": group})
        cfgs = _pack_cfgs(
            fast_overrides,
            [("grpo", 0), ("rloo", 1), ("psr", 2)],
            extra=(*extra, f"trainer.micro_batch_tokens={budget}"),
        )
        steps: list = []
        train_pack(cfgs, on_step=lambda r, s, m, into=steps: into.append((r, s, m)))
        seen[budget, group] = {(r, s): m for r, s, m in steps}
    assert len(seen[0, 4]) == 6
    for key, metrics in seen[0, 4].items():
        for name in ("train/loss", "train/grad_norm"):
            for other in ((40, 4), (40, 2)):
                assert seen[other][key][name] == pytest.approx(metrics[name], rel=1e-4, abs=1e-6), (
                    other,
                    key,
                )


def test_ray_gives_a_pack_a_gpu_and_lets_solo_cells_share_one(fast_overrides):
    from advbench.harness.runner import resources

    (solo,) = load([*fast_overrides, "model.device=cuda"])
    packed = as_packed(solo)
    assert resources(solo) == {"num_gpus": 1.0, "num_cpus": 1}
    assert resources(solo, cells_per_gpu=4) == {"num_gpus": 0.25, "num_cpus": 1}
    assert resources(packed, cells_per_gpu=4) == {"num_gpus": 1.0, "num_cpus": 1}
    (cpu,) = load([*fast_overrides, "threads=2"])
    assert resources(cpu, cells_per_gpu=4) == {"num_cpus": 2}
