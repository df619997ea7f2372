"""reasoning-gym's procedural datasets as tasks (their items cached on disk)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from advbench.harness.config import ConfigError, TaskConfig
from advbench.harness.files import replaced
from advbench.harness.tasks.base import (
    Prompt,
    Task,
    source,
)


@source("reasoning_gym")
class ReasoningGymTask(Task):
    """A reasoning-gym procedural dataset, scored by reasoning-gym's own ``score_answer``."""

    def __init__(self, cfg: TaskConfig, cache_dir: str | os.PathLike[str]) -> None:
        import reasoning_gym

        super().__init__(cfg)
        try:
            self._score_fn = reasoning_gym.get_score_answer_fn(cfg.dataset)
        except Exception:
            raise ConfigError(
                f"config key 'task.dataset': unknown reasoning-gym dataset '{cfg.dataset}'"
            ) from None
        self._splits = self._load_splits(Path(cache_dir).expanduser() / "tasks")

    # -- data ------------------------------------------------------------------------------

    def _generate(self, size: int, seed: int) -> list[dict[str, Any]]:
        import reasoning_gym

        params = OmegaConf.to_container(OmegaConf.create(self.cfg.params)) if self.cfg.params else {}
        try:
            dataset = reasoning_gym.create_dataset(self.cfg.dataset, size=size, seed=seed, **params)
        except (TypeError, ValueError, AssertionError) as exc:
            raise ConfigError(
                f"config key 'task.params': reasoning-gym '{self.cfg.dataset}' refused them: {exc}"
            ) from None
        # A JSON round trip makes cached and freshly generated items identical (tuples -> lists).
        return json.loads(json.dumps([dataset[i] for i in range(size)], default=str))

    def _load_splits(self, cache: Path) -> dict[str, list[dict[str, Any]]]:
        key = {
            k: v
            for k, v in OmegaConf.to_container(OmegaConf.structured(self.cfg)).items()
            if k in ("dataset", "params", "train_size", "eval_size", "data_seed")
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        path = cache / f"{self.cfg.dataset}-{digest}.json"
        if path.is_file():
            return json.loads(path.read_text())
        eval_items = self._generate(self.cfg.eval_size, self.cfg.data_seed)
        eval_questions = {item["question"] for item in eval_items}
        # The train seed is derived from data_seed so the two splits are different draws.
        train_items = [
            item
            for item in self._generate(self.cfg.train_size, self.cfg.data_seed + 1_000_003)
            if item["question"] not in eval_questions
        ]
        splits = {"train": train_items, "eval": eval_items}
        with replaced(path) as staging:  # a concurrent run never reads half a file
            staging.write_text(json.dumps(splits))
        return splits

    def _render(self, entry: dict[str, Any]) -> Prompt:
        text = self._format({**entry.get("metadata", {}), "question": entry["question"]})
        return Prompt(text=text, answer=str(entry["answer"]), entry=entry)
