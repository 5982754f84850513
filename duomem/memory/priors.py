"""Where-found priors: per object type, the receptacle types where the teacher found it, with counts.

A memory says *that* the mug must be found; the priors say *where mugs are found* ("mug: countertop 9, cabinet 3,
sinkbasin 2"), which carries over to a room the student has never seen. They are counted from a bank's own
reference trajectories (never from evaluated games): each ``take X from Y`` counts X's type found at Y's type, and
each ``use`` of a lamp counts the lamp at the place the teacher had walked to; a memory counts each pair once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from duomem.memory.abstract import parse_action, type_of

PRIORS_ID = "where-found"
"""The memory id under which a retrieval's priors are recorded."""


def found_in(actions: Sequence[str]) -> set[tuple[str, str]]:
    """``(object type, receptacle type)`` pairs where one trajectory found something."""
    pairs: set[tuple[str, str]] = set()
    here: str | None = None
    for action in actions:
        p = parse_action(action)
        if p.verb == "go to" and p.place:
            here = p.place
        elif p.verb == "take" and p.obj and p.place:
            pairs.add((type_of(p.obj), type_of(p.place)))
        elif p.verb == "use" and p.place and here:
            pairs.add((type_of(p.place), type_of(here)))
    return pairs


def where_found(trajectories: Iterable[Sequence[str]]) -> dict[str, dict[str, int]]:
    """Object type -> {receptacle type: trajectories that found it there}, most frequent first."""
    return count_found(found_in(actions) for actions in trajectories)


def count_found(found: Iterable[set[tuple[str, str]]]) -> dict[str, dict[str, int]]:
    """:func:`where_found` from each trajectory's :func:`found_in` pairs."""
    counts: dict[str, Counter[str]] = {}
    for pairs in found:
        for obj, place in pairs:
            counts.setdefault(obj, Counter())[place] += 1
    return {obj: dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))) for obj, c in sorted(counts.items())}


def priors_text(priors: dict[str, dict[str, int]], types: Iterable[str], most: int = 6) -> str:
    """The memory block's line for the object ``types`` the task names (empty when the bank knows none)."""
    lines = [f"{t}: " + ", ".join(f"{place} {n}" for place, n in list(priors[t].items())[:most])
             for t in sorted(set(types)) if t in priors]
    if not lines:
        return ""
    return "Where the teacher found these objects (place: times):\n" + "\n".join(lines)
