"""Parameter-space distillation on real data and the real 135M student: masking, training, export, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def sft(expert_collection: Path, tmp_path_factory) -> Path:
    from duomem.distill.dataset import build_dataset

    out = tmp_path_factory.mktemp("sft")
    build_dataset(expert_collection / "demonstrations.jsonl", out, shots=0)
    return out


@pytest.fixture(scope="module")
def bundle(smollm2: str, needs_torch):
    from duomem.llm.hf import load_hf

    return load_hf(smollm2)


@pytest.fixture(scope="module")
def small_sft(sft: Path, tmp_path_factory) -> Path:
    """The first turns of the two shortest examples, for quick training runs."""
    rows = sorted(sft.joinpath("train.jsonl").read_text().splitlines(), key=len)[:2]
    out = tmp_path_factory.mktemp("sft_small")
    cut = [json.dumps({"messages": json.loads(r)["messages"][:6]}) for r in rows]
    (out / "train.jsonl").write_text("\n".join(cut) + "\n")
    return out


def test_dataset_has_the_agent_prompt(sft: Path, expert_collection: Path):
    from duomem.agent.prompts import INSTRUCTIONS, TURN_END

    meta = json.loads((sft / "dataset.json").read_text())
    demos = (expert_collection / "demonstrations.jsonl").read_text().splitlines()
    assert meta["examples"] == meta["trajectories"] == len(demos) and meta["source_policies"] == ["expert"]
    example = json.loads(sft.joinpath("train.jsonl").read_text().splitlines()[0])["messages"]
    assert example[0] == {"role": "system", "content": INSTRUCTIONS}
    assert example[1]["content"].startswith("### Your task\n") and example[1]["content"].endswith(TURN_END)
    assert example[2]["content"].startswith("think: To solve the task")
    assert example[-1]["role"] == "assistant"
    assert [m["role"] for m in example[1:]] == ["user", "assistant"] * ((len(example) - 1) // 2)


def test_masking_and_prompts_identical_to_inference(sft: Path, bundle, smollm2_model):
    from duomem.distill.dataset import load_examples
    from duomem.distill.tokenize import tokenize_example

    messages = load_examples(sft)[0]
    ex = tokenize_example(bundle, messages)
    assert len(ex.input_ids) == len(ex.labels)
    trained = [i for i, label in enumerate(ex.labels) if label != -100]
    n_assistant = sum(m["role"] == "assistant" for m in messages)
    decoded = bundle.tokenizer.decode([ex.input_ids[i] for i in trained])
    for m in messages:
        if m["role"] == "assistant":
            assert m["content"] in decoded
        elif m["role"] == "user" and len(m["content"]) > 20:
            assert m["content"] not in decoded
    assert decoded.count("<|im_end|>") == n_assistant  # each turn's end is learnt too
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt_ids = smollm2_model.tokenize(smollm2_model.render(messages[:i]))  # what llama.cpp is fed
        assert ex.input_ids[: len(prompt_ids)] == prompt_ids
        assert ex.labels[len(prompt_ids) - 1] == -100 and ex.labels[len(prompt_ids)] != -100


def test_parallel_tokenization_matches_one_at_a_time(sft: Path, bundle):
    """Worker processes (the tokenizer travels, not the weights) give every example the same ids and labels."""
    from duomem.distill.dataset import load_examples
    from duomem.distill.tokenize import tokenize_example, tokenize_examples

    examples = (load_examples(sft) * 64)[:64]
    parallel = tokenize_examples(bundle, examples, workers=2)
    assert bundle.model is not None  # the caller's bundle keeps its model
    one = [tokenize_example(bundle, m) for m in examples[:8]]
    assert [(e.input_ids, e.labels) for e in parallel[:8]] == [(e.input_ids, e.labels) for e in one]


def test_tiny_training_lowers_the_loss_and_exports(small_sft: Path, tmp_path: Path, smollm2: str):
    from duomem.distill.export import export_gguf_lora
    from duomem.distill.train import LoraConfig, train_lora

    config = LoraConfig(rank=8, epochs=5, learning_rate=1e-3, batch_size=2, save_steps=100, warmup_ratio=0.0)
    meta = train_lora(smollm2, small_sft, tmp_path / "adapter", config, threads=2)
    losses = [p["loss"] for p in meta["loss_curve"]]
    assert len(losses) == 5 and losses[-1] < 0.7 * losses[0]
    assert meta["trainable_params"] < 10_000_000 and meta["examples"] == 2
    saved = json.loads((tmp_path / "adapter" / "training.json").read_text())
    assert saved["data_sha256"] == meta["data_sha256"] and saved["base_model"] == smollm2
    info = export_gguf_lora(tmp_path / "adapter", tmp_path / "adapter.gguf")
    assert info["tensors"] == 30 * 7 * 2 and 1_000_000 < info["bytes"] < 20_000_000


def _random_adapter(smollm2: str, out: Path, seed: int) -> None:
    """A strong random rank-4 LoRA on every projection of the 135M, saved as a peft folder."""
    import torch
    from peft import LoraConfig, get_peft_model

    from duomem.llm.hf import load_hf

    model = load_hf(smollm2, for_training=True).model
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj",
                                                                                     "o_proj", "gate_proj", "up_proj",
                                                                                     "down_proj"]))
    g = torch.Generator().manual_seed(seed)
    for name, p in peft_model.named_parameters():
        if "lora_" in name:
            p.data = torch.randn(p.shape, generator=g) * 0.1
    peft_model.save_pretrained(str(out))
    (out / "training.json").write_text(json.dumps({"base_model": smollm2}))


def test_a_dequantised_gguf_is_kept_and_loads_back_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           smollm2: str, bundle):
    """With ``DUOMEM_DEQUANTISED_CACHE=1`` the first load keeps the dequantised weights and the next one reads them:
    the same tensors, tokens, chat template and logits as the GGUF dequantised afresh."""
    import torch

    from duomem.errors import ConfigError
    from duomem.llm.hf import dequantised_folder, encode, load_hf
    from duomem.llm.registry import resolve

    monkeypatch.setenv("DUOMEM_HOME", str(tmp_path))
    monkeypatch.setenv("DUOMEM_DEQUANTISED_CACHE", "1")
    kept = dequantised_folder(resolve(smollm2), "float32")
    load_hf(smollm2)
    assert (kept / "config.json").is_file() and (kept / "model.safetensors").is_file()
    again = load_hf(smollm2)
    assert again.model.name_or_path == str(kept)
    want, got = bundle.model.state_dict(), again.model.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    assert (again.chat_template, again.add_bos) == (bundle.chat_template, bundle.add_bos)
    text = "think: go to cabinet 1\nYou arrive at cabinet 1."
    ids = encode(bundle, text)
    assert encode(again, text) == ids
    with torch.no_grad():
        assert torch.equal(bundle.model(torch.tensor([ids])).logits, again.model(torch.tensor([ids])).logits)
    monkeypatch.setenv("DUOMEM_DEQUANTISED_CACHE", "yes")
    with pytest.raises(ConfigError, match="DUOMEM_DEQUANTISED_CACHE"):
        load_hf(smollm2)


def test_export_matches_transformers(tmp_path: Path, smollm2: str, bundle):
    """A strong random adapter: llama.cpp with the exported GGUF LoRA must follow transformers + peft."""
    import torch
    from llama_cpp import Llama

    from duomem.distill.export import export_gguf_lora
    from duomem.llm.hf import attach_adapter, encode, load_hf
    from duomem.llm.llamacpp import load_defaults, plain_weights_needed
    from duomem.llm.registry import resolve

    _random_adapter(smollm2, tmp_path / "rand", seed=0)
    export_gguf_lora(tmp_path / "rand", tmp_path / "rand.gguf")
    text = "<|im_start|>user\nGo to the desk 1 and take the mug 1.<|im_end|>\n<|im_start|>assistant\n"
    ids = encode(bundle, text)
    with torch.no_grad():
        want = attach_adapter(load_hf(smollm2).model, str(tmp_path / "rand"))(torch.tensor([ids])).logits[0, -1]
    path = str(resolve(smollm2).path)

    def llama_logits(lora: str | None) -> np.ndarray:
        with load_defaults(None, plain_weights=plain_weights_needed(lora is not None)):  # as duomem loads it
            llm = Llama(model_path=path, lora_path=lora, n_ctx=256, logits_all=True, verbose=False, n_threads=2)
        llm.eval(ids)
        return np.array(llm.scores[len(ids) - 1])

    with_lora, base = llama_logits(str(tmp_path / "rand.gguf")), llama_logits(None)
    corr = float(np.corrcoef(want.numpy(), with_lora)[0, 1])
    corr_base = float(np.corrcoef(want.numpy(), base)[0, 1])
    assert corr > 0.99 and corr > corr_base + 0.02, (corr, corr_base)


def test_a_gguf_lora_imports_back_to_peft(tmp_path: Path, smollm2: str, bundle):
    """export_gguf_lora then import_gguf_lora gives the adapter back (up to f16): a LoRA shipped only as GGUF plays
    on the transformers backend with the weights llama.cpp plays."""
    import torch
    from safetensors.torch import load_file

    from duomem.distill.export import export_gguf_lora
    from duomem.llm.hf import attach_adapter, encode, load_hf
    from duomem.llm.lora_gguf import import_gguf_lora

    _random_adapter(smollm2, tmp_path / "rand", seed=1)
    export_gguf_lora(tmp_path / "rand", tmp_path / "rand.gguf")
    info = import_gguf_lora(tmp_path / "rand.gguf", tmp_path / "back", smollm2)
    assert info["rank"] == 4 and info["alpha"] == 8 and info["tensors"] == 30 * 7 * 2
    want, got = load_file(str(tmp_path / "rand" / "adapter_model.safetensors")), \
        load_file(str(tmp_path / "back" / "adapter_model.safetensors"))
    assert set(got) == set(want)
    for name, tensor in want.items():  # the q/k row order is undone exactly; values up to f16 rounding
        assert torch.allclose(got[name], tensor.float(), atol=1e-3, rtol=1e-3), name
    ids = torch.tensor([encode(bundle, "<|im_start|>user\nGo to the desk 1.<|im_end|>\n<|im_start|>assistant\n")])
    with torch.no_grad():
        a = attach_adapter(load_hf(smollm2).model, str(tmp_path / "rand"))(ids).logits[0, -1]
        b = attach_adapter(load_hf(smollm2).model, str(tmp_path / "back"))(ids).logits[0, -1]
    assert float(torch.corrcoef(torch.stack([a, b]))[0, 1]) > 0.9999


def test_shipped_lora_at_q8_0_is_smaller_and_llamacpp_follows_the_f16_one(tmp_path: Path, smollm2: str):
    """A shipped GGUF LoRA read back to peft and written at f16 is the same file, byte for byte; written at q8_0
    (lora_a quantised, lora_b kept f16: its rows are the rank) it is a quarter smaller and llama.cpp gives the
    logits it gives with the f16 file."""
    import gguf
    from llama_cpp import Llama

    from duomem.distill.export import export_gguf_lora
    from duomem.eval.students import get_student
    from duomem.llm.llamacpp import load_defaults, plain_weights_needed
    from duomem.llm.lora_gguf import peft_folder_for
    from duomem.llm.registry import resolve

    shipped = get_student("smollm2-135m-lora")
    peft = peft_folder_for(shipped.adapter_path, smollm2)
    f16 = export_gguf_lora(peft, tmp_path / "f16.gguf", base_model=smollm2)
    q8 = export_gguf_lora(peft, tmp_path / "q8.gguf", base_model=smollm2, dtype="q8_0")
    assert (tmp_path / "f16.gguf").read_bytes() == shipped.adapter_path.read_bytes()
    kinds = {t.name.rsplit(".", 1)[1]: t.tensor_type.name for t in gguf.GGUFReader(q8["path"]).tensors}
    assert kinds == {"lora_a": "Q8_0", "lora_b": "F16"} and q8["bytes"] < 0.8 * f16["bytes"]
    text = "<|im_start|>user\nYou are in the middle of a room. Your task is to: put a mug in desk.<|im_end|>\n" \
           "<|im_start|>assistant\n"
    logits = []
    for path in (f16["path"], q8["path"]):
        with load_defaults(None, plain_weights=plain_weights_needed(True)):
            llm = Llama(model_path=str(resolve(smollm2).path), lora_path=path, n_ctx=256, logits_all=True,
                        verbose=False, n_threads=2)
        ids = llm.tokenize(text.encode(), add_bos=False, special=True)
        llm.eval(ids)
        logits.append(np.array(llm.scores[len(ids) - 1]))
    assert float(np.corrcoef(*logits)[0, 1]) > 0.995  # 0.9989 measured
    assert int(np.argmax(logits[0])) == int(np.argmax(logits[1]))


@pytest.mark.slow
def test_full_fine_tune_trains_and_exports_a_gguf_model_llamacpp_follows(small_sft: Path, tmp_path: Path,
                                                                         smollm2: str, bundle):
    """``method: full`` trains every weight; the merged GGUF (the base model's metadata, the tuned weights) loads
    in llama.cpp and gives the logits transformers gives, where the base model does not."""
    import torch
    from llama_cpp import Llama

    from duomem.distill.export import export_gguf_model
    from duomem.distill.train import LoraConfig, train_lora
    from duomem.llm.hf import encode, load_hf
    from duomem.llm.llamacpp import load_defaults, plain_weights_needed

    config = LoraConfig(method="full", epochs=2, learning_rate=1e-4, batch_size=2, save_steps=100, warmup_ratio=0.0)
    meta = train_lora(smollm2, small_sft, tmp_path / "full", config, threads=2)
    losses = [p["loss"] for p in meta["loss_curve"]]
    assert meta["method"] == "full" and meta["trainable_params"] == meta["total_params"] > 100_000_000
    assert len(losses) == 2 and losses[-1] < losses[0] and (tmp_path / "full" / "model.safetensors").is_file()
    # a strong change of every weight, so that following it is a real test of the export
    model = load_hf(smollm2, for_training=True).model
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * p.std() * 0.3)
    model.save_pretrained(str(tmp_path / "rand"))
    (tmp_path / "rand" / "training.json").write_text(json.dumps({"base_model": smollm2}))
    text = "<|im_start|>user\nGo to the desk 1 and take the mug 1.<|im_end|>\n<|im_start|>assistant\n"
    ids = encode(bundle, text)
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0, -1].numpy()
        base = bundle.model(torch.tensor([ids])).logits[0, -1].numpy()
    # q8_0 of weights this noisy amplifies rounding: 0.980 measured here, 0.955 on the CI machine's CPU
    for quant, least in (("f16", 0.999), ("q8_0", 0.9)):
        info = export_gguf_model(tmp_path / "rand", tmp_path / f"rand-{quant}.gguf", quant=quant)
        assert info["tensors"] == 272 and info["quant"] == quant
        with load_defaults(None, plain_weights=plain_weights_needed(False)):  # as duomem loads it
            llm = Llama(model_path=info["path"], n_ctx=256, logits_all=True, verbose=False, n_threads=2)
        llm.eval(ids)
        got = np.array(llm.scores[len(ids) - 1])
        corr = float(np.corrcoef(want, got)[0, 1])
        assert corr > least and corr > float(np.corrcoef(base, got)[0, 1]) + 0.05, (quant, corr)
    exported = export_gguf_model(tmp_path / "full", tmp_path / "full.gguf")
    assert 100e6 < exported["bytes"] < 200e6  # q8_0 of 135M parameters


@pytest.mark.slow
def test_training_that_diverges_stops_with_one_line_and_saves_nothing_after(small_sft: Path, tmp_path: Path,
                                                                            smollm2: str):
    """A learning rate no weight survives: the first gradient norm that is not finite ends training with one line
    (exit 2), and no checkpoint or adapter holds the NaN weights (the last checkpoint is from the step before)."""
    out = tmp_path / "adapter"
    done = subprocess.run([sys.executable, "-m", "duomem.cli", "distill", "train", "--model", smollm2, "--data",
                           str(small_sft), "--out", str(out), "--max-steps", "3", "--batch-size", "1",
                           "--save-steps", "1", "--rank", "4", "--lr", "1e30", "--threads", "2"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 2, done.stderr[-2000:]
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: training diverged (grad_norm nan at step 3)") and "--lr" in line
    assert not (out / "adapter_model.safetensors").exists() and not (out / "training.json").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-1", "checkpoint-2"]


def test_training_resumes_after_kill(small_sft: Path, tmp_path: Path, smollm2: str):
    out = tmp_path / "adapter"
    cmd = [sys.executable, "-m", "duomem.cli", "distill", "train", "--model", smollm2, "--data", str(small_sft),
           "--out", str(out), "--max-steps", "3", "--batch-size", "1", "--save-steps", "1", "--rank", "4",
           "--threads", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    deadline = time.time() + 600
    while time.time() < deadline and not (out / "checkpoints" / "checkpoint-1").is_dir():
        time.sleep(0.5)
    time.sleep(1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "training.json").exists()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    meta = json.loads((out / "training.json").read_text())
    assert meta["steps"] == 3 and meta["resumed_from"] and "checkpoint-" in meta["resumed_from"]
    changed = subprocess.run([*cmd[:-4], "--rank", "8", "--threads", "2"], capture_output=True, text=True)
    assert changed.returncode == 2 and "other data or settings" in changed.stderr


@pytest.mark.slow
def test_data_parallel_training_on_cpu(small_sft: Path, tmp_path: Path, smollm2: str):
    """`--nproc 2` runs two torchrun ranks (gloo on CPU here; NCCL, one per GPU, with --device cuda)."""
    out = tmp_path / "ddp"
    done = subprocess.run([sys.executable, "-m", "duomem.cli", "distill", "train", "--model", smollm2, "--data",
                           str(small_sft), "--out", str(out), "--max-steps", "1", "--batch-size", "1", "--rank", "4",
                           "--nproc", "2"], capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((out / "training.json").read_text())
    assert meta["world_size"] == 2 and meta["steps"] == 1
    assert (out / "adapter_model.safetensors").is_file()


@pytest.mark.gpu
def test_lora_on_cuda(small_sft: Path, tmp_path: Path, smollm2: str):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from duomem.distill.train import LoraConfig, train_lora

    meta = train_lora(smollm2, small_sft, tmp_path / "a", LoraConfig(rank=8, max_steps=3, batch_size=2),
                      device="cuda")
    assert meta["steps"] == 3 and meta["device"] == "cuda"


def test_training_raises_no_library_warnings(tmp_path: Path, smollm2: str, needs_torch):
    """transformers' renamed training argument is passed under its new name; peft's notes that a user cannot act on
    (a renamed property, a base-model config.json that a packaged GGUF does not have) are silenced, exactly those."""
    import warnings

    from duomem.distill.train import LoraConfig, train_lora

    turns = [{"role": "system", "content": "You play a text game."},
             {"role": "user", "content": "Your task is to: put a mug in coffeemachine."},
             {"role": "assistant", "content": "go to countertop 1"},
             {"role": "user", "content": "On the countertop 1, you see a mug 1."},
             {"role": "assistant", "content": "take mug 1 from countertop 1"}]
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "train.jsonl").write_text(json.dumps({"messages": turns}) + "\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_lora(smollm2, tmp_path / "sft", tmp_path / "adapter", LoraConfig(rank=4, max_steps=1, batch_size=1,
                                                                               save_steps=1), threads=1)
    noise = [f"{w.category.__name__}: {w.message}" for w in caught
             if any(lib in w.filename for lib in ("transformers", "peft"))]
    assert noise == []
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()


def test_trained_token_loss_is_the_models_own_loss(small_sft: Path, bundle):
    """Training computes the output layer on the trained tokens only: the loss (and its normalisation over an
    accumulated batch) is the model's own."""
    import torch

    from duomem.distill.dataset import load_examples
    from duomem.distill.tokenize import tokenize_example
    from duomem.distill.train import _collate, trained_token_loss

    rows = [tokenize_example(bundle, m) for m in load_examples(small_sft)]
    batch = _collate(bundle.tokenizer.pad_token_id)([{"input_ids": r.input_ids, "labels": r.labels} for r in rows])
    n = int((batch["labels"][:, 1:] != -100).sum())
    with torch.no_grad():
        assert torch.allclose(trained_token_loss(bundle.model, batch), bundle.model(**batch).loss, rtol=1e-4)
        assert torch.allclose(trained_token_loss(bundle.model, batch, 3 * n),
                              bundle.model(**batch, num_items_in_batch=3 * n).loss, rtol=1e-4)
