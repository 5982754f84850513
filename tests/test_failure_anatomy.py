"""benchmarks/failure_anatomy.py on the committed records of the LoRA free-play row (24 of 134 games lost)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from benchmarks.failure_anatomy import CLASSES, anatomy, classify, main
from duomem.jsonl import read_jsonl

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "benchmarks" / "runs" / "smollm2-135m-valid_unseen" / "eval_lora-1eb8f8a04d1f"
VASE = "valid_unseen/pick_and_place_simple-Vase-None-Safe-219/trial_T20190908_205221_748352"
"""Searches shelves and drawers, never finds a vase (14 times it goes to a place the room lacks: drawers 6-12,
shelves 13-15, desks 1-2, countertops 1-2)."""
WATCH = "valid_unseen/pick_and_place_simple-Watch-None-Safe-219/trial_T20190907_074643_810052"
"""Finds and takes watch 1, then ``move watch 1 to safe 1`` while the safe is closed: "Nothing happens."."""
KEYCHAIN = "valid_unseen/pick_two_obj_and_place-KeyChain-None-Safe-219/trial_T20190909_011803_423115"
"""Opens safe 1 and puts keychain 2 in it, then never sees a second keychain."""


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    found = read_jsonl(RUN / "episodes.jsonl")
    assert found, f"no committed records in {RUN}"
    return found


@pytest.fixture(scope="module")
def result(rows: list[dict]) -> dict:
    return anatomy(rows)


def _row(rows: list[dict], game_id: str) -> dict:
    (row,) = [r for r in rows if r["game_id"] == game_id]
    return copy.deepcopy(row)


def test_every_lost_game_gets_one_class(rows: list[dict], result: dict) -> None:
    lost = [r for r in rows if not r["won"]]
    assert result["n_episodes"] == 134 and result["n_lost"] == len(lost) == 24
    assert sorted(g["game_id"] for g in result["games"]) == sorted(r["game_id"] for r in lost)
    assert all(g["class"] in CLASSES for g in result["games"])
    assert sum(result["counts"].values()) == 24
    assert sum(sum(t["counts"].values()) for t in result["by_type"].values()) == 24
    assert all(classify(r)["class"] is None for r in rows if r["won"])
    # the project's notes: 14 of the 24 never see the target object
    assert result["counts"]["never_saw_target"] == 14
    assert result["saw_target"] == 10 and result["ran_to_limit"] == 24


def test_hand_checked_games(rows: list[dict]) -> None:
    vase = classify(_row(rows, VASE))
    assert vase["class"] == "never_saw_target" and not vase["saw_target"] and not vase["took_target"]
    assert vase["invented_places"] == 14 and vase["steps"] == 50 and vase["ran_to_limit"]
    watch = classify(_row(rows, WATCH))
    assert watch["class"] == "closed_receptacle" and watch["saw_target"] and watch["took_target"]
    assert watch["detail"] == "move watch 1 to safe 1"
    keychain = classify(_row(rows, KEYCHAIN))
    assert keychain["class"] == "pick_two_second" and keychain["detail"] == "second_not_seen"


def test_crafted_closed_receptacle(rows: list[dict]) -> None:
    """The keychain game with ``open safe 1`` cut and the move into the (closed) safe failing."""
    row = _row(rows, KEYCHAIN)
    steps = row["trajectory"]["steps"]
    i = next(i for i, s in enumerate(steps) if s["text"] == "open safe 1")
    assert steps[i - 1]["observation"] == "You arrive at safe 1. The safe 1 is closed."
    assert steps[i + 1]["text"] == "move keychain 2 to safe 1"
    steps[i + 1]["observation"] = "Nothing happens."
    del steps[i]
    crafted = classify(row)
    assert crafted["class"] == "closed_receptacle" and crafted["detail"] == "move keychain 2 to safe 1"
    # the same failed move into a receptacle last seen open is not this class
    steps.insert(i, {"kind": "action", "text": "open safe 1",
                     "observation": "You open the safe 1. The safe 1 is open. In it, you see nothing."})
    assert classify(row)["class"] == "other"


def test_targets_from_the_game_folder_without_params(rows: list[dict]) -> None:
    row = _row(rows, WATCH)
    row["trajectory"]["params"] = {}
    assert classify(row)["class"] == "closed_receptacle"


def test_cli_writes_json_and_markdown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main([str(RUN), "--out", str(tmp_path / "anatomy")])
    assert "| never_saw_target | 14 |" in capsys.readouterr().out
    data = json.loads((tmp_path / "anatomy.json").read_text())
    (run,) = data["runs"]
    assert run["n_lost"] == 24 and len(run["games"]) == 24 and run["counts"]["never_saw_target"] == 14
    assert "| all | 134 | 24 | 14 |" in (tmp_path / "anatomy.md").read_text()
