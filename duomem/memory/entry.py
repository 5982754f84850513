"""A procedural memory: how a kind of task is solved (MemP-style script + reference trajectory)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field

MemoryFormat = Literal["script", "trajectory", "both"]


class MemoryEntry(BaseModel):
    """One memory, with where it came from and what it cost to write."""

    id: str
    task_type: str
    goal: str
    """The task description; retrieval compares new task descriptions with it."""
    script: str = ""
    """Abstract, reusable steps for this kind of task, written by the writer model."""
    actions: list[str] = Field(default_factory=list)
    """The reference trajectory's commands."""
    won: bool = True
    writer: str | None = None
    """The model that wrote the script (None for trajectory-only memories)."""
    source_policy: str
    """``expert`` (ALFWorld's handcoded oracle) or ``llm``."""
    source_model: str | None = None
    source_split: str
    source_game_ids: list[str] = Field(default_factory=list)
    source_trajectory_ids: list[str] = Field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def text(self, fmt: MemoryFormat = "both") -> str:
        """What the agent reads."""
        lines = [f"Task: {self.goal} ({'solved' if self.won else 'failed'})"]
        if fmt in ("script", "both") and self.script:
            lines.append("Script:\n" + self.script)
        if fmt in ("trajectory", "both") and self.actions:
            lines.append("Reference actions: " + "; ".join(self.actions))
        return "\n".join(lines)


_INSTANCE = re.compile(r"\b([a-z]+) \d+\b")


def generalise_names(text: str) -> str:
    """``mug 1`` -> ``mug``: instance numbers do not carry over to another room."""
    return _INSTANCE.sub(r"\1", text)
