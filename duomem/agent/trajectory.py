"""Episodes as data: what was seen, thought and done. Shared by evaluation records, memories and SFT data."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

STATE_CHANGING = ("take ", "move ", "open ", "close ", "heat ", "cool ", "clean ", "slice ", "use ", "put ")
NO_OP_COMMANDS = ("look", "help", "inventory")


class Step(BaseModel):
    """One turn of the agent."""

    kind: Literal["think", "action"]
    text: str
    """The command sent to the game, or the thought (without ``think:``)."""
    observation: str
    """The game's answer (``OK.`` after a thought)."""
    raw: str | None = None
    """The model's raw output, where a model produced the step."""
    match: str = "exact"
    """How the output became the command: exact, normalised, unmatched, forced, empty, think or scored (see
    ``duomem.agent.parsing``; ``closest`` in records made before free-mode substitution was removed)."""


class Trajectory(BaseModel):
    """A played episode."""

    game_id: str
    split: str
    task_type: str
    goal: str
    initial_observation: str
    steps: list[Step] = Field(default_factory=list)
    won: bool = False
    policy: str
    """``expert`` (ALFWorld's handcoded oracle) or ``llm``."""
    model: str | None = None
    sample: int = 0
    """Index of this sample among several runs of the same task."""
    source: str = "alfworld"
    params: dict[str, str] = Field(default_factory=dict)

    @property
    def actions(self) -> list[str]:
        return [s.text for s in self.steps if s.kind == "action"]

    @property
    def trajectory_id(self) -> str:
        return f"{self.game_id}#{self.policy}:{self.model or '-'}:{self.sample}"


def assistant_text(step: Step) -> str:
    """What the agent says for ``step`` in a conversation: the command, or ``think: ...``."""
    return f"think: {step.text}" if step.kind == "think" else step.text


def is_state_changing(command: str) -> bool:
    return command.startswith(STATE_CHANGING)


def simplify_steps(steps: list[Step]) -> list[Step]:
    """Drop thoughts, no-op commands and detours (``go to A`` ... ``go to A`` with nothing changed between).

    The handcoded expert wanders when stuck; a demonstration should not. In ALFWorld, look/inventory/examine/help
    change nothing and a detour that changes nothing ends where it began, so every later observation stays
    exactly what it was (tests check this by replay).
    """
    actions = [s for s in steps if s.kind == "action"]
    out = [s for i, s in enumerate(actions) if i == len(actions) - 1 or
           not (s.text in NO_OP_COMMANDS or s.text.startswith("examine "))]
    changed = True
    while changed:
        changed = False
        for i, step in enumerate(out):
            if not step.text.startswith("go to "):
                continue
            for j in range(i + 1, len(out)):
                if is_state_changing(out[j].text):
                    break
                if out[j].text == step.text:
                    out = out[: i + 1] + out[j + 1:]
                    changed = True
                    break
            if changed:
                break
    return out
