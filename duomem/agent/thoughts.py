"""Short ReAct thoughts for demonstrations: a plan at the start and a note after each milestone.

Used to write the few-shot examples and to annotate the expert's trajectories for distillation, so that what the
student is shown and what it is trained on read the same way.
"""

from __future__ import annotations

from duomem.agent.trajectory import Step

_TOOL = {"clean": ("clean", "sinkbasin"), "heat": ("heat", "microwave"), "cool": ("cool", "fridge")}


def plan(task_type: str, params: dict[str, str]) -> str:
    obj, recep, toggle = params.get("object", "object"), params.get("receptacle", ""), params.get("toggle", "")
    if task_type == "examine":
        return f"To solve the task, I need to find and take a {obj}, then find and use a {toggle}."
    if task_type == "pick_two":
        return (f"To solve the task, I need to find and take the first {obj}, then put it in/on {recep}, "
                f"then find and take the second {obj}, then put it in/on {recep}.")
    if task_type in _TOOL:
        verb, tool = _TOOL[task_type]
        return f"To solve the task, I need to find and take a {obj}, then {verb} it with {tool}, then put it in/on {recep}."
    return f"To solve the task, I need to find and take a {obj}, then put it in/on {recep}."


def _after(task_type: str, params: dict[str, str], action: str, placed: int) -> str | None:
    obj, recep, toggle = params.get("object", ""), params.get("receptacle", ""), params.get("toggle", "")
    words = action.split()
    if action.startswith("take ") and len(words) >= 3 and words[1] == obj:
        item = f"{words[1]} {words[2]}"
        if task_type == "examine":
            nxt = f"find a {toggle} and use it"
        elif task_type in _TOOL:
            verb, tool = _TOOL[task_type]
            nxt = f"go to {tool} and {verb} it"
        else:
            nxt = f"put it in/on {recep}"
        return f"Now I take {item}. Next, I need to {nxt}."
    for verb, tool in _TOOL.values():
        if action.startswith(f"{verb} ") and task_type in _TOOL:
            return f"Now I {verb} {' '.join(words[1:3])} with {tool}. Next, I need to put it in/on {recep}."
    if task_type == "pick_two" and action.startswith("move ") and placed == 1:
        return f"Now I put the first {obj} in/on {recep}. Next, I need to find the second {obj}."
    return None


def scienceworld_plan(task: str) -> str:
    """The plan thought of a ScienceWorld demonstration: the first sentence of the task description in ``task``
    (the goal, or the first observation, which ends with it) as what to do ("Your task is to boil lead. ..." ->
    "To solve the task, I need to boil lead.")."""
    start = task.rfind("Your task is to ")
    text = task[start + len("Your task is to "):] if start >= 0 else task
    first = text.strip().split(". ")[0].strip().rstrip(".")
    return f"To solve the task, I need to {first}." if first else "To solve the task, I need to do what it says."


def annotate(task_type: str, params: dict[str, str], steps: list[Step]) -> list[Step]:
    """``steps`` (actions only) with a plan first and a thought after each milestone (not after the last step)."""
    out = [Step(kind="think", text=plan(task_type, params), observation="OK.", match="think")]
    placed = 0
    for i, step in enumerate(steps):
        out.append(step)
        if step.kind != "action" or i == len(steps) - 1:
            continue
        if step.text.startswith("move "):
            placed += 1
        thought = _after(task_type, params, step.text, placed)
        if thought:
            out.append(Step(kind="think", text=thought, observation="OK.", match="think"))
    return out
