"""Plugins (harness/plugins.py): the example package's estimator, loss and task, reached by
--plugin with a path and through installed entry points, and the errors a bad plugin gives."""

import shutil
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from advbench.estimators import registry
from advbench.harness import losses, plugins
from advbench.harness.cli import main
from advbench.harness.config import ConfigError, load

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "advbench-example-plugin"
PLUGIN_FILE = EXAMPLE / "advbench_example" / "plugin.py"


@pytest.fixture
def forget():
    """What a test's plugins register is gone after it, and their modules may be imported again."""
    plugins._import.cache_clear()
    with registry.temporary(), losses.temporary():
        yield
    plugins._import.cache_clear()
    for name in [m for m in sys.modules if m.startswith(("advbench_example", "advbench_plugin_"))]:
        del sys.modules[name]


def test_a_plugin_given_by_path_trains_and_is_recorded(fast_overrides, tmp_path, forget):
    args = [
        "run",
        "--plugin",
        str(PLUGIN_FILE),
        *fast_overrides,
        "estimator=median_baseline",
        "trainer.steps=2",
    ]
    assert main(args) == 0
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs(
        [client.get_experiment_by_name("advbench").experiment_id], "tags.`advbench.kind` = 'run'"
    )
    assert run.data.params["estimator"] == "median_baseline"
    assert run.data.params["plugins"] == str([str(PLUGIN_FILE)])
    assert run.data.params["code.estimator"] == registry.get("median_baseline").identity
    assert len(client.get_metric_history(run.info.run_id, "train/reward_mean")) == 2


@pytest.fixture
def installed(tmp_path, monkeypatch, forget):
    """The example package as pip would lay it out: its code and a dist-info with its entry points,
    in a folder on sys.path (importlib.metadata reads it as an installed distribution)."""
    site = tmp_path / "site"
    shutil.copytree(EXAMPLE / "advbench_example", site / "advbench_example")
    info = site / "advbench_example_plugin-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: advbench-example-plugin\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(
        "[advbench.plugins]\nexample = advbench_example.plugin\n\n"
        "[advbench.configs]\nexample = advbench_example.configs\n"
    )
    monkeypatch.syspath_prepend(str(site))
    plugins.declared_entry_points.cache_clear()  # read once a process: this test installs one
    yield site
    plugins.declared_entry_points.cache_clear()


def test_an_installed_plugin_brings_its_estimator_loss_and_task(installed):
    assert plugins.entry_point_modules() == ["advbench_example.plugin"]
    (cfg,) = load(["estimator=median_baseline", "loss=vanilla_pg", "task=two_term_sums"])
    chosen = (cfg.estimator, cfg.loss["name"], cfg.task.dataset)
    assert chosen == ("median_baseline", "vanilla_pg", "chain_sum")
    assert cfg.loss["advantage_clip"] == 5.0 and cfg.task.params["max_terms"] == 2
    assert cfg.code["loss"] == losses.get("vanilla_pg").identity
    with pytest.raises(ConfigError, match="advantage_clip must be > 0"):
        load(["loss=vanilla_pg", "loss.advantage_clip=0"])


def test_a_misspelt_plugin_estimator_is_named_with_the_plugins_choices(installed):
    hint = r"unknown estimator 'median_baseln' \(did you mean 'median_baseline'"
    with pytest.raises(ConfigError, match=hint):
        load(["estimator=median_baseln"])


def test_a_bad_plugin_is_a_config_error_naming_it(tmp_path, forget):
    with pytest.raises(ConfigError, match="config key 'plugins': no file 'nowhere.py'"):
        load(["plugins=[nowhere.py]"])
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('half-written plugin')\n")
    with pytest.raises(
        ConfigError, match=r"'plugins': plugin '.*broken.py' failed to load: RuntimeError: half-written"
    ):
        load([f"plugins=[{broken}]"])
    with pytest.raises(
        ConfigError, match="config key 'plugins': no module 'no_such_plugin_module' is installed"
    ):
        load(["plugins=[no_such_plugin_module]"])
