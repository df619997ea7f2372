import dataclasses
import subprocess
import sys
import textwrap

import pytest

from advbench.harness.config import ConfigError, config_hash, flatten, load, to_yaml


def test_defaults_resolve_to_one_run_with_every_knob():
    (cfg,) = load([])
    assert (cfg.estimator, cfg.model.name, cfg.task.name, cfg.loss["name"], cfg.rollout.name) == (
        "grpo",
        "tiny",
        "arithmetic",
        "ppo_clip",
        "hf",
    )
    assert cfg.estimator_params == {"grpo": {"eps": 1e-6, "unbiased_std": True}}  # defaults recorded
    assert cfg.loss == {
        "name": "ppo_clip",
        "clip_low": 0.2,
        "clip_high": 0.2,
        "dual_clip": 0.0,
        "aggregation": "token_mean",
        "tis_cap": 0.0,
        "kl_coef": 0.0,
        "kl_estimator": "k3",
        "entropy_coef": 0.0,
    }
    assert "estimator_params.grpo.eps" in flatten(cfg)


def test_lists_sweep_estimators_and_seeds():
    runs = load(["estimator=[grpo,rloo,reinforce_batch]", "seed=[1,2]"])
    assert [(r.estimator, r.seed) for r in runs] == [
        ("grpo", 1),
        ("grpo", 2),
        ("rloo", 1),
        ("rloo", 2),
        ("reinforce_batch", 1),
        ("reinforce_batch", 2),
    ]
    assert len({config_hash(r) for r in runs}) == 6


def test_group_selection_then_dotted_override():
    (cfg,) = load(
        ["estimator=rloo", "task=countdown", "model=tiny", "seed=3", "trainer.steps=200", "task.eval_size=10"]
    )
    assert (cfg.estimator, cfg.task.dataset, cfg.seed, cfg.trainer.steps, cfg.task.eval_size) == (
        "rloo",
        "countdown",
        3,
        200,
        10,
    )
    assert cfg.estimator_params == {"rloo": {}}


def test_config_file_is_merged_and_the_cli_wins(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text(
        textwrap.dedent("""
        defaults:
          task: countdown
        estimator: rloo
        trainer:
          steps: 7
          lr: 1.0e-5
        estimator_params:
          grpo: {eps: 0.001}
    """)
    )
    (cfg,) = load(["trainer.steps=9"], str(path))
    assert (cfg.task.name, cfg.estimator, cfg.trainer.steps, cfg.trainer.lr) == ("countdown", "rloo", 9, 1e-5)
    (grpo,) = load(["estimator=grpo"], str(path))
    assert grpo.estimator_params == {"grpo": {"eps": 0.001, "unbiased_std": True}}


def test_tracking_does_not_change_the_run_identity():
    (a,) = load(["tracking.uri=sqlite:///x.db"])
    (b,) = load(["tracking.uri=sqlite:///y.db"])
    (c,) = load(["seed=1"])
    assert config_hash(a) == config_hash(b) != config_hash(c)
    assert "tracking:" in to_yaml(a)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["estimator=grpoo"],
            r"unknown estimator 'grpoo' \(did you mean 'grpo'\?\); registered estimators: .*grpo,",
        ),
        (
            ["trainer.stepz=3"],
            r"unknown config key 'trainer.stepz' \(did you mean 'steps'\?\); "
            r"valid keys under 'trainer': steps,",
        ),
        (
            ["trainer.steps=abc"],
            r"config key 'trainer.steps': Value 'abc' of type 'str' could not be converted to Integer",
        ),
        (
            ["task=nope"],
            r"config key 'task': unknown task 'nope'; choices: aime, arithmetic, chain_sum, countdown",
        ),
        (["trainer.group_size=0"], r"config key 'trainer.group_size': must be >= 1, got 0"),
        (["rollout.temperature=-1"], r"config key 'rollout.temperature': must be > 0"),
        (
            ["estimator_params.grpo.epz=1"],
            r"estimator 'grpo' has no hyperparameter 'epz'; its hyperparameters are: eps, unbiased_std",
        ),
        (["estimator_params.grpo.eps=0"], r"config key .estimator.: grpo: eps must be > 0"),
        (["estimator_params.nope.x=1"], r"'estimator_params': nope is not a registered estimator"),
        (["loss.clip_low=2"], r"config key 'loss': ppo_clip: clip_low must be in \(0, 1\)"),
        (["loss.clip=0.1"], r"loss 'ppo_clip' has no hyperparameter 'clip'"),
        (["+trainer.steps=3"], r"no '\+key' syntax"),
        (["trainer"], r"not of the form key=value"),
        (["model.hidden_size=30"], r"model.hidden_size': must be divisible by model.num_heads=4"),
    ],
)
def test_bad_configs_name_the_key_and_the_choices(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load(overrides)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load([], "/no/such/file.yaml")


def test_a_bad_config_fails_before_any_model_library_is_loaded():
    # The CLI reports the error and exits 2 without importing torch, transformers or MLflow (the
    # registries' names are read from their files); its wall time is measured in tests/benchmarks.
    code = textwrap.dedent("""
        import sys
        from advbench.harness.cli import main
        rc = main(["run", "estimator=nope"])
        print(rc, "torch" in sys.modules, "transformers" in sys.modules, "mlflow" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["2", "False", "False", "False"]
    knob = code.replace('"estimator=nope"', '"estimator=grpo", "estimator.epz=1e-3"')
    out_knob = subprocess.run([sys.executable, "-c", knob], capture_output=True, text=True, timeout=60)
    assert out_knob.stdout.split() == ["2", "False", "False", "False"]  # a misspelt knob too
    misspelt = " ".join(out_knob.stderr.split())
    assert "config key 'estimator.epz': estimator 'grpo' has no hyperparameter 'epz'" in misspelt  # as typed
    assert "its hyperparameters are: eps" in misspelt and "did you mean 'estimator.eps'?" in misspelt
    assert "unknown estimator 'nope'" in out.stderr
    assert "registered estimators: asym_grpo, asym_reinforce" in out.stderr


def test_config_hash_is_the_one_existing_stores_were_recorded_with():
    """config_hash reads the dataclasses directly now; a changed hash would make every suite re-run
    the cells an existing MLflow store already finished, so it must equal the OmegaConf way (the
    code identity included)."""
    import hashlib

    from omegaconf import OmegaConf

    for cfg in load(["estimator=[grpo,fade]", "task=[arithmetic,countdown]", "loss=dppo"]):
        container = OmegaConf.to_container(OmegaConf.structured(cfg))
        for key in ("tracking", "threads", "label", "cache_dir"):
            container.pop(key)
        # trainer.packed came after those stores; a solo run's identity leaves it out (packs)
        assert container["trainer"].pop("packed") is False
        text = OmegaConf.to_yaml(OmegaConf.create(container))
        assert config_hash(cfg) == hashlib.sha256(text.encode()).hexdigest()[:16]
    (plain,) = load(["task=humaneval"])
    with_numpy = dataclasses.replace(plain, task=dataclasses.replace(plain.task, packages=["numpy"]))
    assert config_hash(plain) != config_hash(with_numpy)


def test_the_names_and_knobs_read_from_the_files_are_the_registered_ones():
    import dataclasses

    from advbench import estimators
    from advbench.harness import losses
    from advbench.harness.config import declared
    from advbench.harness.plugins import module_files

    for registry, module in ((estimators, "advbench.estimators"), (losses, "advbench.harness.losses")):
        found = declared(module_files(module))
        assert sorted(found) == registry.names()
        for name in registry.names():
            assert found[name] == tuple(f.name for f in dataclasses.fields(registry.get(name).params)), name


def test_the_config_and_the_registries_bound_ints_alike():
    from advbench.estimators import registry
    from advbench.harness import schema

    assert schema.LARGEST_INT == registry.LARGEST_INT


def test_a_users_own_config_and_suite_folders_are_searched_first(tmp_path, monkeypatch):
    from advbench.harness.config import CONFIG_DIR, group_choices
    from advbench.harness.suites import load_suite

    (tmp_path / "configs" / "task").mkdir(parents=True)
    (tmp_path / "configs" / "task" / "mine.yaml").write_text("dataset: chain_sum\neval_size: 12\n")
    (tmp_path / "suites").mkdir()
    shipped = (CONFIG_DIR.parent / "suites" / "smoke.yaml").read_text()
    (tmp_path / "suites" / "mine.yaml").write_text(shipped.replace("name: smoke", "name: mine"))
    monkeypatch.chdir(tmp_path)
    assert {"mine", "arithmetic"} <= set(group_choices("task"))  # the user's beside the shipped
    (cfg,) = load(["task=mine"])
    assert (cfg.task.name, cfg.task.dataset, cfg.task.eval_size) == ("mine", "chain_sum", 12)
    assert load_suite("mine").name == "mine" and load_suite("smoke").name == "smoke"
    with pytest.raises(ConfigError, match=f"unknown task 'yours'.*files in {tmp_path}/configs/task"):
        load(["task=yours"])


def test_the_estimator_is_configured_like_the_loss_and_the_old_syntax_still_works(tmp_path, capsys):
    file = tmp_path / "run.yaml"
    file.write_text("estimator:\n  name: fade\n  alpha_max: 2.0\n")
    (from_file,) = load([], file)
    (dotted,) = load(["estimator.name=fade", "estimator.alpha_max=2"])
    (mixed,) = load(["estimator=fade", "estimator.alpha_max=2"])
    assert "old spelling" not in capsys.readouterr().err
    (old,) = load(["estimator=fade", "estimator_params.fade.alpha_max=2"])
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and said[0].endswith("write estimator=fade estimator.alpha_max=2"), said
    old_file = tmp_path / "old.yaml"
    old_file.write_text("estimator: fade\nestimator_params:\n  fade:\n    alpha_max: 2.0\n")
    (old_in_file,) = load([], old_file)
    assert "write estimator: {name: fade, alpha_max: 2.0}" in capsys.readouterr().err
    assert config_hash(old_in_file) == config_hash(from_file)
    assert from_file.estimator == dotted.estimator == mixed.estimator == old.estimator == "fade"
    assert (
        from_file.estimator_params
        == dotted.estimator_params
        == mixed.estimator_params
        == old.estimator_params
    )
    assert old.estimator_params["fade"]["alpha_max"] == 2.0
    assert config_hash(from_file) == config_hash(old)  # the same run, however it was written
    (knob_only,) = load(["estimator.eps=1e-3"])  # a knob of the estimator the run has (grpo)
    assert knob_only.estimator_params == {"grpo": {"eps": 1e-3, "unbiased_std": True}}
    swept = load(["estimator=[grpo,mc_grpo]", "estimator.eps=1e-2"])
    assert [(c.estimator, c.estimator_params[c.estimator]["eps"]) for c in swept] == [
        ("grpo", 1e-2),
        ("mc_grpo", 1e-2),
    ]
    with pytest.raises(ConfigError, match="estimator 'rloo' has no hyperparameter 'eps'"):
        load(["estimator=rloo", "estimator.eps=1"])


def test_a_loss_is_named_in_its_mapping_as_an_estimator_is(tmp_path):
    """One spelling: ``loss: {name: dppo, delta_high: 0.2}`` in a file, ``loss.name=dppo`` or
    ``loss=dppo`` on the command line, all the same run."""
    file = tmp_path / "run.yaml"
    file.write_text("loss:\n  name: dppo\n  delta_high: 0.2\n")
    (from_file,) = load([], file)
    (selected,) = load(["loss=dppo", "loss.delta_high=0.2"])
    (named,) = load(["loss.name=dppo", "loss.delta_high=0.2"])
    assert from_file.loss["name"] == "dppo" and from_file.loss["delta_high"] == 0.2
    assert config_hash(from_file) == config_hash(selected) == config_hash(named)
    assert [c.loss["name"] for c in load(["loss.name=[dppo,drpo]"])] == ["dppo", "drpo"]


def test_a_files_dotted_keys_mean_what_they_mean_on_the_command_line(tmp_path):
    """``estimator.alpha_max: 2`` in a file is ``estimator.alpha_max=2`` on the command line (the
    plain name beside it becomes the mapping's name), and a misspelt knob there is named as typed."""
    file = tmp_path / "run.yaml"
    file.write_text(
        "estimator: fade\nestimator.alpha_max: 2\ntrainer.steps: 7\nloss: dppo\nloss.delta_high: 0.3\n"
    )
    (from_file,) = load([], file)
    (cli,) = load(
        ["estimator=fade", "estimator.alpha_max=2", "trainer.steps=7", "loss=dppo", "loss.delta_high=0.3"]
    )
    assert from_file.estimator_params["fade"]["alpha_max"] == 2 and from_file.trainer.steps == 7
    assert from_file.loss["name"] == "dppo" and from_file.loss["delta_high"] == 0.3
    assert config_hash(from_file) == config_hash(cli)
    file.write_text("estimator: fade\nestimator.alpah_max: 2\n")
    with pytest.raises(ConfigError, match="did you mean '(estimator.)?alpha_max'"):
        load([], file)
    file.write_text("trainer:\ntrainer.steps: 5\n")  # an empty section beside a dotted key
    assert load([], file)[0].trainer.steps == 5
    file.write_text("trainer.stepz: 2\n")
    with pytest.raises(ConfigError, match="trainer.stepz.*did you mean 'steps'"):
        load([], file)
