"""What an agent sees of any text benchmark: tasks, observations and the Environment protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, get_args, runtime_checkable

from pydantic import BaseModel

TaskType = Literal["pick", "clean", "heat", "cool", "examine", "pick_two"]
TASK_TYPES: tuple[str, ...] = get_args(TaskType)
MAX_STEPS = 50
"""The default turn limit of an episode (ALFWorld's usual 50)."""


class TaskSpec(BaseModel):
    """One playable game: where it is and what kind of task it poses."""

    game_id: str
    """Stable id, unique within a benchmark (for ALFWorld: ``<split>/<task folder>/<trial>``; for ScienceWorld:
    ``scienceworld/<task name>/<variation>``)."""
    split: str
    task_type: str
    """One of :data:`TASK_TYPES` (ALFWorld) or a ScienceWorld task name (``boil``)."""
    game_file: str
    """Absolute path of the playable game file (ALFWorld); ScienceWorld's task name, which the simulator loads."""
    goal: str = ""
    """The task sentence the game states ("put a clean mug in coffeemachine"; ScienceWorld's task description)."""
    params: dict[str, str] = {}
    """Task arguments, lower-case: ``object``, ``receptacle``, ``toggle`` (examine), ``mrecep`` (movable
    receptacle), ``sliced`` ("true"/"false"); for ScienceWorld ``task_id`` ("1-1"), ``topic`` ("1"..."10") and
    ``variation``."""
    source: str = "alfworld"
    """Where the game comes from: ``alfworld`` (the official release), ``generated`` or ``scienceworld``."""


@dataclass
class Observation:
    """What the environment returns after reset or step."""

    text: str
    admissible_commands: list[str]
    won: bool = False
    done: bool = False
    expert_action: str | None = None
    """The handcoded expert's next action where the environment provides one."""
    expert_error: str | None = None
    """Why the expert could not plan this step (its own bug; it then says ``look``), where it failed."""
    score: float | None = None
    """The game's own score where it keeps one: ScienceWorld's 0-100 (negative once the task is failed); None for
    ALFWorld, whose games are only won or not."""


@runtime_checkable
class Environment(Protocol):
    """A text game that can be reset to a task and stepped with text actions."""

    max_steps: int

    def reset(self, task: TaskSpec, seed: int | None = None) -> Observation:
        """Load ``task`` (if not loaded) and start a new episode; ``seed`` fixes the game's own randomness."""
        ...

    def step(self, action: str) -> Observation:
        """Apply one text action; ``action`` must be non-empty."""
        ...

    def close(self) -> None:
        """Free the game engine."""
        ...
