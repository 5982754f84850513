"""Clean demonstrations from won trajectories: detours removed, ReAct thoughts added."""

from __future__ import annotations

from duomem.agent.thoughts import annotate, scienceworld_plan
from duomem.agent.trajectory import Step, Trajectory, simplify_steps
from duomem.envs.pool import SCIENCEWORLD


def demonstration(source: Trajectory, thoughts: bool = True) -> Trajectory | None:
    """A demonstration from a won trajectory (None for a lost one).

    An LLM teacher's trajectory is its own reasoning, as the paper trains on it: its thoughts stay, and only the
    commands the game did not take (text matching no admissible command, answered "Nothing happens.") are dropped,
    which leaves every later observation as it was. The expert's is simplified (see :func:`simplify_steps`) and,
    with ``thoughts``, annotated with the project's plan and milestone thoughts.

    A ScienceWorld gold path is kept as played: every action, even ``look around`` or ``wait``, lets the
    simulator's time pass (water heats, plants grow), so leaving one out would change later observations; with
    ``thoughts`` it starts with a plan thought (:func:`~duomem.agent.thoughts.scienceworld_plan`)."""
    if not source.won:
        return None
    if source.policy == "llm":
        kept = [s for s in source.steps if not (s.kind == "action" and s.match == "unmatched")]
        return source.model_copy(update={"steps": kept})
    if source.source == SCIENCEWORLD:
        actions = [s for s in source.steps if s.kind == "action"]
        plan = [Step(kind="think", text=scienceworld_plan(source.goal or source.initial_observation),
                     observation="OK.", match="think")]
        return source.model_copy(update={"steps": plan + actions if thoughts else actions})
    steps = simplify_steps(source.steps)
    if thoughts:
        steps = annotate(source.task_type, source.params, steps)
    return source.model_copy(update={"steps": steps})
