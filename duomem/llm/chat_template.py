"""Render chat templates (the Jinja text stored in GGUF or tokenizer configs) as Hugging Face does."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache

from jinja2.exceptions import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from duomem.errors import ModelError
from duomem.llm.base import Message


def _raise(message: str) -> None:
    raise TemplateError(message)


@lru_cache(maxsize=16)
def _compiled(template: str):
    """The template compiled once per process: compiling costs more than rendering a long conversation, and SFT
    tokenisation renders every turn's prompt (thousands of renders an example set)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def render_chat(template: str, messages: Sequence[Message], bos_token: str = "", eos_token: str = "",
                add_generation_prompt: bool = True) -> str:
    """The prompt text for ``messages``; ``add_generation_prompt`` opens the assistant's turn."""
    try:
        return _compiled(template).render(
            messages=list(messages), bos_token=bos_token, eos_token=eos_token,
            add_generation_prompt=add_generation_prompt,
        )
    except TemplateError as exc:
        raise ModelError(f"the model's chat template rejected the conversation: {exc}") from exc
