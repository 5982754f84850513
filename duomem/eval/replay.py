"""Replay a list of commands on a game: check that a trajectory is what the game really answers."""

from __future__ import annotations

from duomem.agent.trajectory import Step, Trajectory
from duomem.envs.base import Environment, TaskSpec


def replay(env: Environment, task: TaskSpec, actions: list[str], seed: int = 0) -> Trajectory | None:
    """Play ``actions`` in order; the trajectory if the game is won by the last one, else None."""
    obs = env.reset(task, seed=seed)
    traj = Trajectory(game_id=task.game_id, split=task.split, task_type=task.task_type, goal=task.goal,
                      initial_observation=obs.text, policy="replay", source=task.source, params=task.params)
    for i, action in enumerate(actions):
        if action not in obs.admissible_commands:
            return None
        obs = env.step(action)
        traj.steps.append(Step(kind="action", text=action, observation=obs.text))
        if obs.won:
            traj.won = True
            return traj if i == len(actions) - 1 else None
        if obs.done:
            return None
    return None
