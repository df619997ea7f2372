"""Suite files: expansion into cells, identity, and the errors a bad suite gets."""

import pytest

from advbench.harness.config import ConfigError, config_hash
from advbench.harness.suites import load_suite


def write(tmp_path, text: str, name: str = "s.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_matrix_expands_variant_major_with_params_labels_and_overrides(tmp_path):
    path = write(
        tmp_path,
        """
matrix:
  estimator: [grpo, {name: f_grpo, label: focal-g3, params: {gamma: 3.0}},
              {name: grpo, label: grpo-dppo, overrides: {loss: dppo}}]
  seed: [0, 1]
  task: [arithmetic, countdown]
overrides:
  trainer: {steps: 7}
""",
    )
    suite = load_suite(path)
    assert (
        suite.name == "s" and suite.reference == "grpo" and suite.labels == ["grpo", "focal-g3", "grpo-dppo"]
    )
    assert len(suite.cells) == 12
    first = [(c.display_label, c.seed, c.task.name) for c in suite.cells[:4]]
    assert first == [("grpo", 0, "arithmetic"), ("grpo", 0, "countdown"), ("grpo", 1, "arithmetic"),
                     ("grpo", 1, "countdown")]  # fmt: skip
    focal = [c for c in suite.cells if c.display_label == "focal-g3"]
    assert {c.estimator for c in focal} == {"f_grpo"}
    assert {c.estimator_params["f_grpo"]["gamma"] for c in focal} == {3.0}
    assert {c.loss["name"] for c in suite.cells if c.display_label == "grpo-dppo"} == {"dppo"}
    assert {c.loss["name"] for c in suite.cells if c.display_label == "grpo"} == {"ppo_clip"}
    assert {c.trainer.steps for c in suite.cells} == {7}
    assert {r["label"] for r in suite.records()} == set(suite.labels)


def test_cli_overrides_apply_to_every_cell_and_the_hash_follows_the_cells(tmp_path):
    path = write(tmp_path, "matrix: {estimator: [grpo, rloo], seed: [0, 1]}\n")
    plain, changed = load_suite(path), load_suite(path, ["trainer.lr=1e-3"])
    assert {c.trainer.lr for c in changed.cells} == {1e-3}
    assert plain.hash == load_suite(path).hash != changed.hash
    # the label is a name only: it changes neither a cell's identity nor the suite's
    relabelled = write(
        tmp_path, "matrix: {estimator: [{name: grpo, label: g}, rloo], seed: [0, 1]}\n", "r.yaml"
    )
    assert load_suite(relabelled).hash == plain.hash
    assert config_hash(load_suite(relabelled).cells[0]) == config_hash(plain.cells[0])


@pytest.mark.parametrize(
    "text, message",
    [
        ("matrix: {estimator: [grpo]}\nsteps: 3\n", "unknown key(s) steps"),
        ("overrides: {}\n", "'matrix' must be a mapping with at least 'estimator'"),
        ("matrix: {estimator: [grpo], seeds: [0]}\n", "unknown matrix key(s) seeds"),
        ("matrix: {estimator: [grpo, grpo]}\n", "labels must be unique; repeated: grpo"),
        ("matrix: {estimator: [grpo]}\nreference: rloo\n", "reference 'rloo' is not one of the estimators"),
        ("matrix: {estimator: [{label: x}]}\n", "a mapping with keys name, label, params"),
        ("matrix: {estimator: [{name: grpo, params: 3}]}\n", "params of 'grpo' must be a mapping"),
        (
            "matrix: {estimator: [grpoo]}\n",
            "cell grpoo {}: config key 'estimator': unknown estimator 'grpoo'",
        ),
        ("matrix: {estimator: [{name: f_grpo, params: {gamma: -1}}]}\n", "gamma must be >= 0"),
        ("matrix: {estimator: [grpo], task: [nope]}\n", "unknown task 'nope'"),
        ("matrix: {estimator: [grpo]}\noverrides: {trainer: {stepz: 3}}\n", "did you mean 'steps'"),
        (
            "matrix: {estimator: [{name: grpo, label: a}, {name: grpo, label: b}]}\n",
            "two cells resolve to the same config",
        ),
        ("matrix: [grpo\n", "cannot read config file"),
    ],
)
def test_a_bad_suite_is_refused_with_the_file_and_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_suite(path)
    assert message in str(info.value)


def test_an_unknown_suite_name_lists_the_shipped_ones():
    with pytest.raises(
        ConfigError,
        match="suites: claim-difficulty, claim-fade, claim-mismatch, claim-rank, claim-sign, "
        "claim50-difficulty, claim50-fade, claim50-mismatch, claim50-sign, difficulty, "
        "fade-probes, gpu-50m, leaderboard-gpu, sign-axis, smoke",
    ):
        load_suite("nope")


def test_the_shipped_suites_expand():
    sizes = {
        "smoke": (4, 16),
        "sign-axis": (6, 18),
        "difficulty": (7, 21),
        "fade-probes": (6, 12),
        "trust-region": (4, 12),
        "gpu-50m": (3, 6),
    }
    for name, (estimators, cells) in sizes.items():
        suite = load_suite(name)
        assert (len(suite.labels), len(suite.cells)) == (estimators, cells), name
        assert {c.tracking.experiment for c in suite.cells} == {name}
    smoke = load_suite("smoke")
    assert smoke.labels == ["grpo", "rloo", "dr_grpo", "psr"] and {c.trainer.steps for c in smoke.cells} == {
        60
    }
    trust = load_suite("trust-region")
    assert [(c.loss["name"], c.seed) for c in trust.cells][::3] == [
        ("ppo_clip", 0), ("dppo", 0), ("drpo", 0), ("cispo", 0)]  # fmt: skip
    assert {c.trainer.update_epochs for c in trust.cells} == {4}
    assert {c.rollout.autocast for c in trust.cells} == {"bfloat16"}  # a real mismatch
    # the comparison suites time their peaks on arithmetic
    # (docs/results/statistics.md, "The comparison budget")
    for name in ("sign-axis", "difficulty", "fade-probes", "trust-region"):
        assert {c.task.name for c in load_suite(name).cells} == {"arithmetic"}, name
    # the 50M claim suites: 8 seeds, packed 32 at a time, the mismatch one a real bf16/fp32 mismatch
    for name, arms in (
        ("claim50-sign", 3),
        ("claim50-difficulty", 3),
        ("claim50-fade", 2),
        ("claim50-mismatch", 3),
    ):
        suite = load_suite(name)
        assert suite.pack == 32 and len(suite.cells) == 8 * arms, name
        assert all(c.trainer.packed and c.model.name == "50m" and c.trainer.steps == 50 for c in suite.cells)
        assert {c.tracking.experiment for c in suite.cells} == {"claims-50m"}
    mismatch = load_suite("claim50-mismatch").cells
    assert {(c.model.autocast, c.rollout.autocast, c.trainer.minibatches) for c in mismatch} == {
        ("none", "bfloat16", 4)
    }
    # the GPU leaderboard needs a local model: refused without one, 26 x 2 x 3 cells with one
    with pytest.raises(ConfigError, match="model.path' must be set"):
        load_suite("leaderboard-gpu")
    gpu = load_suite("leaderboard-gpu", ["model.path=/models/qwen"])
    assert len(gpu.cells) == 156 and {c.model.device for c in gpu.cells} == {"cuda"}
    # mixed precision: float32 master weights (an lr of 1e-6 is lost in bfloat16 weights), bf16 compute
    assert {(c.model.dtype, c.model.autocast) for c in gpu.cells} == {("float32", "bfloat16")}
    scale = load_suite(
        "gpu-50m"
    )  # expands on a machine without CUDA: the device is checked where a cell runs
    assert {(c.model.name, c.model.hidden_size, c.model.device) for c in scale.cells} == {
        ("50m", 512, "cuda")
    }
