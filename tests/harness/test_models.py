import pytest
from transformers import AutoTokenizer

from advbench.harness.config import ModelConfig
from advbench.harness.models import build_tiny, fit_tokenizer

TEXTS = ["12 + 3 - 45=", "18:[3, 4, 5]=3*4+5", "<answer>7</answer>\n"]


def test_tokenizer_is_character_level_over_the_fitted_alphabet():
    tokenizer = fit_tokenizer(TEXTS)
    ids = tokenizer("12 + 3=", add_special_tokens=False)["input_ids"]
    assert len(ids) == len("12 + 3=")
    assert tokenizer.decode(ids) == "12 + 3="
    assert len(tokenizer) == 2 + len(set("".join(TEXTS)))  # pad, eos and the characters


def test_saved_tokenizer_encodes_the_same_through_auto_tokenizer(tmp_path):
    # Regression: transformers 5 picks the tokenizer class from the model type (Qwen2Tokenizer),
    # which once dropped spaces from prompts the model was trained on.
    for architecture in ("qwen2", "llama"):
        tokenizer = fit_tokenizer(TEXTS)
        model = build_tiny(
            ModelConfig(
                architecture=architecture,
                hidden_size=32,
                num_heads=2,
                num_kv_heads=1,
                intermediate_size=64,
                num_layers=1,
            ),
            tokenizer,
        )
        path = tmp_path / architecture
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        loaded = AutoTokenizer.from_pretrained(path)
        for text in TEXTS:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            assert loaded(text, add_special_tokens=False)["input_ids"] == ids
            assert loaded.decode(ids) == text
        assert (loaded.eos_token_id, loaded.pad_token_id) == (tokenizer.eos_token_id, tokenizer.pad_token_id)


@pytest.mark.parametrize("pinned", [True, False])
def test_the_warm_start_does_not_depend_on_the_runners_thread_count(tmp_path, monkeypatch, pinned):
    """Built with 1 thread or with 2, the cached weights are the same (pinned=False shows why it matters)."""
    import torch

    from advbench.harness import tasks, warmstart
    from advbench.harness.config import load

    weights = []
    for threads in (1, 2):
        if not pinned:
            monkeypatch.setattr(
                warmstart, "WARMSTART_THREADS", threads
            )  # the old behaviour: the runner's count
        (cfg,) = load(
            [f"cache_dir={tmp_path / str(threads)}", "model.warmstart.steps=150", "task.train_size=800"]
        )
        torch.set_num_threads(threads)
        try:
            task = tasks.build(cfg.task, cfg.cache_dir)
            weights.append(warmstart.load_policy(cfg.model, task, cfg.cache_dir).model.state_dict())
        finally:
            torch.set_num_threads(2)
    gap = max(float((weights[0][k] - weights[1][k]).abs().max()) for k in weights[0])
    if not pinned and gap == 0.0:
        # Seen on an AMD EPYC (Intel Xeons differ): its kernels split these sums the same either way.
        pytest.skip("on this CPU the thread count does not change the warm start: nothing to show")
    assert (gap == 0.0) if pinned else (gap > 0.0)


def test_the_default_warm_start_is_the_shipped_one_copied_not_built(tmp_path, monkeypatch):
    """The default config finds its shipped warm start (so a config change that moves its key fails
    here, not as a baseline mismatch on another CPU), nothing stale ships, and the copy is exact."""
    from advbench.harness import tasks, warmstart
    from advbench.harness.config import load

    (cfg,) = load([f"cache_dir={tmp_path}"])
    task = tasks.build(cfg.task, cfg.cache_dir)
    name = warmstart.tiny_cache_name(cfg.model, task)
    shipped = {p.name for p in warmstart.SHIPPED_WARMSTARTS.iterdir() if p.is_dir()}
    assert shipped == {name}, "rebuild the shipped warm start (docs/concepts/loop.md)"

    def refuse(*args, **kwargs):
        raise AssertionError("the default warm start was built, not copied")

    monkeypatch.setattr(warmstart, "warm_start", refuse)
    path = warmstart.load_tiny(cfg.model, task, cfg.cache_dir)
    source = warmstart.SHIPPED_WARMSTARTS / name
    assert sorted(p.name for p in path.iterdir()) == sorted(p.name for p in source.iterdir())
    for file in source.iterdir():
        assert (path / file.name).read_bytes() == file.read_bytes()
    assert not list(path.parent.glob(".staging-*"))  # the staging folder was moved into place


def test_a_config_with_no_shipped_warm_start_builds_its_own(tmp_path):
    from advbench.harness import tasks, warmstart
    from advbench.harness.config import load

    (cfg,) = load([f"cache_dir={tmp_path}", "model.warmstart.steps=3"])
    task = tasks.build(cfg.task, cfg.cache_dir)
    path = warmstart.load_tiny(cfg.model, task, cfg.cache_dir)
    assert not (warmstart.SHIPPED_WARMSTARTS / path.name).exists()
    assert '"steps": 3' in (path / "warmstart.json").read_text()
