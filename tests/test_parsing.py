"""Action parsing: a model's line mapped onto an admissible command, never onto another one."""

import pytest

from duomem.agent.parsing import INVALID_MATCHES, first_line, normalise, parse_action, resolve

pytestmark = pytest.mark.fast

ADMISSIBLE = ["go to countertop 1", "go to countertop 2", "go to desk 1", "look", "inventory",
              "take mug 1 from countertop 1", "move mug 1 to desk 1", "examine desk 1"]


def test_exact_match():
    p = parse_action("go to desk 1", ADMISSIBLE)
    assert (p.kind, p.command, p.match, p.invalid) == ("action", "go to desk 1", "exact", False)


def test_normalised_forms():
    assert parse_action("> Go to the desk 1.", ADMISSIBLE).command == "go to desk 1"
    assert parse_action("put mug 1 in/on desk 1", ADMISSIBLE).command == "move mug 1 to desk 1"
    assert parse_action("put mug 1 on desk 1", ADMISSIBLE).match == "normalised"
    # a unique completion ("take mug 1" -> "take mug 1 from countertop 1") is still valid
    assert parse_action("take mug 1", ADMISSIBLE).command == "take mug 1 from countertop 1"
    assert parse_action("go to desk", ADMISSIBLE).command == "go to desk 1"
    assert parse_action("take mug from countertop", ADMISSIBLE).command == "take mug 1 from countertop 1"
    assert not parse_action("take mug 1", ADMISSIBLE).invalid


def test_unmatched_is_played_as_written_and_invalid():
    p = parse_action("walk over to the desk number one", ADMISSIBLE)
    assert (p.kind, p.command, p.match, p.invalid) == ("action", "walk over to the desk number one", "unmatched",
                                                       True)
    # ambiguous completions are not guessed: two countertops
    assert parse_action("go to countertop", ADMISSIBLE).match == "unmatched"
    # a bare verb names nothing
    assert parse_action("go to", ADMISSIBLE).match == "unmatched"


def test_issue_13_wrong_object_is_not_substituted():
    admissible = ["take egg 1 from microwave 1", "close microwave 1", "go to fridge 1", "look"]
    for text, expected in [("take potato 2 from microwave 1", "take potato 2 from microwave 1"),
                           ("take egg 2 from microwave 1", "take egg 2 from microwave 1"),
                           ("go to cabinet 1", "go to cabinet 1"),
                           ("go to fridge 10", "go to fridge 10"),
                           ("open microwave 1", "open microwave 1")]:
        p = parse_action(text, admissible)
        assert (p.command, p.match, p.invalid) == (expected, "unmatched", True), text
    cabinets = [f"go to cabinet {i}" for i in (1, 2, 10, 11)]
    assert parse_action("go to cabinet 1", cabinets).command == "go to cabinet 1"
    assert parse_action("go to cabinet 3", cabinets).match == "unmatched"


def test_fallback_never_changes_verb_or_object():
    """Whatever the text, the command played is the text itself or an admissible command whose words contain
    every word the text says (same verb, same objects and numbers)."""
    admissible = ["go to cabinet 1", "go to cabinet 10", "go to countertop 1", "take apple 1 from countertop 1",
                  "take apple 2 from countertop 1", "take egg 1 from countertop 1", "heat egg 1 with microwave 1",
                  "move egg 1 to countertop 1", "open cabinet 1", "look", "inventory", "examine countertop 1"]
    texts = ["go to cabinet", "go to cabinet 2", "take apple from countertop 1", "take apple 3 from countertop 1",
             "take egg", "take the egg from the countertop", "heat egg 1 with stoveburner 1", "put egg 1 on cabinet 1",
             "open cabinet", "open drawer 1", "cool egg 1 with fridge 1", "examine cabinet 1", "go to microwave 1",
             "Take Egg 1 From Countertop 1.", "take apple 1", "take apple", "slice apple 1 with knife 1"]
    for text in texts:
        p = parse_action(text, admissible)
        if p.command not in admissible:
            assert p.command == first_line(text) and p.match == "unmatched" and p.invalid, text
            continue
        said, played = normalise(text).split(), normalise(p.command).split()
        assert said[0] == played[0], text
        assert all(w in played for w in said), (text, p.command)


def test_think_and_forced_action():
    p = parse_action("think: I need a mug.", ADMISSIBLE)
    assert (p.kind, p.command, p.invalid) == ("think", "I need a mug.", False)
    forced = parse_action("think: go to desk 1", ADMISSIBLE, allow_think=False)
    assert forced.kind == "action" and forced.command == "go to desk 1" and forced.invalid
    other = parse_action("think: I need a mug", ADMISSIBLE, allow_think=False)
    assert other.command == "I need a mug" and other.match == "forced" and other.invalid


def test_never_empty():
    for text in ["", "   \n  ", "!!!", "```"]:
        p = parse_action(text, ADMISSIBLE)
        assert p.command and p.command in ADMISSIBLE and p.invalid


def test_resolve_and_invalid_kinds():
    assert resolve("go to desk 1", ADMISSIBLE) == ("go to desk 1", "exact")
    assert resolve("Examine the desk 1", ADMISSIBLE) == ("examine desk 1", "normalised")
    assert resolve("examine desk 2", ADMISSIBLE) is None
    assert {"unmatched", "forced", "empty"} <= INVALID_MATCHES and "normalised" not in INVALID_MATCHES


def test_first_line_and_normalise():
    assert first_line("\n\n> open fridge 1\nnext") == "open fridge 1"
    assert normalise("Place the Apple 2 into Fridge 1.") == "move apple 2 to fridge 1"
