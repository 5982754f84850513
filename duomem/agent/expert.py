"""ALFWorld's handcoded expert, or ScienceWorld's gold teacher, as a policy (an oracle: it reads the game's hidden
facts). Both environments put the teacher's next action in ``Observation.expert_action`` when made with
``expert=True`` (the game slots do so for this policy)."""

from __future__ import annotations

from collections.abc import Sequence

from duomem.agent.episode import Decision, EpisodeState

FALLBACK = {"scienceworld": "look around"}
"""What the expert says where its teacher has no next action (ALFWorld's ``look``; ScienceWorld's ``look around``)."""


class ExpertPolicy:
    """Follows the expert's next action. With ``explore`` > 0, before the target object is first taken it
    sometimes goes somewhere else instead (drawn from the episode's own random stream), so several samples of one
    task differ. On ScienceWorld the next action is the gold path's (the episode's variation and seed); its game
    slots list no valid actions for the expert (0.18 s a step saved), so ``explore`` has no moves to take there."""

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
        action = obs.expert_action or FALLBACK.get(state.task.source, "look")
        if self.explore > 0 and not any(a.startswith("take ") for a in state.traj.actions):
            moves = [c for c in obs.admissible_commands if c.startswith("go to ")]
            if moves and state.rng.random() < self.explore:
                action = state.rng.choice(moves)
        return Decision(kind="action", command=action, match="exact")
