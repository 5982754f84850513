"""Hugging Face transformers backend: HF checkpoints or packaged GGUF files (dequantised by transformers), with
optional peft adapters, on CPU or CUDA. Also serves batched generation for many episodes at once."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from duomem import settings
from duomem.errors import ModelError
from duomem.llm.base import Candidate, Completion, Constraint, Message, ScoreRequest, Scores
from duomem.llm.chat_template import render_chat
from duomem.llm.constrain import (
    ChoiceLogitsProcessor,
    ChoiceTrie,
    constraint_candidates,
    continuation_ids,
    turn_shape,
)
from duomem.llm.registry import ModelRef, gguf_metadata, resolve


@dataclass
class HFBundle:
    """A loaded model with what is needed to prompt it exactly as the llama.cpp backend does."""

    model: Any
    tokenizer: Any
    chat_template: str | None
    add_bos: bool
    name: str


def _quiet_transformers() -> None:
    settings.quiet_hub()
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    # the GGUF loader draws its own tqdm bar ("Converting and de-quantizing GGUF tensors"), outside hf_logging
    from transformers import modeling_gguf_pytorch_utils as gguf_loading

    if hasattr(gguf_loading, "tqdm"):
        gguf_loading.tqdm = lambda items, *args, **kwargs: items


def load_hf(ref: ModelRef | str, device: str = "cpu", dtype: str = "auto", for_training: bool = False) -> HFBundle:
    """Load weights and tokenizer. A GGUF model is dequantised (fp32 on CPU, bf16 on CUDA unless ``dtype``)."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ModelError("the transformers backend needs torch and transformers: pip install torch==2.13.0 "
                         "'duomem[train]'") from exc
    _quiet_transformers()
    ref = resolve(ref) if isinstance(ref, str) else ref
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for but torch sees no CUDA device")
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    kwargs: dict[str, Any] = {}
    keep: Path | None = None
    if ref.kind == "gguf":
        assert ref.path is not None
        source, kwargs["gguf_file"] = str(ref.path.parent), ref.path.name
        meta = gguf_metadata(ref.path, ("tokenizer.chat_template", "tokenizer.ggml.add_bos_token"))
        template = meta.get("tokenizer.chat_template")
        add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False))
        if settings.dequantised_cache(device):
            keep = dequantised_folder(ref, str(torch_dtype).removeprefix("torch."))
            if (keep / "config.json").is_file():
                source, kwargs, keep = str(keep), {}, None
    elif ref.kind == "hf":
        source = ref.hf_id or ""
        template, add_bos = None, False
    else:
        raise ModelError(f"{ref.name} cannot be loaded with transformers")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **kwargs)
    except OSError as exc:
        raise ModelError(f"cannot load {ref.name} with transformers ({str(exc).splitlines()[0]}); without network "
                         "use a packaged model name") from exc
    if ref.kind == "hf":
        template = tokenizer.chat_template
        add_bos = bool(getattr(tokenizer, "add_bos_token", False))
    if getattr(model, "hf_quantizer", None) is not None:
        # transformers tags GGUF-loaded models as quantised; the weights are plain dequantised tensors.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    if keep is not None:
        _keep_dequantised(model, tokenizer, keep)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    if not for_training:
        model.eval()
    return HFBundle(model=model, tokenizer=tokenizer, chat_template=template, add_bos=add_bos, name=ref.name)


def dequantised_folder(ref: ModelRef, dtype: str) -> Path:
    """Where a GGUF model's dequantised weights are kept for transformers (``DUOMEM_HOME/cache/dequantised``), keyed
    by the file (a packaged model's sha256, else its path, size and modification time) and the dtype."""
    assert ref.path is not None
    if ref.packaged is not None:
        key = ref.packaged.sha256
    else:
        stat = ref.path.stat()
        key = f"{ref.path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    digest = hashlib.sha256(f"{key}:{dtype}".encode()).hexdigest()[:16]
    return settings.duomem_home() / "cache" / "dequantised" / f"{ref.name}-{dtype}-{digest}"


def _keep_dequantised(model: Any, tokenizer: Any, out: Path) -> None:
    """Save a freshly dequantised model and its tokenizer to ``out`` (written beside it, then renamed, so a process
    loading at the same time sees the whole folder or none)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        os.replace(tmp, out)
    except OSError:  # another process kept it first
        shutil.rmtree(tmp, ignore_errors=True)


def render(bundle: HFBundle, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
    if not bundle.chat_template:
        text = "\n\n".join(m["content"] for m in messages)
        return text + "\n" if add_generation_prompt else text
    bos = bundle.tokenizer.bos_token or ""
    eos = bundle.tokenizer.eos_token or ""
    return render_chat(bundle.chat_template, messages, bos, eos, add_generation_prompt)


def encode(bundle: HFBundle, text: str) -> list[int]:
    """Token ids of ``text`` as the llama.cpp backend makes them (special tokens parsed, BOS per the model)."""
    ids = bundle.tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = bundle.tokenizer.bos_token_id
    if bundle.add_bos and bos is not None and (not ids or ids[0] != bos):
        ids = [bos, *ids]
    return list(ids)


class TransformersChatModel:
    """Greedy (or sampled) chat completion with transformers; the KV cache of the last call is reused when the next
    prompt extends it. ``complete_batch`` generates for many conversations in one padded batch."""

    def __init__(self, bundle: HFBundle, n_ctx: int = 8192, seed: int = 0, batch_tokens: int | None = None) -> None:
        self.bundle = bundle
        self.name = bundle.name
        max_pos = getattr(bundle.model.config, "max_position_embeddings", n_ctx) or n_ctx
        self.context_length = min(n_ctx, int(max_pos))
        self.seed = seed
        self._cache = None
        self._cached_ids: list[int] = []
        self.batch_token_budget = batch_tokens or settings.batch_tokens()
        """Token budget of one padded forward pass in ``complete_batch`` (rows x longest prompt)."""
        self._specials: dict[int, str] | None = None
        self._newline: dict[int, bool] = {}

    @classmethod
    def from_ref(cls, ref: ModelRef, adapter: str | None = None, device: str = "cpu", seed: int = 0,
                 n_ctx: int = 8192, threads: int | None = None,
                 batch_tokens: int | None = None) -> TransformersChatModel:
        import torch

        if threads:
            torch.set_num_threads(threads)
        bundle = load_hf(ref, device=device)
        if adapter:
            if adapter.endswith(".gguf"):  # a GGUF LoRA (a shipped student's): its peft copy, made once
                from duomem.llm.lora_gguf import peft_folder_for

                adapter = str(peft_folder_for(Path(adapter), ref.name))
            bundle.model = attach_adapter(bundle.model, adapter)
        return cls(bundle, n_ctx=n_ctx, seed=seed, batch_tokens=batch_tokens)

    @property
    def device(self):
        return next(self.bundle.model.parameters()).device

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return len(encode(self.bundle, render(self.bundle, messages)))

    def _stop_ids(self) -> list[int]:
        tok = self.bundle.tokenizer
        ids = {tok.eos_token_id}
        for special in ("<|im_end|>", "<|endoftext|>", "<end_of_turn>", "<|eot_id|>"):
            tid = tok.convert_tokens_to_ids(special)
            if isinstance(tid, int) and tid >= 0 and tid != tok.unk_token_id:
                ids.add(tid)
        return [i for i in ids if i is not None]

    def _generation_kwargs(self, max_tokens: int, temperature: float) -> dict:
        kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "eos_token_id": self._stop_ids(),
                                  "pad_token_id": self.bundle.tokenizer.pad_token_id}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs

    @staticmethod
    def _cut(text: str, stop: Sequence[str]) -> str:
        for s in stop:
            if s and s in text:
                text = text[: text.index(s)]
        return text

    # --- the tokenizer view :mod:`duomem.llm.constrain` uses ----------------------------------------------------
    def tokenize_raw(self, text: str) -> list[int]:
        return list(self.bundle.tokenizer(text, add_special_tokens=False)["input_ids"])

    def special_text(self, token: int) -> str | None:
        if self._specials is None:
            tok = self.bundle.tokenizer
            self._specials = {int(i): str(t.content) for i, t in tok.added_tokens_decoder.items() if t.special}
            for i in tok.all_special_ids:
                self._specials.setdefault(int(i), tok.convert_ids_to_tokens(int(i)))
        return self._specials.get(token)

    def is_end(self, token: int) -> bool:
        return token in self._stop_ids()

    def _has_newline(self, token: int) -> bool:
        if token not in self._newline:
            self._newline[token] = "\n" in self.bundle.tokenizer.decode([token])
        return self._newline[token]

    def _reuse_cache(self, ids: list[int]) -> int:
        """Crop the cache to the part of ``ids`` it holds (never all of it: the last token is always evaluated,
        for its logits); returns how many tokens it keeps."""
        from transformers import DynamicCache

        prefix = 0
        for a, b in zip(self._cached_ids, ids, strict=False):
            if a != b:
                break
            prefix += 1
        prefix = min(prefix, len(ids) - 1)
        if self._cache is None or prefix == 0:
            self._cache, prefix = DynamicCache(), 0
        else:
            drop = self._cache.get_seq_length() - prefix
            if drop > 0:
                self._cache.crop(-drop)
        return prefix

    def complete(self, messages: Sequence[Message], max_tokens: int = 64, stop: Sequence[str] = (),
                 temperature: float = 0.0, seed: int | None = None, choices: Constraint | None = None) -> Completion:
        import torch

        prompt_text = render(self.bundle, messages)
        ids = encode(self.bundle, prompt_text)
        if len(ids) + max_tokens > self.context_length:
            raise ModelError(f"prompt of {len(ids)} tokens + {max_tokens} new ones exceeds the context of "
                             f"{self.context_length}")
        kwargs = self._generation_kwargs(max_tokens, temperature)
        if choices is not None:
            kwargs["logits_processor"] = [ChoiceLogitsProcessor(self._choice_trie(messages, prompt_text, ids,
                                                                                  choices), len(ids))]
        prefix = self._reuse_cache(ids)
        if seed is not None:
            torch.manual_seed(seed)
        start = time.perf_counter()
        with torch.no_grad(), warnings.catch_warnings():
            # transformers >= 5.2x renamed generate()'s past_key_values to cache (the old name works until 6.0, the
            # new one is unknown to the 5.1x that the GPU machines have): nothing a user can act on
            warnings.filterwarnings("ignore", message=r"`past_key_values` is deprecated", category=FutureWarning)
            out = self.bundle.model.generate(torch.tensor([ids], device=self.device), past_key_values=self._cache,
                                             use_cache=True, **kwargs)
        seconds = time.perf_counter() - start
        new = out[0, len(ids):].tolist()
        stop_ids = set(self._stop_ids())
        finish = "length"
        if new and new[-1] in stop_ids:
            new, finish = new[:-1], "stop"
        text = self.bundle.tokenizer.decode(new, skip_special_tokens=True)
        cut = self._cut(text, stop)
        if cut != text:
            finish = "stop"
        self._cached_ids = out[0].tolist()
        return Completion(text=cut, prompt_tokens=len(ids), completion_tokens=len(new), seconds=seconds,
                          cached_tokens=prefix, finish_reason=finish)

    def _choice_trie(self, messages: Sequence[Message], prompt_text: str, ids: list[int],
                     choices: Constraint) -> ChoiceTrie:
        cands = constraint_candidates(choices)
        shape = turn_shape(lambda m, g: render(self.bundle, m, g), messages, prompt_text,
                           bool(self.bundle.chat_template))
        paths = continuation_ids(self, prompt_text, ids, shape, cands)
        return ChoiceTrie([(p, not c.ends_turn) for p, c in zip(paths, cands, strict=True)], self._stop_ids(),
                          self._has_newline)

    # --- scoring ----------------------------------------------------------------------------------------------
    #: Candidate tokens per forward pass of ``score``.
    score_batch_tokens: int = 1024

    def score(self, messages: Sequence[Message], candidates: Sequence[Candidate]) -> Scores:
        """Score each candidate as the assistant's turn (see :meth:`ChatModel.score`).

        The prompt's new tokens are evaluated once into the cache that :meth:`complete` reuses. All candidates
        then go through one forward pass, packed as a prefix tree after the prompt: one row, each token once
        per distinct prefix (``go to cabinet`` once for all the cabinets), at its position in its candidate, with
        a 4-D attention mask letting each token see the prompt and its own earlier tokens only. The cache is
        cropped back to the prompt afterwards. (Repeating the prompt's cache once per candidate, a padded batch,
        would cost candidates x prompt of keys and values: about 2 GB in fp32 for 30 candidates after a
        1,500-token prompt with the 135M model.)"""
        import torch

        start = time.perf_counter()
        prompt_text = render(self.bundle, messages)
        ids = encode(self.bundle, prompt_text)
        shape = turn_shape(lambda m, g: render(self.bundle, m, g), messages, prompt_text,
                           bool(self.bundle.chat_template))
        conts = continuation_ids(self, prompt_text, ids, shape, candidates)
        longest = max((len(c) for c in conts), default=0)
        if len(ids) + longest > self.context_length:
            raise ModelError(f"prompt of {len(ids)} tokens + a candidate of {longest} exceeds the context of "
                             f"{self.context_length}")
        cached = 0
        for a, b in zip(self._cached_ids, ids, strict=False):
            if a != b:
                break
            cached += 1
        prefix = self._reuse_cache(ids)
        model = self.bundle.model
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids[prefix:]], device=self.device), past_key_values=self._cache,
                        use_cache=True)
            self._cached_ids = list(ids)
            head = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
            totals = [float(head[c[0]]) if c else 0.0 for c in conts]
            evaluated = len(ids) - prefix
            pending = [i for i, c in enumerate(conts) if len(c) > 1]
            while pending:
                group, nodes = [], {}
                for i in list(pending):
                    fed = conts[i][:-1]
                    new = [tuple(fed[:j + 1]) for j in range(len(fed)) if tuple(fed[:j + 1]) not in nodes]
                    if group and len(nodes) + len(new) > self.score_batch_tokens:
                        break
                    group.append(i)
                    pending.remove(i)
                    for key in new:
                        nodes[key] = len(nodes)
                evaluated += len(nodes)
                for i, lp in zip(group, self._score_packed(len(ids), conts, group, nodes), strict=True):
                    totals[i] += lp
        return Scores(logprobs=totals, n_tokens=[len(c) for c in conts], prompt_tokens=len(ids),
                      cached_tokens=cached, evaluated_tokens=evaluated, seconds=time.perf_counter() - start)

    def _score_packed(self, n_prompt: int, conts: list[list[int]], group: list[int],
                      nodes: dict[tuple[int, ...], int]) -> list[float]:
        """One forward pass over the prefix tree ``nodes`` (prefix -> index) after the cached prompt; the cache
        is cropped back to the prompt. Returns the log-probability of each candidate's tokens after its first."""
        import numpy as np
        import torch

        order = sorted(nodes, key=nodes.__getitem__)
        n = len(order)
        dev = self.device
        dtype = next(self.bundle.model.parameters()).dtype
        seen = np.zeros((n, n_prompt + n), dtype=bool)
        seen[:, :n_prompt] = True
        for k, prefix in enumerate(order):
            seen[k, [n_prompt + nodes[prefix[:j]] for j in range(1, len(prefix) + 1)]] = True  # self, ancestors
        mask = torch.zeros((1, 1, n, n_prompt + n), dtype=dtype, device=dev)
        mask[0, 0][torch.from_numpy(~seen).to(dev)] = torch.finfo(dtype).min
        tokens = torch.tensor([[p[-1] for p in order]], device=dev)
        positions = torch.tensor([[n_prompt + len(p) - 1 for p in order]], device=dev)
        try:
            logits = self.bundle.model(input_ids=tokens, position_ids=positions, attention_mask=mask,
                                       past_key_values=self._cache, use_cache=True).logits[0]
        finally:
            self._cache.crop(-n)
        logp = torch.log_softmax(logits.float(), dim=-1)
        out = []
        for i in group:
            c = conts[i]
            out.append(float(sum(logp[nodes[tuple(c[:j + 1])], c[j + 1]] for j in range(len(c) - 1))))
        return out

    def score_batch(self, requests: Sequence[ScoreRequest]) -> list[Scores]:
        return [self.score(messages, candidates) for messages, candidates in requests]

    #: Token budget of one padded forward pass in ``complete_batch`` (rows x longest prompt); lower it with
    #: ``DUOMEM_BATCH_TOKENS`` when several processes share one GPU (about 20 GB at the default for a 135M model).
    batch_token_budget: int = 393216

    def complete_batch(self, conversations: Sequence[Sequence[Message]], max_tokens: int = 64,
                       stop: Sequence[str] = (), temperature: float = 0.0,
                       seeds: Sequence[int | None] | None = None,
                       choices: Sequence[Constraint | None] | None = None) -> list[Completion]:
        """Left-padded batched ``generate`` for several conversations (no KV reuse across calls).

        One conversation is one :meth:`complete` (reusing the KV cache of the last call). Greedy prompts are sorted
        by length and cut into micro-batches of at most ``batch_token_budget`` padded tokens, so short prompts are
        not padded to the longest one; each row stops at its own stop string. With sampling each row is generated
        alone, seeded with its own seed, so batched and sequential play draw the same samples."""
        if not conversations:
            return []
        seeds = list(seeds) if seeds is not None else [None] * len(conversations)
        if len(conversations) == 1 or (choices is not None and any(c is not None for c in choices)):
            rows = list(choices) if choices is not None else [None]
            return [self.complete(c, max_tokens, stop, temperature, s, k)  # constrained rows: one at a time
                    for c, s, k in zip(conversations, seeds, rows, strict=True)]
        encoded = [encode(self.bundle, render(self.bundle, m)) for m in conversations]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        results: list[Completion | None] = [None] * len(encoded)
        if temperature > 0:
            for i in order:
                self._generate_group([i], encoded, results, max_tokens, stop, temperature, seeds[i])
            return [r for r in results if r is not None]
        group: list[int] = []
        for i in order:
            if group and (len(group) + 1) * len(encoded[i]) > self.batch_token_budget:
                self._generate_group(group, encoded, results, max_tokens, stop, temperature, None)
                group = []
            group.append(i)
        self._generate_group(group, encoded, results, max_tokens, stop, temperature, None)
        return [r for r in results if r is not None]

    def _generate_group(self, group: list[int], encoded: list[list[int]], results: list[Completion | None],
                        max_tokens: int, stop: Sequence[str], temperature: float, seed: int | None) -> None:
        import torch

        width = max(len(encoded[i]) for i in group)
        pad = self.bundle.tokenizer.pad_token_id
        input_ids = torch.full((len(group), width), pad, dtype=torch.long)
        attention = torch.zeros((len(group), width), dtype=torch.long)
        for row, i in enumerate(group):
            ids = encoded[i]
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            attention[row, width - len(ids):] = 1
        if seed is not None:
            torch.manual_seed(seed)
        kwargs = self._generation_kwargs(max_tokens, temperature)
        if [s for s in stop if s]:
            kwargs.update(stop_strings=[s for s in stop if s], tokenizer=self.bundle.tokenizer)
        start = time.perf_counter()
        with torch.no_grad():
            out = self.bundle.model.generate(input_ids.to(self.device), attention_mask=attention.to(self.device),
                                             **kwargs)
        seconds = time.perf_counter() - start
        stop_ids = set(self._stop_ids())
        for row, i in enumerate(group):
            new = out[row, width:].tolist()
            for j, t in enumerate(new):
                if t in stop_ids:
                    new = new[:j]
                    break
            text = self._cut(self.bundle.tokenizer.decode(new, skip_special_tokens=True), stop)
            results[i] = Completion(text=text, prompt_tokens=len(encoded[i]), completion_tokens=len(new),
                                    seconds=seconds / len(group))

    def close(self) -> None:
        self._cache = None
        self.bundle.model.to("cpu")


def attach_adapter(model: Any, adapter: str) -> Any:
    """Wrap ``model`` with a peft adapter folder (merged for speed at inference)."""
    path = Path(adapter)
    if not (path / "adapter_config.json").is_file():
        raise ModelError(f"{adapter} is neither a peft adapter folder (no adapter_config.json) nor a GGUF LoRA; "
                         "give the folder `duomem distill train` wrote or its adapter.gguf")
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(path)).merge_and_unload()
