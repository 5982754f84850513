"""The episodic note: where the agent has been in this room and what it saw there, written under each game answer.

A small student forgets which places it has checked, skips places it was shown and walks to ones the room lacks
(``go to drawer 9`` in a room of three drawers). The note restates, every turn, what its own history says:

    Note: not visited yet: cabinet 2 to 5, shelf 1. Closed, not opened: drawer 1. Seen: mug 1 (countertop 1).

It is computed from the episode's own text alone (the first observation's list of places, the commands sent and
the game's answers), never from hidden game state, and is the same function of a trajectory at play and in SFT
data, so a student is trained on exactly the notes it will read. Places are the ones the first observation lists
("you see a bed 1, a desk 2, ...": in ALFWorld exactly the first turn's ``go to`` targets); a place counts as
visited once a ``go to`` it was answered with anything but "Nothing happens."; "seen" lists the objects whose type
the task names (the mug of "put a clean mug in coffeemachine", the desklamp of an examine task) with the places
where they were seen, until the agent picks one up.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from duomem.agent.trajectory import Step

NOTE_PREFIX = "Note:"
NOTHING = "Nothing happens."
_SEE = re.compile(r"you see (.+?)\.(?:\s|$)")
_ITEM = re.compile(r"^(?:an?|the|some)\s+", re.IGNORECASE)
_THING = re.compile(r"\b([a-z]+) (\d+)\b")
_ARRIVE = re.compile(r"^You arrive at (.+?)\.")
_OPENED = re.compile(r"^You open the (.+?)\.")
_PICKED = re.compile(r"^You pick up the ([a-z]+ \d+)")


def _listed(text: str) -> list[str]:
    """``a bed 1, a desk 2, and a shelf 1`` -> ``["bed 1", "desk 2", "shelf 1"]``."""
    parts = re.split(r",\s*(?:and\s+)?|\s+and\s+", text.strip())
    return [name for p in parts if (name := _ITEM.sub("", p.strip()))]


def places_of(initial_observation: str) -> list[str]:
    """The places the first observation lists (none if it lists none)."""
    return _seen_things(initial_observation.split("\n\n")[0])


def goal_types(goal: str) -> set[str]:
    """The words of the task that may name object types (``mugs`` also as ``mug``)."""
    words = set(re.findall(r"[a-z]+", goal.lower()))
    return words | {w[:-1] for w in words if w.endswith("s") and len(w) > 3}


def _seen_things(observation: str) -> list[str]:
    """Objects an answer shows: ``On the desk 1, you see a mug 1, and a pen 2.`` -> ``["mug 1", "pen 2"]``."""
    out = []
    for m in _SEE.finditer(observation):
        out += [t for t in _listed(m.group(1)) if _THING.fullmatch(t)]
    return out


def room_notes(initial_observation: str, goal: str, steps: Sequence[Step]) -> list[str]:
    """The note written under the game's answer to each step (``""`` under a thought, whose answer is ``OK.``)."""
    places = places_of(initial_observation)
    wanted = goal_types(goal)
    visited: set[str] = set()
    closed: set[str] = set()
    seen: dict[str, list[str]] = {}
    here: str | None = None
    notes: list[str] = []
    for step in steps:
        if step.kind == "think":
            notes.append("")
            continue
        obs = step.observation.strip()
        if step.text.startswith("go to ") and not obs.startswith(NOTHING):
            m = _ARRIVE.match(obs)
            here = m.group(1) if m else step.text[len("go to "):]
            visited.add(here)
            if f"{here} is closed" in obs:
                closed.add(here)
        m = _OPENED.match(obs)
        if m:
            closed.discard(m.group(1))
        m = _PICKED.match(obs)
        if m:
            seen.pop(m.group(1), None)
        for thing in _seen_things(obs):
            if thing.split()[0] in wanted and here and here not in seen.setdefault(thing, []):
                seen[thing].append(here)
        notes.append(_render(places, visited, closed, seen))
    return notes


def compact(places: Sequence[str]) -> str:
    """Places grouped by type, runs of three or more numbers as a range: ``drawer 1 to 4, drawer 6, shelf 2``
    (a room's 17 drawers cost a few tokens instead of seventy)."""
    numbers: dict[str, list[int]] = {}
    for p in places:
        kind, n = p.rsplit(" ", 1)
        numbers.setdefault(kind, []).append(int(n))
    out: list[str] = []
    for kind, ns in numbers.items():
        ns = sorted(set(ns))
        start = 0
        while start < len(ns):
            end = start
            while end + 1 < len(ns) and ns[end + 1] == ns[end] + 1:
                end += 1
            if end - start >= 2:
                out.append(f"{kind} {ns[start]} to {ns[end]}")
            else:
                out += [f"{kind} {n}" for n in ns[start:end + 1]]
            start = end + 1
    return ", ".join(out)


def _render(places: list[str], visited: set[str], closed: set[str], seen: dict[str, list[str]]) -> str:
    todo = [p for p in places if p not in visited]
    parts = [f"not visited yet: {compact(todo)}" if todo else "every place visited"]
    shut = [p for p in places if p in closed] + sorted(closed - set(places))
    if shut:
        parts.append(f"Closed, not opened: {', '.join(shut)}")
    found = [f"{thing} ({', '.join(where)})" for thing, where in seen.items() if where]
    if found:
        parts.append(f"Seen: {', '.join(found)}")
    return f"{NOTE_PREFIX} {'. '.join(parts)}."
