"""Replay a list of commands on a game: check that a (simplified) trajectory still wins and record it."""

from __future__ import annotations

from duomem.agent.thoughts import annotate
from duomem.agent.trajectory import Step, Trajectory, simplify_actions
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


def demonstration(env: Environment, task: TaskSpec, source: Trajectory, thoughts: bool = True) -> Trajectory | None:
    """A clean demonstration from a won trajectory: detours and no-ops removed (checked by replay), thoughts added.

    Falls back to the original actions when the simplified ones do not replay to a win; None if neither wins.
    """
    if not source.won:
        return None
    simplified = simplify_actions(source.actions)
    traj = replay(env, task, simplified) if simplified != source.actions else None
    if traj is None:
        traj = replay(env, task, source.actions)
    if traj is None:
        return None
    steps = annotate(task.task_type, task.params, traj.steps) if thoughts else traj.steps
    return traj.model_copy(update={"steps": steps, "policy": source.policy, "model": source.model,
                                   "sample": source.sample})
