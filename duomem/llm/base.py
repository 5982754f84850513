"""The chat-model interface every backend implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypedDict, runtime_checkable

THINK_PREFIX = "think:"
"""How the agent marks a thought (``duomem.agent.parsing`` reads it the same way)."""


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
    scored_tokens: int = 0
    """Candidate tokens evaluated to choose this answer by likelihood (action selection ``score``)."""


@dataclass(frozen=True)
class Candidate:
    """One continuation of the assistant's turn to score.

    With ``ends_turn`` the continuation is what the chat template renders for an assistant message whose content
    is ``text``, up to and including the end-of-turn token (``<|im_end|>``): the model must say ``text`` and then
    stop, so ``go to cabinet 1`` gains nothing from being a prefix of ``go to cabinet 10``. Without it, just the
    tokens of ``text`` right after the generation prompt (a prefix such as ``think:``)."""

    text: str
    ends_turn: bool = True


@dataclass
class Scores:
    """Log-probabilities of candidate continuations of one prompt, in the order given, with the call's cost."""

    logprobs: list[float]
    """Per candidate: the sum of its tokens' log-probabilities (natural log)."""
    n_tokens: list[int]
    """Per candidate: how many tokens were scored."""
    prompt_tokens: int
    cached_tokens: int
    """Prompt tokens served from the cache of the previous call."""
    evaluated_tokens: int
    """Tokens the model evaluated in this call (new prompt tokens and candidate tokens)."""
    seconds: float

    def best(self) -> int:
        """The index of the most probable candidate (the first one on ties)."""
        return max(range(len(self.logprobs)), key=lambda i: (self.logprobs[i], -i))


@dataclass(frozen=True)
class Constraint:
    """What a constrained completion may say: exactly one of ``commands`` or, with ``allow_think``, ``think:``
    followed by free text up to the end of the line."""

    commands: tuple[str, ...]
    allow_think: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "commands", tuple(self.commands))

    def accepts(self, text: str) -> bool:
        """Whether ``text`` (a completion cut at its stop strings) is something this constraint allows."""
        return text in self.commands or (self.allow_think and text.startswith(THINK_PREFIX) and "\n" not in text)


ScoreRequest = tuple[Sequence[Message], Sequence[Candidate]]
"""A prompt and the candidates to score after it."""


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
        choices: Constraint | None = None,
    ) -> Completion:
        """Generate the assistant's next turn for ``messages``; with ``choices`` the text is one of its commands
        or a ``think:`` line (grammar-constrained decoding; a :class:`ModelError` where the backend cannot)."""
        ...

    def score(self, messages: Sequence[Message], candidates: Sequence[Candidate]) -> Scores:
        """The log-probability of each candidate as the assistant's next turn after ``messages`` (rendered as
        ``complete`` renders them). The prompt is evaluated once per call (reusing the previous call's cache
        where the prompt extends it) and every candidate is scored from its state."""
        ...

    def score_batch(self, requests: Sequence[ScoreRequest]) -> list[Scores]:
        """``score`` for several prompts (a loop where the backend has nothing faster)."""
        ...

    def complete_batch(
        self,
        conversations: Sequence[Sequence[Message]],
        max_tokens: int = 64,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
        seeds: Sequence[int | None] | None = None,
        choices: Sequence[Constraint | None] | None = None,
    ) -> list[Completion]:
        """The next assistant turn of each conversation, ``seeds[i]`` seeding row ``i`` and ``choices[i]``
        constraining it (see :class:`Batching`)."""
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
                       seeds: Sequence[int | None] | None = None,
                       choices: Sequence[Constraint | None] | None = None) -> list[Completion]:
        n = len(conversations)
        seeds = list(seeds) if seeds is not None else [None] * n
        choices = list(choices) if choices is not None else [None] * n
        return [self.complete(c, max_tokens=max_tokens, stop=stop, temperature=temperature, seed=s,  # type: ignore[attr-defined]
                              choices=k) for c, s, k in zip(conversations, seeds, choices, strict=True)]

    def score_batch(self, requests: Sequence[ScoreRequest]) -> list[Scores]:
        """One ``score`` per prompt."""
        return [self.score(messages, candidates) for messages, candidates in requests]  # type: ignore[attr-defined]
