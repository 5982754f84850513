"""llama.cpp backend over GGUF files (llama-cpp-python), reusing the KV cache across the turns of an episode."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from duomem.errors import ModelError
from duomem.llm.base import Batching, Completion, Message
from duomem.llm.chat_template import render_chat


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class LlamaCppChatModel(Batching):
    """A GGUF chat model on llama.cpp.

    The prompt is rendered with the model's own chat template and tokenized here, so the same conversation gives the
    same tokens in every backend. llama.cpp keeps the evaluated tokens: when the next prompt extends the last one
    (an agent's growing history), only the new tokens are evaluated.
    """

    def __init__(self, path: Path, name: str | None = None, n_ctx: int = 8192, n_threads: int | None = None,
                 seed: int = 0, lora_path: Path | None = None, chat_template: str | None = None) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:  # pragma: no cover - a hard dependency
            raise ModelError("llama-cpp-python is not installed: pip install llama-cpp-python==0.3.36") from exc
        if lora_path is not None and not Path(lora_path).is_file():
            raise ModelError(f"adapter file {lora_path} does not exist; export one with `duomem distill export`")
        threads = n_threads or min(2, os.cpu_count() or 1)
        try:
            self._llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                              seed=seed, verbose=False, lora_path=str(lora_path) if lora_path else None)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"llama.cpp cannot load {path}: {exc}") from exc
        self.name = name or Path(path).stem
        self.path = Path(path)
        self.lora_path = lora_path
        meta = self._llm.metadata
        self.context_length = min(n_ctx, int(meta.get(f"{meta.get('general.architecture', '')}.context_length",
                                                      n_ctx)))
        self.chat_template = chat_template or meta.get("tokenizer.chat_template")
        self._bos = self._token_text(self._llm.token_bos())
        self._eos = self._token_text(self._llm.token_eos())
        self._add_bos = meta.get("tokenizer.ggml.add_bos_token", "false") == "true"
        self._last_tokens: list[int] = []

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self._llm.detokenize([token], special=True).decode("utf-8", errors="replace")

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """The prompt text for ``messages`` (chat template, or plain concatenation for base models)."""
        if not self.chat_template:
            text = "\n\n".join(m["content"] for m in messages)
            return text + "\n" if add_generation_prompt else text
        return render_chat(self.chat_template, messages, self._bos, self._eos, add_generation_prompt)

    def tokenize(self, text: str) -> list[int]:
        tokens = self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        bos = self._llm.token_bos()
        if self._add_bos and bos >= 0 and (not tokens or tokens[0] != bos):
            tokens.insert(0, bos)
        return tokens

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return len(self.tokenize(self.render(messages)))

    def complete(self, messages: Sequence[Message], max_tokens: int = 64, stop: Sequence[str] = (),
                 temperature: float = 0.0, seed: int | None = None) -> Completion:
        tokens = self.tokenize(self.render(messages))
        if len(tokens) + max_tokens > self.context_length:
            raise ModelError(f"prompt of {len(tokens)} tokens + {max_tokens} new ones exceeds the context of "
                             f"{self.context_length}; lower the history budget")
        cached = _common_prefix(self._last_tokens, tokens)
        start = time.perf_counter()
        out = self._llm.create_completion(prompt=tokens, max_tokens=max_tokens, temperature=temperature,
                                          top_p=1.0, top_k=0 if temperature > 0 else 40, repeat_penalty=1.0,
                                          stop=list(stop) or None,
                                          seed=seed)
        seconds = time.perf_counter() - start
        choice = out["choices"][0]
        usage = out["usage"]
        self._last_tokens = tokens + self.tokenize(choice["text"])[int(self._add_bos):]
        return Completion(text=choice["text"], prompt_tokens=usage["prompt_tokens"],
                          completion_tokens=usage["completion_tokens"], seconds=seconds, cached_tokens=cached,
                          finish_reason=choice.get("finish_reason") or "stop")

    def decode_speed(self, n_tokens: int = 128, prompt: str = "Once upon a time") -> dict[str, float]:
        """Raw llama.cpp speed, no agent around it: prompt tokens/s and greedy decode tokens/s."""
        tokens = self.tokenize(prompt)
        self._llm.reset()
        start = time.perf_counter()
        first_token_at = 0.0
        produced = 0
        for _ in self._llm.generate(tokens, temp=0.0, repeat_penalty=1.0):
            produced += 1
            if produced == 1:
                first_token_at = time.perf_counter()
            if produced > n_tokens:
                break
        end = time.perf_counter()
        prompt_s = first_token_at - start
        decode_s = end - first_token_at
        produced -= 1
        self._llm.reset()
        self._last_tokens = []
        return {"prompt_tokens_per_s": len(tokens) / prompt_s, "decode_tokens_per_s": produced / decode_s,
                "decode_tokens": produced}

    def close(self) -> None:
        self._llm.close()
