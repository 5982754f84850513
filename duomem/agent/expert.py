"""ALFWorld's handcoded expert as a policy (an oracle: it reads the game's hidden facts)."""

from __future__ import annotations

from collections.abc import Sequence

from duomem.agent.episode import Decision, EpisodeState


class ExpertPolicy:
    """Follows the expert's next action. With ``explore`` > 0, before the target object is first taken it
    sometimes goes somewhere else instead (drawn from the episode's own random stream), so several samples of one
    task differ."""

    name = "expert"
    model_name = None

    def __init__(self, explore: float = 0.0) -> None:
        self.explore = explore

    def start(self, state: EpisodeState) -> None:
        return None

    def act(self, states: Sequence[EpisodeState]) -> list[Decision]:
        return [self._act(s) for s in states]

    def _act(self, state: EpisodeState) -> Decision:
        obs = state.obs
        action = obs.expert_action or "look"
        if self.explore > 0 and not any(a.startswith("take ") for a in state.traj.actions):
            moves = [c for c in obs.admissible_commands if c.startswith("go to ")]
            if moves and state.rng.random() < self.explore:
                action = state.rng.choice(moves)
        return Decision(kind="action", command=action, match="exact")
