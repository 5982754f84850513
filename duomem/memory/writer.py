"""Write procedural memories from trajectories: with any chat model (the teacher's or the student's own), or
deterministically from the expert's own plan (:class:`PlanWriter`, no model).

The writer prompt gives no example memory: a 135M writer copied the old prompt's example sentence ("A potato is
usually on a countertop...") word for word into memories of unrelated tasks. It describes what the steps must
say instead, and :func:`copied_lines` catches script lines that repeat the prompt's own wording (or the old
example), which the writer removes and counts (``MemoryEntry.copied_lines``; the bank manifest sums them).
"""

from __future__ import annotations

import difflib
import hashlib
import re

from duomem.agent.trajectory import Trajectory
from duomem.envs.pool import SCIENCEWORLD
from duomem.llm.base import ChatModel
from duomem.memory.abstract import parse_action, type_of
from duomem.memory.entry import MemoryEntry, MemoryFormat, generalise_names

WRITER_SYSTEM = ("You write procedural memories for a household robot that plays a text game. A memory explains how "
                 "a kind of task is solved, so that the robot can solve similar tasks in other rooms.")

WRITER_GUIDE = (
    "Write a memory that helps the robot solve tasks of this kind in other rooms, where places and their numbers "
    "differ.",
    "Write 3 to 6 numbered steps, one short line each. Together the steps say:",
    "- which kinds of places to search for the {object}, since in another room it may be elsewhere;",
    "- which commands to use on the {object}, in order;",
    "- where the {object} must be at the end.",
    "Name things by kind without numbers ({object}, not {object} 1). Call the place where the robot found the "
    "{object} \"the place where you find the {object}\".",
)
WRITER_PROMPT = """Task: {goal}
Outcome: {outcome}
What the robot did (command, then what the game answered):
{steps}

""" + "\n".join(WRITER_GUIDE) + """{failure_hint}
Write only the numbered steps."""

FAILURE_HINT = " The robot failed: also say what it should have done differently."

SCIENCEWORLD_WRITER_SYSTEM = (
    "You write procedural memories for an agent that does science tasks in a text game set in the rooms of a house "
    "and its surroundings. A memory explains how a kind of task is solved, so that the agent can solve similar "
    "tasks with other substances, organisms or objects.")
SCIENCEWORLD_WRITER_GUIDE = (
    "Write a memory that helps the agent solve tasks of this kind with other things, which may be elsewhere.",
    "Write 3 to 6 numbered steps, one short line each. Together the steps say:",
    "- which rooms to go to and what to find or pick up there;",
    "- which commands to use, in order, and what to focus on (focusing on the wrong thing ends the task);",
    "- what shows that the task is done.",
)
SCIENCEWORLD_WRITER_PROMPT = WRITER_PROMPT.replace("\n".join(WRITER_GUIDE), "\n".join(SCIENCEWORLD_WRITER_GUIDE)) \
    .replace("What the robot did", "What the agent did")
SCIENCEWORLD_FAILURE_HINT = " The agent failed: also say what it should have done differently."

WRITER_PROMPT_VERSION = hashlib.sha256((WRITER_SYSTEM + WRITER_PROMPT + FAILURE_HINT).encode()).hexdigest()[:12]
"""Changes whenever ALFWorld's writer prompt does: put it in the key of anything cached that an LLM writer made
(:func:`writer_prompt_version` gives each environment's)."""
SCIENCEWORLD_WRITER_PROMPT_VERSION = hashlib.sha256(
    (SCIENCEWORLD_WRITER_SYSTEM + SCIENCEWORLD_WRITER_PROMPT + SCIENCEWORLD_FAILURE_HINT).encode()).hexdigest()[:12]


def writer_prompt_version(source: str = "alfworld") -> str:
    """The writer prompt's version for episodes of ``source`` (a task's ``source``)."""
    return SCIENCEWORLD_WRITER_PROMPT_VERSION if source == SCIENCEWORLD else WRITER_PROMPT_VERSION
MAX_STEPS_SHOWN = 30
MAX_OBS_CHARS = 100

OLD_EXAMPLE_SENTENCES = (
    "A potato is usually on a countertop, diningtable or sinkbasin, or in the fridge or garbagecan.",
    "go to each of those places in turn (open them if closed) until you see a potato.",
    'For example, a script for "put a hot potato in fridge" is:',
)
"""The example of the writer prompt before issue 14; small writers copied its first line into every memory."""


def trajectory_digest(traj: Trajectory) -> str:
    """The trajectory as the writer sees it: commands and shortened answers (thoughts left out)."""
    lines = []
    for step in [s for s in traj.steps if s.kind == "action"][:MAX_STEPS_SHOWN]:
        obs = step.observation.replace("\n", " ")
        obs = obs if len(obs) <= MAX_OBS_CHARS else obs[:MAX_OBS_CHARS] + "..."
        lines.append(f"> {step.text}\n{obs}")
    return "\n".join(lines)


def _object_of(traj: Trajectory) -> str:
    if traj.params.get("object"):
        return traj.params["object"]
    taken = next((parse_action(a).obj for a in traj.actions if a.startswith("take ")), None)
    return type_of(taken) if taken else "object"


def prompt_sentences(traj: Trajectory | None = None) -> list[str]:
    """What a script must not repeat: the writer prompt's guidance for ``traj`` and the old example."""
    if traj is not None and traj.source == SCIENCEWORLD:
        return [*SCIENCEWORLD_WRITER_GUIDE, SCIENCEWORLD_FAILURE_HINT.strip()]
    obj = _object_of(traj) if traj is not None else "object"
    return [g.format(object=obj) for g in WRITER_GUIDE] + [FAILURE_HINT.strip(), *OLD_EXAMPLE_SENTENCES]


def _norm(text: str) -> str:
    text = re.sub(r"^\s*(\d+[.)]|[-*])\s*", "", text.lower())
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text).split())


def is_copy(line: str, sentences: list[str], threshold: float = 0.85) -> bool:
    """Whether ``line`` repeats one of ``sentences`` (near word for word, or a long piece of one), or is a
    template slot left unfilled (``<object>``)."""
    if re.search(r"<[a-z ]+>", line):
        return True
    a = _norm(line)
    if not a:
        return False
    for s in sentences:
        b = _norm(s)
        if not b:
            continue
        if (len(a) >= 20 and a in b) or (len(b) >= 20 and b in a):
            return True
        if difflib.SequenceMatcher(None, a, b).ratio() >= threshold:
            return True
    return False


def copied_lines(script: str, sentences: list[str]) -> list[int]:
    """Indices of the script's lines that copy ``sentences`` (see :func:`is_copy`)."""
    return [i for i, ln in enumerate(script.splitlines()) if is_copy(ln, sentences)]


def remove_copies(script: str, sentences: list[str]) -> tuple[str, int]:
    """The script without copied lines (renumbered) and how many were removed."""
    lines = script.splitlines()
    bad = set(copied_lines(script, sentences))
    kept = [re.sub(r"^\s*\d+[.)]\s*", "", ln) for i, ln in enumerate(lines) if i not in bad]
    return "\n".join(f"{i + 1}. {ln}" for i, ln in enumerate(kept)), len(bad)


def parse_script(text: str, max_lines: int = 8) -> str:
    """Numbered steps from the writer's answer, instance numbers removed, a step repeated word for word kept
    once (small writers loop); falls back to the non-empty lines."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    numbered = [re.sub(r"^\s*(\d+)[.)]\s*", "", ln) for ln in lines if re.match(r"^\s*\d+[.)]", ln)]
    chosen = list(dict.fromkeys(generalise_names(ln) for ln in (numbered or lines)))[:max_lines]
    return "\n".join(f"{i + 1}. {ln}" for i, ln in enumerate(chosen))


def memory_id(traj: Trajectory) -> str:
    return hashlib.sha1(f"{traj.trajectory_id}|{'/'.join(traj.actions)}".encode()).hexdigest()[:12]


def _entry(traj: Trajectory, script: str, fmt: MemoryFormat, writer: str | None, prompt_tokens: int = 0,
           completion_tokens: int = 0, copied: int = 0) -> MemoryEntry:
    return MemoryEntry(
        id=memory_id(traj), task_type=traj.task_type, goal=traj.goal, script=script,
        actions=traj.actions if fmt != "script" else [], params=dict(traj.params), won=traj.won,
        writer=writer if fmt != "trajectory" else None,
        source_policy=traj.policy, source_model=traj.model, source_split=traj.split,
        source_game_ids=[traj.game_id], source_trajectory_ids=[traj.trajectory_id],
        copied_lines=copied, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
    )


class MemoryWriter:
    """Turns one trajectory into a :class:`MemoryEntry` with ``model`` (greedy)."""

    def __init__(self, model: ChatModel | None, fmt: MemoryFormat = "both", max_new_tokens: int = 200) -> None:
        if fmt != "trajectory" and model is None:
            raise ValueError("a script needs a writer model")
        self.model = model
        self.fmt = fmt
        self.max_new_tokens = max_new_tokens

    def _messages(self, traj: Trajectory) -> list:
        """The writer's conversation: ALFWorld's prompt, or ScienceWorld's for its episodes."""
        sw = traj.source == SCIENCEWORLD
        system, template = (SCIENCEWORLD_WRITER_SYSTEM, SCIENCEWORLD_WRITER_PROMPT) if sw else \
            (WRITER_SYSTEM, WRITER_PROMPT)
        hint = "" if traj.won else (SCIENCEWORLD_FAILURE_HINT if sw else FAILURE_HINT)
        prompt = template.format(goal=traj.goal, outcome="success" if traj.won else "failure",
                                 steps=trajectory_digest(traj), failure_hint=hint,
                                 object="object" if sw else _object_of(traj))
        return [{"role": "system", "content": system}, {"role": "user", "content": prompt}]

    def write_many(self, trajs: list[Trajectory]) -> list[MemoryEntry]:
        """One memory per trajectory; a backend with ``complete_batch`` writes them in one batch."""
        if self.fmt == "trajectory" or self.model is None:
            return [_entry(t, "", self.fmt, None) for t in trajs]
        convs = [self._messages(t) for t in trajs]
        if len(trajs) > 1 and hasattr(self.model, "complete_batch"):
            completions = self.model.complete_batch(convs, max_tokens=self.max_new_tokens, temperature=0.0)
        else:
            completions = [self.model.complete(c, max_tokens=self.max_new_tokens, temperature=0.0) for c in convs]
        out = []
        for t, c in zip(trajs, completions, strict=True):
            script, copied = remove_copies(parse_script(c.text), prompt_sentences(t))
            out.append(_entry(t, script, self.fmt, self.model.name, c.prompt_tokens, c.completion_tokens, copied))
        return out


# --- the plan writer ----------------------------------------------------------------------------------------------
_ORDINAL = ("first", "second", "third", "fourth")


def _a(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def plan_script(traj: Trajectory) -> str:
    """The expert's own plan as numbered steps, one per milestone of its actions (take, heat/cool/clean, slice,
    use, move), in the words of :mod:`duomem.agent.thoughts`. Deterministic and free of the room: objects,
    appliances, the lamp and the target are named by type, the place where an object was found by its role."""
    parsed = [parse_action(a) for a in traj.actions]
    two = traj.task_type == "pick_two"
    steps: list[str] = []
    taken = 0
    opened: set[str] = set()
    for p in parsed:
        if p.verb == "open" and p.place:
            opened.add(p.place)
        elif p.verb == "take" and p.obj:
            obj = type_of(p.obj)
            nth = f"{_ORDINAL[min(taken, 3)]} " if two else ""
            taken += 1
            steps.append(f"Find the {nth}{obj}: go to each place where {_a(obj)} may be (open it if it is closed) "
                         f"until you see one, then take {obj} from the place where you find the {obj}.")
        elif p.verb in ("heat", "cool", "clean") and p.obj and p.place:
            tool, obj = type_of(p.place), type_of(p.obj)
            steps.append(f"Go to {tool}, then {p.verb} {obj} with {tool}.")
        elif p.verb == "slice" and p.obj and p.place:
            steps.append(f"Go to the {type_of(p.obj)}, then slice {type_of(p.obj)} with {type_of(p.place)}.")
        elif p.verb == "use" and p.place:
            lamp = type_of(p.place)
            steps.append(f"Find {_a(lamp)}: go to each place where {_a(lamp)} may be until you see one, then use "
                         f"{lamp}.")
        elif p.verb == "move" and p.obj and p.place:
            dest, obj = type_of(p.place), type_of(p.obj)
            first = f"Go to {dest} and open it, then" if p.place in opened else f"Go to {dest}, then"
            steps.append(f"{first} move {obj} to {dest}.")
    return "\n".join(f"{i + 1}. {s}" for i, s in enumerate(steps))


_SW_SILENT = ("look around", "inventory", "look at ", "examine ")
"""ScienceWorld commands that only look: left out of a plan (the reference actions keep them)."""


def _sw_collapse(actions: list[str]) -> list[str]:
    """A command repeated at once as one, with its count (``wait (3 times)``); ``wait1`` reads ``wait``."""
    out: list[tuple[str, int]] = []
    for action in ("wait" if a == "wait1" else a for a in actions):
        if out and out[-1][0] == action:
            out[-1] = (action, out[-1][1] + 1)
        else:
            out.append((action, 1))
    return [f"{a} ({n} times)" if n > 1 else a for a, n in out]


def scienceworld_plan_script(traj: Trajectory) -> str:
    """A ScienceWorld demonstration's plan as numbered steps, one per room it acts in: how to get there (the rooms
    passed through, doors opened on the way), then what it does there, in order (looking left out, a repeated
    command counted). Deterministic; the gold teacher has no words of its own."""
    steps: list[str] = []
    route: list[str] = []
    doors = False
    acts: list[str] = []

    def flush() -> None:
        nonlocal doors
        if route:
            via = f" through the {', the '.join(route[:-1])}" if len(route) > 1 else ""
            steps.append(f"Go to the {route[-1]}{via}{' (open the doors on the way)' if doors else ''}.")
        if acts:
            steps.append(f"In the {route[-1] if route else 'room you start in'}: {', '.join(_sw_collapse(acts))}.")
        route.clear()
        acts.clear()
        doors = False

    for action in traj.actions:
        if action.startswith(("go to ", "teleport to ")):
            if acts:
                flush()
            route.append(action.split(" to ", 1)[1])
        elif action.startswith("open door to "):
            doors = True
        elif not action.startswith(_SW_SILENT):
            acts.append(action)
    flush()
    return "\n".join(f"{i + 1}. {s}" for i, s in enumerate(steps))


PLAN_WRITER = "plan"


class PlanWriter:
    """The deterministic writer: the script is the expert's plan (:func:`plan_script`), no writer model. It reads
    only the demonstration, so its memories are an upper bound on what a writer can say about it."""

    name = PLAN_WRITER

    def __init__(self, fmt: MemoryFormat = "both") -> None:
        self.fmt = fmt

    def write(self, traj: Trajectory) -> MemoryEntry:
        return self.write_many([traj])[0]

    def write_many(self, trajs: list[Trajectory]) -> list[MemoryEntry]:
        return [_entry(t, self._script(t) if self.fmt != "trajectory" else "", self.fmt, PLAN_WRITER) for t in trajs]

    @staticmethod
    def _script(traj: Trajectory) -> str:
        return scienceworld_plan_script(traj) if traj.source == SCIENCEWORLD else plan_script(traj)
