"""Load a chat model by name with the backend that fits it."""

from __future__ import annotations

from pathlib import Path

from duomem.errors import ModelError
from duomem.llm.base import ChatModel
from duomem.llm.registry import resolve


def load_chat_model(name: str, backend: str = "auto", adapter: str | None = None, n_ctx: int = 8192,
                    threads: int | None = None, seed: int = 0, device: str = "cpu", batch_tokens: int | None = None,
                    request_timeout: float | None = None, request_retries: int | None = None,
                    request_concurrency: int | None = None) -> ChatModel:
    """``backend`` ``auto`` picks llama.cpp for GGUF models, transformers for ``hf:`` names and the OpenAI client
    for ``openai:`` names. llama.cpp takes a GGUF LoRA file, or a peft folder holding the ``adapter.gguf`` that
    ``duomem.distill.export`` wrote beside it (loading never writes anything). ``batch_tokens`` caps one batched
    forward pass (transformers); ``request_*`` and ``n_ctx`` set the OpenAI client's limits."""
    ref = resolve(name)
    if backend == "auto":
        backend = {"gguf": "llamacpp", "hf": "transformers", "openai": "openai"}[ref.kind]
    if backend == "llamacpp":
        if ref.kind != "gguf":
            raise ModelError(f"{name} is not a GGUF model; the llama.cpp backend needs one")
        from duomem.llm.llamacpp import LlamaCppChatModel

        lora = None
        if adapter:
            lora = _gguf_adapter(Path(adapter), ref.path)
        return LlamaCppChatModel(ref.path, name=ref.name if ref.packaged else name, n_ctx=n_ctx, n_threads=threads,
                                 seed=seed, lora_path=lora)
    if backend == "transformers":
        from duomem.llm.hf import TransformersChatModel

        return TransformersChatModel.from_ref(ref, adapter=adapter, device=device, seed=seed, n_ctx=n_ctx,
                                              threads=threads, batch_tokens=batch_tokens)
    if backend == "openai":
        if ref.kind != "openai":
            raise ModelError(f"the openai backend needs a name like openai:MODEL@http://host:port/v1, not {name}")
        from duomem.llm.openai_backend import OpenAIChatModel

        return OpenAIChatModel(model=ref.hf_id or "", base_url=ref.url or "", seed=seed, context_length=n_ctx,
                               timeout=request_timeout, max_tries=request_retries, concurrency=request_concurrency)
    raise ModelError(f"unknown backend {backend!r}; use auto, llamacpp, transformers or openai")


GGUF_ADAPTER = "adapter.gguf"
"""The llama.cpp LoRA file that ``duomem distill export`` writes inside a peft adapter folder."""


def _gguf_adapter(adapter: Path, base: Path | None) -> Path:
    """A llama.cpp LoRA file for ``adapter``: the file itself, or the GGUF exported beside a peft folder."""
    if adapter.is_file():
        return adapter
    if adapter.is_dir():
        exported = adapter / GGUF_ADAPTER
        if not exported.is_file():
            raise ModelError(f"adapter folder {adapter} has no {GGUF_ADAPTER} for llama.cpp; export it first "
                             "(duomem distill export) or use the transformers backend")
        return exported
    raise ModelError(f"adapter {adapter} does not exist; train one with duomem distill train")
