"""The policy interface shared by LLM agents and the handcoded expert."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from duomem.agent.trajectory import Trajectory
from duomem.envs.base import Observation, TaskSpec
from duomem.llm.base import Completion


@dataclass
class Decision:
    """What a policy does next."""

    kind: str
    """``think`` or ``action``."""
    command: str
    """The command to send (non-empty), or the thought."""
    raw: str | None = None
    match: str = "exact"
    completion: Completion | None = None
    extra: dict = field(default_factory=dict)


@runtime_checkable
class Policy(Protocol):
    """Chooses the next turn of an episode from the trajectory so far."""

    name: str
    model_name: str | None

    def reset(self, task: TaskSpec, observation: Observation, seed: int) -> dict:
        """Start an episode; returns facts to keep in the record (e.g. retrieved memory ids)."""
        ...

    def act(self, trajectory: Trajectory, observation: Observation) -> Decision:
        """The next turn, given the trajectory so far and the latest observation."""
        ...
