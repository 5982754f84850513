"""A procedural memory: how a kind of task is solved (MemP-style script + reference trajectory)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from duomem.memory.provenance import floor_plan_of, task_folder_of

MemoryFormat = Literal["script", "trajectory", "both", "abstract", "typed"]
MEMORY_FORMATS: tuple[str, ...] = ("script", "trajectory", "both", "abstract", "typed")
"""How a memory is shown to the agent: ``script`` (the script only), ``trajectory`` (the reference actions
only), ``both`` (script and reference actions as written, the DuoMem default), ``abstract`` (script and
reference actions abstracted from the room they came from: no instance numbers, the places where objects were
found named by role; see :mod:`duomem.memory.abstract`) or ``typed`` (no instance numbers, every place named by
its type, the places checked in vain included: "go to cabinet, open cabinet, ..., take mug from countertop"),
after a line of where-found priors for the objects the task names (:mod:`duomem.memory.priors`)."""


class MemoryEntry(BaseModel):
    """One memory, with where it came from and what it cost to write."""

    id: str
    task_type: str
    goal: str
    """The task description; retrieval compares new task descriptions with it."""
    script: str = ""
    """Abstract, reusable steps for this kind of task, written by the writer model (or the plan writer)."""
    actions: list[str] = Field(default_factory=list)
    """The reference trajectory's commands."""
    params: dict[str, str] = Field(default_factory=dict)
    """The source task's arguments (object, receptacle, toggle, ...); empty in banks written before they were
    recorded (abstraction then reads the object and target from the actions)."""
    won: bool = True
    writer: str | None = None
    """The model that wrote the script (``plan`` for the deterministic plan writer; None for trajectory-only
    memories)."""
    source_policy: str
    """``expert`` (ALFWorld's handcoded oracle) or ``llm``."""
    source_model: str | None = None
    source_split: str
    source_game_ids: list[str] = Field(default_factory=list)
    source_trajectory_ids: list[str] = Field(default_factory=list)
    source_task_folders: list[str] = Field(default_factory=list)
    """Task folders (``<type>-<Object>-<MRecep>-<Receptacle>-<floor plan>``) of the source games; filled from the
    game ids when missing, so older banks load with them."""
    source_floor_plans: list[str] = Field(default_factory=list)
    """Floor plans (AI2-THOR scene numbers) of the source games; filled from the game ids when missing."""
    transcript: str = ""
    """The source episode as a prompt shows a solved example (observations included), kept when the bank is built
    or updated with ``transcripts``; what a run with ``examples: bank`` shows in place of the packaged examples."""
    copied_lines: int = 0
    """Script lines the writer copied from its prompt's wording, removed (see ``duomem.memory.writer``)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @model_validator(mode="after")
    def _fill_provenance(self) -> MemoryEntry:
        if not self.source_task_folders:
            self.source_task_folders = sorted({f for g in self.source_game_ids if (f := task_folder_of(g))})
        if not self.source_floor_plans:
            self.source_floor_plans = sorted({p for g in self.source_game_ids if (p := floor_plan_of(g))}, key=int)
        return self

    def to_json(self) -> str:
        """One line of a bank's memories file; without ``transcript`` when there is none, so banks built without
        episodes keep the bytes (and hashes) they had before the field existed."""
        return self.model_dump_json(exclude=None if self.transcript else {"transcript"})

    def text(self, fmt: MemoryFormat = "both") -> str:
        """What the agent reads."""
        lines = [f"Task: {self.goal} ({'solved' if self.won else 'failed'})"]
        if fmt == "abstract":
            from duomem.memory.abstract import abstract_actions, abstract_script

            if self.script:
                lines.append("Script:\n" + abstract_script(self.script, self.actions, self.params))
            if self.actions:
                lines.append("Reference actions: " + "; ".join(abstract_actions(self.actions, self.params)))
            return "\n".join(lines)
        if fmt == "typed":
            if self.script:
                lines.append("Script:\n" + generalise_names(self.script))
            if self.actions:
                lines.append("Reference actions: " + "; ".join(typed_actions(self.actions)))
            return "\n".join(lines)
        if fmt in ("script", "both") and self.script:
            lines.append("Script:\n" + self.script)
        if fmt in ("trajectory", "both") and self.actions:
            lines.append("Reference actions: " + "; ".join(self.actions))
        return "\n".join(lines)


_INSTANCE = re.compile(r"\b([a-z]+) \d+\b")


def generalise_names(text: str) -> str:
    """``mug 1`` -> ``mug``: instance numbers do not carry over to another room."""
    return _INSTANCE.sub(r"\1", text)


def typed_actions(actions: list[str]) -> list[str]:
    """The commands with instance numbers dropped and types kept, a command repeated at once kept once."""
    out: list[str] = []
    for action in actions:
        line = generalise_names(action)
        if not out or out[-1] != line:
            out.append(line)
    return out
