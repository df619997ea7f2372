"""advbench's estimators inside TRL's GRPOTrainer (harness/adapters/trl.py): TRL runs of the
tiny model on the CPU, a few steps each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

trl = pytest.importorskip("trl", reason="TRL is an optional extra: pip install 'advbench[trl]'")

from advbench.harness import tasks, warmstart  # noqa: E402
from advbench.harness.adapters.trl import STATE_FILE, AdvbenchGRPOTrainer, check_trl_version, task_data  # noqa: E402
from advbench.harness.config import load  # noqa: E402
from advbench.harness.errors import ConfigError  # noqa: E402


@pytest.fixture(scope="module")
def tiny(cache_dir):
    """The shipped warm start of the tiny model for arithmetic, its tokenizer, 16 train prompts
    as a datasets.Dataset and a reward function scoring with the task's verifier."""
    from transformers import AutoTokenizer

    (cfg,) = load([f"cache_dir={cache_dir}", "task=arithmetic"])
    task = tasks.build(cfg.task, cfg.cache_dir)
    path = warmstart.load_tiny(cfg.model, task, cfg.cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    dataset, reward = task_data(task, 16, seed=0)
    return str(path), tokenizer, dataset, reward


def trainer(tiny, tmp_path, estimator, params=None, cls=AdvbenchGRPOTrainer, **args):
    path, tokenizer, dataset, reward = tiny
    config = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=8,
        max_steps=3,
        use_cpu=True,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        learning_rate=1e-4,
        seed=0,
    )
    config.update(args)
    return cls(
        model=path,
        reward_funcs=reward,
        args=trl.GRPOConfig(**config),
        train_dataset=dataset,
        processing_class=tokenizer,
        estimator=estimator,
        estimator_params=params,
    )


def logged(run, key):
    return [entry[key] for entry in run.state.log_history if key in entry]


@pytest.mark.parametrize(
    "estimator, params, scale_rewards",
    [("grpo", {"eps": 1e-4}, "group"), ("dr_grpo", None, "none")],
)
def test_grpo_and_dr_grpo_equal_trls_own_advantages(tiny, tmp_path, estimator, params, scale_rewards):
    run = trainer(tiny, tmp_path, estimator, params, scale_rewards=scale_rewards, max_steps=2)
    seen = []
    original = run._advbench_advantages

    def spy(output):
        advantages, kept = original(output)
        seen.append((run.trl_advantages.clone(), advantages.clone()))
        return advantages, kept

    run._advbench_advantages = spy
    run.train()
    assert len(seen) == 2
    for theirs, ours in seen:
        assert theirs.abs().sum() > 0  # a batch with signal, so that equality means something
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("estimator", ["fade", "rloo"])
def test_a_few_steps_train_with_fade_and_rloo(tiny, tmp_path, estimator):
    run = trainer(tiny, tmp_path, estimator)
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    run.train()
    assert len(logged(run, "loss")) == 3
    assert any(not torch.equal(before[k], v) for k, v in run.model.state_dict().items())
    if estimator == "fade":  # its schedule ran on TRL's signals, and says so in TRL's logs
        assert len(logged(run, "estimator/fade_alpha")) == 3
        state = run.advantage_call.state
        assert state.p_hat is not None and state.h_target == pytest.approx(
            0.5 * run.advantage_call.initial_entropy
        )
        assert 0 < run.advantage_call.initial_entropy < 10


def test_fade_state_is_kept_across_trl_checkpoints(tiny, tmp_path):
    first = trainer(tiny, tmp_path, "fade", max_steps=2, save_strategy="steps", save_steps=2)
    first.train()
    checkpoint = tmp_path / "out" / "checkpoint-2"
    saved = json.loads((checkpoint / STATE_FILE).read_text())
    assert saved == json.loads(json.dumps(first.advantage_call.state_dict()))
    resumed = trainer(tiny, tmp_path, "fade", max_steps=2)
    assert resumed.advantage_call.state_dict() != saved  # a fresh trainer starts from step 0's state
    loaded = []
    original = resumed.advantage_call.load_state_dict
    resumed.advantage_call.load_state_dict = lambda state: (loaded.append(state), original(state))
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert loaded == [saved]
    # the entropy target is fixed at the first step: the resumed run kept the saved one
    assert resumed.advantage_call.initial_entropy == saved["initial_entropy"]
    assert resumed.advantage_call.state.h_target == saved["state"]["h_target"]


class Recording(AdvbenchGRPOTrainer):
    """Keeps each training batch as the loss receives it."""

    outputs: list

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        output["rewards"] = self._gathered_rewards.squeeze(1)  # one process: the whole batch
        self.outputs = [*getattr(self, "outputs", []), output]
        return output


def test_left_out_samples_leave_the_loss_and_its_normaliser(tiny, tmp_path):
    run = trainer(tiny, tmp_path, "psr", cls=Recording, max_steps=2)
    run.train()
    for output in run.outputs:
        correct = output["rewards"] >= 1.0
        assert 0 < correct.sum() < correct.numel()  # both kinds in the batch
        kept = output["completion_mask"].sum(1) > 0  # psr: wrong samples train not at all
        assert torch.equal(kept, correct) and (output["advantages"][~correct] == 0).all()
        assert output["num_items_in_batch"] == output["completion_mask"].sum()


def test_a_token_level_estimator_gives_trl_token_advantages(tiny, tmp_path):
    run = trainer(tiny, tmp_path, "reinforce_pp", cls=Recording, max_steps=1)
    run.train()
    (output,) = run.outputs
    advantages, mask = output["advantages"], output["completion_mask"].bool()
    assert (
        advantages.shape == mask.shape and (advantages[~mask] == 0).all() and advantages[mask].abs().sum() > 0
    )


def test_bad_input_is_refused_when_the_trainer_is_built(tiny, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="unknown estimator 'fadee'.*registered estimators: .*grpo"):
        trainer(tiny, tmp_path, "fadee")
    with pytest.raises(ConfigError, match="'remax' needs greedy_rewards"):
        trainer(tiny, tmp_path, "remax")
    with pytest.raises(ConfigError, match="needs reference log-probs: set GRPOConfig.beta"):
        trainer(tiny, tmp_path, "reinforce_pp", {"kl_coef": 0.01})
    with pytest.raises(ConfigError, match=r"supports trl >=1.16,<1.17 .*installed: trl 1.15.2"):
        check_trl_version("1.15.2")
    monkeypatch.setattr(trl, "__version__", "2.0.0")
    with pytest.raises(ConfigError, match=r"supports trl >=1.16,<1.17.*installed: trl 2.0.0"):
        trainer(tiny, tmp_path, "grpo")


def test_an_advbench_config_trains_in_trl_and_lands_on_the_leaderboard(fast_overrides, tmp_path):
    from advbench.harness import leaderboard
    from advbench.harness.adapters.trl import build_trainer
    from advbench.harness.cli import main
    from advbench.harness.evaluation import CORRECT_COUNTS
    from advbench.harness.tracking import Tracker

    for estimator in ("rloo", "fade"):
        (cfg,) = load([*fast_overrides, f"estimator={estimator}", "tracking.experiment=trl-runs"])
        run = build_trainer(cfg, str(tmp_path / estimator))
        run.train()
    board = leaderboard.collect_trainer_runs(Tracker(cfg.tracking), reference="rloo")
    assert board.labels == ["fade", "rloo"] and board.reference == "rloo"
    for cell in board.runs:
        assert cell.eval_steps.tolist() == [0, 2, 4]  # before the first step, every 2, after the last
        assert ((cell.pass_at_1 >= 0) & (cell.pass_at_1 <= 1)).all() and len(cell.sign_balance) == 4
        assert cell.summary.initial_pass_at_1 == cell.pass_at_1[0] and cell.summary.k_max == 4
        assert (cell.task, cell.model, cell.seed) == ("arithmetic", "tiny", 0)
        saved = Tracker(cfg.tracking).client.download_artifacts(
            cell.run_id, CORRECT_COUNTS, str(tmp_path / cell.label)
        )
        counts = json.loads(Path(saved).read_text())  # what advbench's own runs leave: every eval's c_i
        assert sorted(counts["correct"]) == ["0", "2", "4"] and counts["n"] == 4
    out = tmp_path / "page"
    assert (
        main(["leaderboard", "trl-runs", "--runs", "--tracking-uri", cfg.tracking.uri, "--out", str(out)])
        == 0
    )
    assert "fade" in (out / "leaderboard.md").read_text() and (out / "pass_at_1.png").exists()
    with pytest.raises(LookupError, match="reference 'grpo' has no run in 'trl-runs'; labels: fade, rloo"):
        leaderboard.collect_trainer_runs(Tracker(cfg.tracking), reference="grpo")
    assert main(["leaderboard", "trl-runs", "--reference", "fade", "--tracking-uri", cfg.tracking.uri]) == 2


def test_losses_without_a_trl_equivalent_are_refused(fast_overrides, tmp_path):
    from advbench.harness.adapters.trl import grpo_config

    (cfg,) = load([*fast_overrides, "loss=drpo"])
    with pytest.raises(ConfigError, match="only ppo_clip maps onto it .*got 'drpo'"):
        grpo_config(cfg, str(tmp_path))
    (cfg,) = load([*fast_overrides, "loss.aggregation=seq_sum_const", "loss.clip_high=0.28"])
    args = grpo_config(cfg, str(tmp_path), world_size=2)
    assert (args.loss_type, args.epsilon_high, args.per_device_train_batch_size) == ("dr_grpo", 0.28, 8)
