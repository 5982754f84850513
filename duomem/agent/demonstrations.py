"""Clean demonstrations from won trajectories: detours removed, ReAct thoughts added."""

from __future__ import annotations

from duomem.agent.thoughts import annotate
from duomem.agent.trajectory import Trajectory, simplify_steps


def demonstration(source: Trajectory, thoughts: bool = True) -> Trajectory | None:
    """The won ``source`` simplified (see :func:`simplify_steps`) and, with ``thoughts``, annotated with the
    project's plan and milestone thoughts; None for a lost trajectory."""
    if not source.won:
        return None
    steps = simplify_steps(source.steps)
    if thoughts:
        steps = annotate(source.task_type, source.params, steps)
    return source.model_copy(update={"steps": steps})
