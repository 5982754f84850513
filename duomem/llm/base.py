"""The chat-model interface every backend implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypedDict, runtime_checkable


class Message(TypedDict):
    """One chat turn, as chat templates and TRL expect it."""

    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass
class Completion:
    """A model's answer with its cost."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    cached_tokens: int = 0
    """Prompt tokens served from the KV cache of the previous call (0 where the backend cannot tell)."""
    finish_reason: str = "stop"


@runtime_checkable
class ChatModel(Protocol):
    """A chat model that completes a conversation; greedy when ``temperature`` is 0."""

    name: str
    context_length: int

    def complete(
        self,
        messages: Sequence[Message],
        max_tokens: int = 64,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> Completion:
        """Generate the assistant's next turn for ``messages``."""
        ...

    def count_tokens(self, messages: Sequence[Message]) -> int:
        """Tokens of the prompt that ``complete(messages)`` would feed the model."""
        ...

    def close(self) -> None:
        """Release the weights."""
        ...
