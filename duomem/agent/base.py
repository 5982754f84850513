"""The policy interface shared by LLM agents and the handcoded expert."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from duomem.agent.episode import Decision, EpisodeState

__all__ = ["Decision", "EpisodeState", "Policy"]


@runtime_checkable
class Policy(Protocol):
    """Chooses the next turn of episodes. A policy keeps nothing per episode: all of it is in the
    :class:`EpisodeState`, so one policy plays any number of episodes, one at a time or as a batch."""

    name: str
    model_name: str | None

    def start(self, state: EpisodeState) -> None:
        """Prepare ``state`` after the game's first observation (e.g. retrieve memories, build the prompt)."""
        ...

    def act(self, states: Sequence[EpisodeState]) -> list[Decision]:
        """The next turn of each episode in ``states`` (one decision per state, in order)."""
        ...
