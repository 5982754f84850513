"""Clean demonstrations from won trajectories: detours removed, ReAct thoughts added."""

from __future__ import annotations

from duomem.agent.thoughts import annotate
from duomem.agent.trajectory import Trajectory, simplify_steps


def demonstration(source: Trajectory, thoughts: bool = True) -> Trajectory | None:
    """A demonstration from a won trajectory (None for a lost one).

    An LLM teacher's trajectory is its own reasoning, as the paper trains on it: its thoughts stay, and only the
    commands the game did not take (text matching no admissible command, answered "Nothing happens.") are dropped,
    which leaves every later observation as it was. The expert's is simplified (see :func:`simplify_steps`) and,
    with ``thoughts``, annotated with the project's plan and milestone thoughts."""
    if not source.won:
        return None
    if source.policy == "llm":
        kept = [s for s in source.steps if not (s.kind == "action" and s.match == "unmatched")]
        return source.model_copy(update={"steps": kept})
    steps = simplify_steps(source.steps)
    if thoughts:
        steps = annotate(source.task_type, source.params, steps)
    return source.model_copy(update={"steps": steps})
