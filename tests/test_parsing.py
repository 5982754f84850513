from duomem.agent.parsing import first_line, normalise, parse_action

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


def test_closest_counts_as_invalid():
    p = parse_action("walk over to the desk number one", ADMISSIBLE)
    assert p.match == "closest" and p.invalid and p.command in ADMISSIBLE


def test_think_and_forced_action():
    p = parse_action("think: I need a mug.", ADMISSIBLE)
    assert (p.kind, p.command, p.invalid) == ("think", "I need a mug.", False)
    forced = parse_action("think: go to desk 1", ADMISSIBLE, allow_think=False)
    assert forced.kind == "action" and forced.command == "go to desk 1" and forced.invalid


def test_never_empty():
    for text in ["", "   \n  ", "!!!", "```"]:
        p = parse_action(text, ADMISSIBLE)
        assert p.command and p.command in ADMISSIBLE and p.invalid


def test_first_line_and_normalise():
    assert first_line("\n\n> open fridge 1\nnext") == "open fridge 1"
    assert normalise("Place the Apple 2 into Fridge 1.") == "move apple 2 to fridge 1"
