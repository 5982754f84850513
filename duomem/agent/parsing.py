"""Map a model's free text onto an admissible command: exact, normalised or a unique completion; anything else is
played as written (and counted invalid), never turned into another command."""

from __future__ import annotations

import re
from dataclasses import dataclass

from duomem.llm.base import THINK_PREFIX

INVALID_MATCHES = frozenset({"unmatched", "forced", "empty", "closest"})
"""Match kinds that count as invalid actions (``closest`` only in records written before issue 13)."""
_ARTICLES = {"a", "an", "the", "some"}
LOOK_COMMANDS = ("look", "look around")
"""What an empty answer plays, the first one admissible: ALFWorld's ``look``, ScienceWorld's ``look around``
(without admissible commands, ``look``, which both games answer with the room)."""


@dataclass(frozen=True)
class ParsedAction:
    """What the agent's output means for the game."""

    kind: str
    """``think`` (a thought, the game is not stepped) or ``action``."""
    command: str
    """The admissible command to send (the thought text for ``think``)."""
    match: str
    """``exact``, ``normalised`` (wording or a unique completion), ``unmatched`` (not an admissible command:
    played as written), ``forced`` (a thought where a command was due), ``empty`` or ``think``; the kinds in
    :data:`INVALID_MATCHES` are invalid actions."""

    @property
    def invalid(self) -> bool:
        return self.match in INVALID_MATCHES


def first_line(text: str) -> str:
    """The first non-empty line, without a leading prompt marker (``>``), quotes or code fences."""
    for line in text.strip().splitlines():
        line = line.strip().strip("`").strip()
        line = re.sub(r"^(>|action:|command:|assistant:)\s*", "", line, flags=re.IGNORECASE).strip()
        line = line.strip("\"'").strip()
        if line:
            return line
    return ""


def normalise(command: str) -> str:
    """Lower-case, ALFWorld 0.4 grammar (``move X to Y``), no articles or punctuation, single spaces."""
    text = command.lower().strip().rstrip(".!")
    text = re.sub(r"[^a-z0-9 ]+", " ", text)
    words = [w for w in text.split() if w not in _ARTICLES]
    text = " ".join(words)
    # Older ALFWorld grammars (and the classic ReAct prompts) said "put X in/on Y".
    text = re.sub(r"^(put|place) (.+?) (in on|into|onto|in|on) (.+)$", r"move \2 to \4", text)
    return text


def parse_action(text: str, admissible: list[str], allow_think: bool = True) -> ParsedAction:
    """Interpret ``text``; never returns an empty command (an empty answer plays ``look``).

    A line that is an admissible command (exactly, after :func:`normalise`, or as the unique completion of one,
    see :func:`resolve`) plays that command. Any other line is played as written (the game answers "Nothing
    happens.") and counts as invalid: it never becomes a different command. With ``allow_think`` False a
    thought is read as a command and counts as invalid even when its text is one."""
    line = first_line(text)
    if line.lower().startswith(THINK_PREFIX):
        thought = line[len(THINK_PREFIX):].strip()
        if allow_think:
            return ParsedAction("think", thought, "think")
        resolved = resolve(thought, admissible) if admissible else None
        return ParsedAction("action", resolved[0] if resolved else (thought or line), "forced")
    if not admissible:
        return ParsedAction("action", line or "look", "exact" if line else "empty")
    if not normalise(line):
        fallback = next((c for c in LOOK_COMMANDS if c in admissible), admissible[0])
        return ParsedAction("action", fallback, "empty")
    resolved = resolve(line, admissible)
    if resolved:
        return ParsedAction("action", *resolved)
    return ParsedAction("action", line, "unmatched")


def resolve(line: str, admissible: list[str]) -> tuple[str, str] | None:
    """The admissible command ``line`` names, with how (``exact`` or ``normalised``), or None.

    ``normalised`` covers wording (case, articles, punctuation, ``put X in/on Y``) and unique completions: the
    words of ``line`` are those of exactly one command, in order, except that the command may go on after them
    ("take mug 1" for "take mug 1 from countertop 1") and may have instance numbers they leave out ("go to
    desk" for "go to desk 1", "take potato from microwave 1" for "take potato 2 from microwave 1"). Every word
    that ``line`` says, numbers included, must be the command's, and it must name an object besides the verb."""
    if line in admissible:
        return line, "exact"
    norm = normalise(line)
    if not norm:
        return None
    by_norm = {normalise(c): c for c in admissible}
    if norm in by_norm:
        return by_norm[norm], "normalised"
    words = norm.split()
    if not any(w not in _LINKS and not w.isdigit() for w in words[1:]):
        return None  # a bare verb ("take", "go to") names nothing
    completions = [c for n, c in by_norm.items() if _completes(words, n.split())]
    if len(completions) == 1:
        return completions[0], "normalised"
    return None


_LINKS = {"to", "from", "in", "on", "with", "into", "onto"}


def _completes(words: list[str], command: list[str]) -> bool:
    """Whether ``command`` is ``words`` with instance numbers filled in and possibly more words at the end."""
    i = 0
    for w in words:
        while i < len(command) and command[i] != w and command[i].isdigit():
            i += 1  # an instance number the text left out
        if i >= len(command) or command[i] != w:
            return False
        i += 1
    return True
