"""Memories abstracted from the room they came from.

A reference trajectory names the receptacles of one room with their instance numbers (``take mug 1 from shelf
2``). In another room the mug is elsewhere and ``shelf 2`` may not exist, so a student that follows such a memory
walks to the wrong places. :func:`abstract_actions` rewrites the commands so that only what carries over is named:

- no instance numbers anywhere (``mug 1`` -> ``mug``);
- the place where an object was found is named by its role: ``the place where you find the mug``;
- the target receptacle (the task names it), the appliance of a heat/cool/clean step and the lamp keep their type
  (``go to microwave``, ``move mug to desk``): every room of the task has one;
- a run of places visited while searching (nothing taken there) becomes one line: ``search for the mug: go to
  each place where it may be, open it if it is closed``.

:func:`abstract_script` does the same to a script's mentions of the places where objects were found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_INSTANCE = re.compile(r"^([a-z]+) \d+$")
_TOOL_VERBS = ("heat", "cool", "clean", "slice")
_ANY_INSTANCE = re.compile(r"\b([a-z]+) \d+\b")


def type_of(name: str) -> str:
    """``shelf 2`` -> ``shelf``; a name without a number is its own type."""
    m = _INSTANCE.match(name.strip())
    return m.group(1) if m else name.strip()


@dataclass
class _Parsed:
    verb: str
    obj: str | None = None
    place: str | None = None


def parse_action(action: str) -> _Parsed:
    a = action.strip()
    for verb in ("go to", "open", "close", "examine", "use"):
        if a.startswith(verb + " "):
            return _Parsed(verb, place=a[len(verb) + 1:])
    m = re.match(r"^take (.+?) from (.+)$", a)
    if m:
        return _Parsed("take", m.group(1), m.group(2))
    m = re.match(r"^(?:move (.+?) to|put (.+?) (?:in|on|in/on)) (.+)$", a)
    if m:
        return _Parsed("move", m.group(1) or m.group(2), m.group(3))
    m = re.match(r"^(heat|cool|clean|slice) (.+?) with (.+)$", a)
    if m:
        return _Parsed(m.group(1), m.group(2), m.group(3))
    return _Parsed(a)


def role(obj_type: str) -> str:
    return f"the place where you find the {obj_type}"


def _roles(parsed: list[_Parsed]) -> dict[str, str]:
    """Instance name -> role phrase, for the places where something was found (taken) or a lamp was used."""
    roles: dict[str, str] = {}
    last_place: str | None = None
    for p in parsed:
        if p.verb == "take" and p.place and p.obj:
            roles.setdefault(p.place, role(type_of(p.obj)))
        if p.verb == "use" and p.place and last_place and type_of(last_place) != type_of(p.place):
            roles.setdefault(last_place, role(type_of(p.place)))
        if p.verb == "go to" and p.place:
            last_place = p.place
    return roles


def kept_types(actions: list[str], params: dict[str, str] | None = None) -> set[str]:
    """Receptacle types that every room of this task has, so a memory may name them: the target (from the task's
    arguments, else the last ``move``), the appliances of heat/cool/clean steps and the lamp."""
    params = params or {}
    parsed = [parse_action(a) for a in actions]
    keep = {params[k] for k in ("receptacle", "toggle", "mrecep") if params.get(k)}
    moves = [p for p in parsed if p.verb == "move" and p.place]
    if not params.get("receptacle") and moves:
        keep.add(type_of(moves[-1].place or ""))
    for p in parsed:
        if p.verb in _TOOL_VERBS[:3] and p.place:
            keep.add(type_of(p.place))
        if p.verb == "use" and p.place:
            keep.add(type_of(p.place))
    return keep


def abstract_actions(actions: list[str], params: dict[str, str] | None = None) -> list[str]:
    """``actions`` with instance numbers removed and the room's places named by role (see the module doc)."""
    params = params or {}
    parsed = [parse_action(a) for a in actions]
    roles = _roles(parsed)
    keep = kept_types(actions, params)
    target_obj = params.get("object") or next((type_of(p.obj) for p in parsed if p.verb == "take" and p.obj), "object")

    def place_name(place: str) -> str | None:
        """The abstract name of a place, or None for a place visited only while searching."""
        if place in roles:
            return roles[place]
        if type_of(place) in keep or not _INSTANCE.match(place):
            return type_of(place)
        return None

    def sought_after(i: int) -> str:
        for p in parsed[i:]:
            if p.verb == "take" and p.obj:
                return type_of(p.obj)
            if p.verb == "use" and p.place:
                return type_of(p.place)
        return target_obj

    out: list[str] = []
    searching = False
    for i, (action, p) in enumerate(zip(actions, parsed, strict=True)):
        if p.verb in ("go to", "open", "close", "examine") and p.place is not None:
            name = place_name(p.place)
            if name is None:
                if not searching:
                    out.append(f"search for the {sought_after(i)}: go to each place where it may be, open it if "
                               "it is closed")
                searching = True
                continue
            line = f"{p.verb} {name}"
        elif p.verb == "take" and p.obj and p.place:
            line = f"take {type_of(p.obj)} from {roles.get(p.place, type_of(p.place))}"
        elif p.verb == "move" and p.obj and p.place:
            line = f"move {type_of(p.obj)} to {place_name(p.place) or type_of(p.place)}"
        elif p.verb in _TOOL_VERBS and p.obj and p.place:
            line = f"{p.verb} {type_of(p.obj)} with {type_of(p.place)}"
        elif p.verb == "use" and p.place:
            line = f"use {type_of(p.place)}"
        else:
            line = _ANY_INSTANCE.sub(r"\1", action)
        searching = False
        if not out or out[-1] != line:
            out.append(line)
    return out


def abstract_script(script: str, actions: list[str], params: dict[str, str] | None = None) -> str:
    """A script with instance numbers removed and, where a step walks to, opens or takes from the kind of place
    an object was found in (and the task does not name that kind), that place named by role: "go to cabinet,
    take the mug from cabinet" -> "go to the place where you find the mug, take the mug from the place where you
    find the mug". Lists of where objects usually are ("a mug is usually on a countertop or shelf") are kept."""
    text = _ANY_INSTANCE.sub(r"\1", script)
    keep = kept_types(actions, params)
    by_type: dict[str, str] = {}
    for place, phrase in _roles([parse_action(a) for a in actions]).items():
        t = type_of(place)
        if t not in keep:
            by_type.setdefault(t, phrase)
    for t, phrase in by_type.items():
        text = re.sub(rf"\b(go to|open|close|from|at|check|search)\s+(?:the\s+|a\s+|an\s+)?{re.escape(t)}s?\b",
                      rf"\1 {phrase}", text)
    return text
