"""Map a model's free text onto one admissible command: exact, then normalised, then closest."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

THINK_PREFIX = "think:"
_ARTICLES = {"a", "an", "the", "some"}


@dataclass(frozen=True)
class ParsedAction:
    """What the agent's output means for the game."""

    kind: str
    """``think`` (a thought, the game is not stepped) or ``action``."""
    command: str
    """The admissible command to send (the thought text for ``think``)."""
    match: str
    """``exact``, ``normalised``, ``closest`` (the text was not a valid command), ``empty`` or ``think``."""

    @property
    def invalid(self) -> bool:
        return self.match in ("closest", "empty")


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
    text = re.sub(r"^(put|place) (.+?) (in|on|into|onto|in on) (.+)$", r"move \2 to \4", text)
    return text


def parse_action(text: str, admissible: list[str], allow_think: bool = True) -> ParsedAction:
    """Interpret ``text``; never returns an empty command (falls back to ``look`` or the closest command).

    With ``allow_think`` False a thought is read as a command: it is matched like any other text (and so counts
    as invalid unless it happens to be a command)."""
    line = first_line(text)
    if line.lower().startswith(THINK_PREFIX):
        thought = line[len(THINK_PREFIX):].strip()
        if allow_think:
            return ParsedAction("think", thought, "think")
        best = _closest(thought, admissible) if admissible else "look"
        return ParsedAction("action", best, "closest")
    if not admissible:
        return ParsedAction("action", line or "look", "exact" if line else "empty")
    if line in admissible:
        return ParsedAction("action", line, "exact")
    norm = normalise(line)
    by_norm = {normalise(c): c for c in admissible}
    if norm in by_norm:
        return ParsedAction("action", by_norm[norm], "normalised")
    if not norm:
        fallback = "look" if "look" in admissible else admissible[0]
        return ParsedAction("action", fallback, "empty")
    # "take X" without its receptacle, "go to desk" without a number: a unique completion is still normalised.
    completions = [c for n, c in by_norm.items() if n.startswith(norm + " ")]
    if len(completions) == 1:
        return ParsedAction("action", completions[0], "normalised")
    return ParsedAction("action", _closest(line, admissible), "closest")


def _closest(text: str, admissible: list[str]) -> str:
    """The admissible command most similar to ``text`` (ties: the first in the list)."""
    norm = normalise(text)
    return max(admissible, key=lambda c: (difflib.SequenceMatcher(None, norm, normalise(c)).ratio(),
                                          -admissible.index(c)))
