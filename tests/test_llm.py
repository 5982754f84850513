"""Model registry and the llama.cpp backend on the packaged SmolLM2-135M."""

from __future__ import annotations

import re

import pytest

from duomem.errors import ModelError
from duomem.llm.registry import PACKAGED, PackagedModel, gguf_path, resolve


def test_unknown_model_lists_known_ones():
    with pytest.raises(ModelError, match="smollm2-135m"):
        resolve("gpt-17")


def test_missing_package_gives_pip_command():
    fake = PackagedModel(name="x", description="", pip_install="pip install no-such-model-pkg==1.0",
                         modules=("no_such_model_pkg",), parts=("m.gguf",), sha256="0", hf_repo="x/y")
    with pytest.raises(ModelError, match=re.escape("pip install no-such-model-pkg==1.0")):
        gguf_path(fake)


def test_a_placed_model_file_needs_no_package(tmp_path, monkeypatch):
    """A machine without network gets a model as a file (scripts/parts.py): placed in DUOMEM_HOME/models with its
    checked hash stamped beside it, it is used without the package; a stamp of another hash is not trusted."""
    from duomem.llm.registry import models_dir

    monkeypatch.setenv("DUOMEM_HOME", str(tmp_path))
    fake = PackagedModel(name="x", description="", pip_install="pip install no-such-model-pkg==1.0",
                         modules=("no_such_model_pkg",), parts=("m.gguf",), sha256="ab" * 32, hf_repo="x/y")
    placed = models_dir() / "x.gguf"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"GGUF")
    placed.with_suffix(".sha256").write_text("cd" * 32)
    with pytest.raises(ModelError, match="no-such-model-pkg"):
        gguf_path(fake)
    placed.with_suffix(".sha256").write_text("ab" * 32)
    assert gguf_path(fake) == placed


def test_other_names(tmp_path):
    assert resolve("hf:HuggingFaceTB/SmolLM2-135M-Instruct").kind == "hf"
    ref = resolve("openai:qwen@http://localhost:8000/v1")
    assert (ref.kind, ref.hf_id, ref.url) == ("openai", "qwen", "http://localhost:8000/v1")
    with pytest.raises(ModelError, match="openai:MODEL@"):
        resolve("openai:qwen")
    with pytest.raises(ModelError, match="does not exist"):
        resolve(str(tmp_path / "none.gguf"))


def test_packaged_model_resolves(smollm2):
    ref = resolve(smollm2)
    assert ref.kind == "gguf" and ref.path.name.endswith(".gguf") and ref.packaged is PACKAGED[smollm2]


def test_greedy_and_kv_reuse(smollm2_model):
    messages = [{"role": "system", "content": "Answer with one word."},
                {"role": "user", "content": "What colour is the sky on a clear day?"}]
    a = smollm2_model.complete(messages, max_tokens=8, stop=["\n"])
    b = smollm2_model.complete(messages, max_tokens=8, stop=["\n"])
    assert a.text == b.text and a.completion_tokens > 0
    assert b.cached_tokens >= a.prompt_tokens - 1  # the same prompt again: served from the cache
    longer = [*messages, {"role": "assistant", "content": a.text}, {"role": "user", "content": "And at night?"}]
    c = smollm2_model.complete(longer, max_tokens=8, stop=["\n"])
    assert c.cached_tokens >= a.prompt_tokens  # the history only grew: its prefix is reused
    assert smollm2_model.count_tokens(longer) == c.prompt_tokens


def test_context_overflow_is_a_clear_error(smollm2_model):
    huge = [{"role": "user", "content": "word " * 5000}]
    with pytest.raises(ModelError, match="exceeds the context"):
        smollm2_model.complete(huge, max_tokens=8)


def test_decode_speed(smollm2_model):
    speed = smollm2_model.decode_speed(n_tokens=16, context=300)
    assert speed["decode_tokens"] == 16 and speed["decode_tokens_per_s"] > 0 and speed["prompt_tokens_per_s"] > 0
    assert speed["prompt_tokens"] == 300  # the prefill rate of a real prompt length, not of a 4-token prompt


def test_batched_generation_matches_one_at_a_time(smollm2, monkeypatch):
    """complete_batch (length-sorted micro-batches, per-row stop strings) gives each row what complete gives it."""
    from duomem.llm import load_chat_model

    monkeypatch.setenv("DUOMEM_BATCH_TOKENS", "80")  # forces several micro-batches
    model = load_chat_model(smollm2, backend="transformers", device="cpu")
    assert model.batch_token_budget == 80
    convs = [
        [{"role": "user", "content": "Name one fruit."}],
        [{"role": "system", "content": "You play a text game. Answer with one action."},
         {"role": "user", "content": "You are in a kitchen. There is a fridge and a mug.\n>"}],
        [{"role": "user", "content": "Count from one to five, one word per line, then stop."}],
    ]
    batched = model.complete_batch(convs, max_tokens=12, stop=["\n>", "five"])
    single = []
    for conv in convs:
        single.append(model.complete(conv, max_tokens=12, stop=["\n>", "five"]))
    assert [c.text for c in batched] == [c.text for c in single]
    assert [c.prompt_tokens for c in batched] == [c.prompt_tokens for c in single]
    model.close()


@pytest.mark.parametrize("raw", ["abc", "0", "-5", "1e6"])
def test_bad_batch_token_budget_is_one_clear_error(raw: str, monkeypatch):
    from duomem.errors import ConfigError
    from duomem.eval.spec import RolloutSpec

    monkeypatch.setenv("DUOMEM_BATCH_TOKENS", raw)
    with pytest.raises(ConfigError, match="DUOMEM_BATCH_TOKENS"):
        RolloutSpec(policy="llm", model="smollm2-135m")
