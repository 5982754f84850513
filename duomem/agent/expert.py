"""ALFWorld's handcoded expert as a policy (an oracle: it reads the game's hidden facts)."""

from __future__ import annotations

import random

from duomem.agent.base import Decision
from duomem.agent.trajectory import Trajectory
from duomem.envs.base import Observation, TaskSpec


class ExpertPolicy:
    """Follows the expert's next action. With ``explore`` > 0, before the target object is first taken it
    sometimes goes somewhere else instead (seeded), so several samples of one task differ."""

    name = "expert"
    model_name = None

    def __init__(self, explore: float = 0.0) -> None:
        self.explore = explore
        self._rng = random.Random(0)

    def reset(self, task: TaskSpec, observation: Observation, seed: int) -> dict:
        self._rng = random.Random(seed)
        return {"explore": self.explore}

    def act(self, trajectory: Trajectory, observation: Observation) -> Decision:
        action = observation.expert_action or "look"
        if self.explore > 0 and not any(a.startswith("take ") for a in trajectory.actions):
            moves = [c for c in observation.admissible_commands if c.startswith("go to ")]
            if moves and self._rng.random() < self.explore:
                action = self._rng.choice(moves)
        return Decision(kind="action", command=action, match="exact")
