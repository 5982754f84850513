"""The agent's prompt: short instructions, then a first turn with few-shot examples, retrieved memories and the
task, then the episode as chat turns.

One renderer serves inference and distillation (``duomem.distill.dataset``), so a student is trained on exactly
the prompts it is run with.
"""

from __future__ import annotations

import json
import lzma
from collections.abc import Callable, Collection, Sequence
from functools import lru_cache
from importlib import resources

from duomem.agent.trajectory import Step, Trajectory, assistant_text
from duomem.envs.base import TASK_TYPES
from duomem.envs.pool import SCIENCEWORLD
from duomem.llm.base import Message

INSTRUCTIONS = """You are a household robot in a text game. Each turn, read what the game says and answer with ONE line: \
either a command for the game, or a thought that starts with "think:".
Commands: look, inventory, go to <receptacle>, open <receptacle>, close <receptacle>, take <object> from \
<receptacle>, move <object> to <receptacle>, examine <something>, use <object>, heat <object> with <receptacle>, \
cool <object> with <receptacle>, clean <object> with <receptacle>, slice <object> with <object>.
Use the names and numbers the game shows, e.g. "take mug 1 from countertop 2"."""
"""ALFWorld's instructions (every committed result used them, byte for byte)."""

SCIENCEWORLD_INSTRUCTIONS = """You are an agent in a science text game: rooms of a house and its surroundings, with \
objects, substances, devices, plants and animals. Each turn, read what the game says and answer with ONE line: \
either a command for the game, or a thought that starts with "think:".
Commands: look around, look at <object>, look in <container>, read <object>, go to <room> (through an open door), \
open <object>, close <object>, pick up <object>, put down <object>, move <object> to <place>, pour <object> into \
<container>, dunk <object> into <container>, mix <container>, activate <device>, deactivate <device>, use <object> \
on <object>, connect <object> to <object>, disconnect <object>, eat <object>, flush <object>, focus on <object>, \
wait (10 time steps), wait1 (one time step), inventory, task (repeat the task).
Use the names the game shows, e.g. "move metal pot to stove". Focus only on what the task says to focus on: \
focusing on anything else fails the task."""
"""ScienceWorld's instructions: its action templates as the simulator lists them (``getPossibleActions``; not
``reset task``, and ``go OBJ`` as ``go to``), in its valid actions' wording (``pour X into Y``)."""

INSTRUCTIONS_BY_ENV = {"alfworld": INSTRUCTIONS, SCIENCEWORLD: SCIENCEWORLD_INSTRUCTIONS}
"""The system prompt of each environment (:func:`environment` of a task's ``source``)."""

MEMORY_OPEN = "### Memories of similar tasks"
MEMORY_CLOSE = "### End of memories"
OMITTED = "[{n} earlier turns omitted]"
TURN_END = "\n>"


FEWSHOT_SETS = {"train": "fewshot_train.json.xz", "heldout": "fewshot.json.xz"}
"""The few-shot example sets, two expert demonstrations per task type: ``train`` (ALFWorld train games, the set
every committed result used; its 12 games are left out of SFT data) and ``heldout`` (generated games on floor
plans no ALFWorld split uses, ``scripts/build_fewshot.py``). Stored xz-compressed, as the repository has a size
budget."""
SCIENCEWORLD_FEWSHOT = "fewshot_scienceworld.json.xz"
"""ScienceWorld's few-shot examples under either set name: up to two gold demonstrations per task, of train
variations (``scripts/build_fewshot_scienceworld.py``; they are left out of SFT data as the ``train`` set's games
are). Stored xz-compressed (229 kB of transcripts in 8 kB): the repository has a size budget."""


def environment(source: str) -> str:
    """The environment a task's ``source`` is played in: ``scienceworld``, or ``alfworld`` (official or
    generated ALFWorld games)."""
    return SCIENCEWORLD if source == SCIENCEWORLD else "alfworld"


def instructions(source: str = "alfworld") -> str:
    """The system prompt for a task of ``source`` (see :data:`INSTRUCTIONS_BY_ENV`)."""
    return INSTRUCTIONS_BY_ENV[environment(source)]


@lru_cache(maxsize=8)
def fewshot_examples(fewshot: str = "train", source: str = "alfworld") -> dict[str, list[Trajectory]]:
    """The few-shot examples of the set ``fewshot`` (see :data:`FEWSHOT_SETS`) for tasks of ``source``, by task
    type (ScienceWorld: :data:`SCIENCEWORLD_FEWSHOT`, whatever the set)."""
    if fewshot not in FEWSHOT_SETS:
        raise ValueError(f"unknown few-shot set {fewshot!r}; use {' or '.join(FEWSHOT_SETS)}")
    name = SCIENCEWORLD_FEWSHOT if environment(source) == SCIENCEWORLD else FEWSHOT_SETS[fewshot]
    data = resources.files("duomem.agent").joinpath(name).read_bytes()
    raw = json.loads(lzma.decompress(data) if name.endswith(".xz") else data)
    out: dict[str, list[Trajectory]] = {}
    for item in raw:
        traj = Trajectory.model_validate(item)
        out.setdefault(traj.task_type, []).append(traj)
    return out


def transcript(traj: Trajectory) -> str:
    """A trajectory as a plain transcript (``> command`` then the game's answer)."""
    lines = [traj.initial_observation]
    for step in traj.steps:
        lines.append(f"> {assistant_text(step)}")
        lines.append(step.observation)
    return "\n".join(lines)


def memory_block(memories: Sequence[str]) -> str:
    if not memories:
        return ""
    body = "\n\n".join(f"[Memory {i + 1}]\n{m.strip()}" for i, m in enumerate(memories))
    return f"{MEMORY_OPEN} (use them if they help)\n{body}\n{MEMORY_CLOSE}"


def substitute_type(task_type: str, unseen: Collection[str] = ()) -> str:
    """The type whose solved examples a prompt shows in place of ``task_type``'s (a kind of task the student never
    learned): the first of :data:`TASK_TYPES` that is neither ``task_type`` nor in ``unseen``."""
    return next(t for t in TASK_TYPES if t != task_type and t not in unseen)


def task_prompt(task_type: str, initial_observation: str, shots: int = 2, memories: Sequence[str] = (),
                fewshot: str = "train", source: str = "alfworld", example_type: str | None = None,
                solved: Sequence[tuple[str, str]] = ()) -> str:
    """The first user turn: ``shots`` solved examples, the retrieved memories, then the new task. The examples are
    ``solved`` (``(task type, transcript)`` pairs, e.g. a memory bank's solved episodes), completed from the
    packaged examples of ``task_type`` (of ``example_type`` when given: a task of another kind, for a kind the
    student never learned) in ``source``'s environment, as transcripts. Small models follow this transcript form
    far better than examples in a system turn."""
    parts = []
    packaged = fewshot_examples(fewshot, source).get(example_type or task_type, [])
    examples = [*solved[:shots], *((ex.task_type, transcript(ex)) for ex in packaged)][:shots]
    if examples:
        kind = "the same" if all(t == task_type for t, _ in examples) else "another"
        parts.append(f"Here {'is a solved task' if len(examples) == 1 else f'are {len(examples)} solved tasks'} "
                     f"of {kind} kind.")
        parts.extend(f"### Example {i + 1}\n{text}" for i, (_, text) in enumerate(examples))
    block = memory_block(memories)
    if block:
        parts.append(block)
    parts.append(f"### Your task\n{initial_observation}{TURN_END}")
    return "\n\n".join(parts)


def observation_turn(text: str, note: str = "") -> str:
    """A game answer as the user turn, with the episodic note under it (see :mod:`duomem.agent.note`)."""
    return f"{text}\n{note}{TURN_END}" if note else f"{text}{TURN_END}"


def conversation(first_user: str, steps: Sequence[Step], notes: Sequence[str] | None = None,
                 source: str = "alfworld") -> list[Message]:
    """The episode so far as chat turns: the instructions of ``source``'s environment (system), the task (user),
    then command or thought (assistant), the game's answer (user) with ``notes[i]`` under the answer to step ``i``
    (none without notes), and so on."""
    messages: list[Message] = [{"role": "system", "content": instructions(source)},
                               {"role": "user", "content": first_user}]
    for i, step in enumerate(steps):
        messages.append({"role": "assistant", "content": assistant_text(step)})
        messages.append({"role": "user", "content": observation_turn(step.observation, notes[i] if notes else "")})
    return messages


def episode_conversation(first_user: str, traj: Trajectory, note: bool = False) -> list[Message]:
    """:func:`conversation` of a trajectory, with the instructions of its environment (its ``source``) and its
    episodic notes when ``note`` (the one place both play and SFT data decide what the student reads)."""
    from duomem.agent.note import room_notes

    notes = room_notes(traj.initial_observation, traj.goal, traj.steps) if note else None
    return conversation(first_user, traj.steps, notes, traj.source)


def fit_history(messages: list[Message], count_tokens: Callable[[Sequence[Message]], int], budget: int,
                window: int | None = None) -> list[Message]:
    """Keep the instructions and the task turn, then as many of the latest turns as ``window`` and ``budget`` allow.

    Dropped turns are replaced by a note in the first user turn. With ``window=None`` and a large enough budget the
    history is complete, and each prompt extends the previous one (so the KV cache is reused).
    """
    head, turns = messages[:2], messages[2:]
    pairs = [turns[i:i + 2] for i in range(0, len(turns), 2)]
    keep_from = max(0, len(pairs) - window) if window is not None else 0

    def build(start: int) -> list[Message]:
        if start == 0:
            return head + [m for p in pairs for m in p]
        first = {"role": "user", "content": f"{head[1]['content']} {OMITTED.format(n=start)}"}
        return [head[0], first] + [m for p in pairs[start:] for m in p]

    candidate = build(keep_from)
    while keep_from < len(pairs) and count_tokens(candidate) > budget:
        keep_from += 1
        candidate = build(keep_from)
    return candidate
