"""README's snippets are code a newcomer pastes: they must run as written."""

import re
from pathlib import Path

import torch

from advbench import estimators
from advbench.estimators import registry
from advbench.estimators.registry import AdvantageBatch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_estimator_snippet_runs_as_written_and_registers():
    (snippet,) = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    with registry.temporary():
        exec(compile(snippet, "README.md", "exec"), {"__name__": "readme_snippet"})
        est = estimators.get("my_estimator")
        rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
        advantages = est(AdvantageBatch(rewards=rewards), beta=0.3)
    assert torch.allclose(advantages, torch.tensor([[0.15, -0.15, -0.15, 0.15]]))
    assert "my_estimator" not in estimators.names()  # forgotten after the block


def test_readme_commands_are_the_ones_ci_runs():
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    assert "pip install -e '.[test]' && python -m pytest" in text
    assert "\npython -m pytest\n" in ci  # the test command of README, exactly
