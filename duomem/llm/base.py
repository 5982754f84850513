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

    def complete_batch(
        self,
        conversations: Sequence[Sequence[Message]],
        max_tokens: int = 64,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
        seeds: Sequence[int | None] | None = None,
    ) -> list[Completion]:
        """The next assistant turn of each conversation, ``seeds[i]`` seeding row ``i`` (see :class:`Batching`)."""
        ...

    def count_tokens(self, messages: Sequence[Message]) -> int:
        """Tokens of the prompt that ``complete(messages)`` would feed the model."""
        ...

    def close(self) -> None:
        """Release the weights."""
        ...


class Batching:
    """The default ``complete_batch``: one ``complete`` per conversation, each with its own seed. Backends that
    can generate many rows at once (transformers) override it; every backend is stepped through this method."""

    def complete_batch(self, conversations: Sequence[Sequence[Message]], max_tokens: int = 64,
                       stop: Sequence[str] = (), temperature: float = 0.0,
                       seeds: Sequence[int | None] | None = None) -> list[Completion]:
        seeds = list(seeds) if seeds is not None else [None] * len(conversations)
        return [self.complete(c, max_tokens=max_tokens, stop=stop, temperature=temperature, seed=s)  # type: ignore[attr-defined]
                for c, s in zip(conversations, seeds, strict=True)]
