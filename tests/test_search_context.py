"""Context for search (issue 27): the episodic note, typed memories and where-found priors, on real records and
the shipped teacher bank."""

from __future__ import annotations

from pathlib import Path

from duomem.agent.note import compact, places_of, room_notes
from duomem.agent.prompts import episode_conversation
from duomem.agent.trajectory import Step, Trajectory
from duomem.envs.base import TaskSpec
from duomem.jsonl import read_jsonl
from duomem.memory.bank import MemoryBank
from duomem.memory.priors import PRIORS_ID, found_in

REPO = Path(__file__).resolve().parents[1]
LORA_ROW = REPO / "benchmarks" / "runs" / "smollm2-135m-valid_unseen" / "eval_lora-1eb8f8a04d1f"
BANK = REPO / "adapters" / "smollm2-135m-duomem" / "bank"


def _lost_examine() -> Trajectory:
    rows = read_jsonl(LORA_ROW / "episodes.jsonl")
    row = next(r for r in rows if not r["won"] and r["task_type"] == "examine")
    return Trajectory.model_validate(row["trajectory"])


def test_the_note_tracks_visits_closed_places_and_the_task_objects_seen():
    traj = _lost_examine()
    places = places_of(traj.initial_observation)
    assert places[:3] == ["bed 1", "desk 2", "desk 1"] and "shelf 1" in places
    notes = room_notes(traj.initial_observation, traj.goal, traj.steps)
    assert len(notes) == len(traj.steps)
    by_command: dict[str, str] = {}
    for step, note in zip(traj.steps, notes, strict=True):
        if step.kind == "action":
            by_command.setdefault(step.text, note)  # the first time each command was given
    assert notes[0] == ""  # under a thought's "OK." nothing is written
    assert "shelf 1" not in by_command["go to shelf 2"].split("Closed")[0]
    assert "Closed, not opened: drawer 1" in by_command["go to drawer 1"]
    assert "Closed, not opened" not in by_command["open drawer 1"]
    assert "Seen: desklamp 1 (shelf 3)" in by_command["go to shelf 3"]
    assert "alarmclock 1 (desk 2)" in by_command["go to desk 2"]
    assert "alarmclock" not in by_command["take alarmclock 1 from desk 2"]  # picked up: no longer lying there


def test_the_note_is_the_same_at_play_and_in_training_data():
    traj = _lost_examine()
    with_note = episode_conversation("task", traj, note=True)
    plain = episode_conversation("task", traj, note=False)
    assert len(with_note) == len(plain)
    assert with_note[3]["content"] == plain[3]["content"] == "OK.\n>"  # the answer to a thought
    assert with_note[5]["content"].startswith(plain[5]["content"][:-2]) and "\nNote: " in with_note[5]["content"]
    assert all(a["content"] == b["content"] for a, b in zip(with_note, plain, strict=True) if a["role"] != "user")
    steps = [Step(kind="action", text="go to drawer 9", observation="Nothing happens.")]
    assert "drawer 9" not in room_notes(traj.initial_observation, traj.goal, steps)[0].split(":")[1]


def test_compact_place_lists():
    assert compact(["drawer 3", "drawer 1", "drawer 2", "shelf 5", "drawer 6", "bed 1", "shelf 4"]) == \
        "drawer 1 to 3, drawer 6, shelf 4, shelf 5, bed 1"


def test_typed_memories_and_priors_from_the_shipped_bank():
    bank = MemoryBank.load(BANK)
    entry = next(e for e in bank.entries if e.task_type == "examine")
    text = entry.text("typed")
    assert "Reference actions: go to " in text and not any(ch.isdigit() for ch in text.split("Reference")[1])
    assert found_in(["go to sidetable 1", "take alarmclock 2 from sidetable 1", "go to desk 1", "use desklamp 1"]) \
        == {("alarmclock", "sidetable"), ("desklamp", "desk")}
    priors = bank.where_found()
    assert priors == bank.manifest.get("where_found", priors)
    assert sum(priors["desklamp"].values()) >= 50
    task = TaskSpec(game_id="valid_unseen/look_at_obj_in_light-AlarmClock-None-DeskLamp-308/trial_x",
                    split="valid_unseen", task_type="examine", game_file="", goal="examine the alarmclock with the desklamp")
    got = bank.retriever(2, memory_format="typed").retrieve_for(task)
    assert got[0][0] == PRIORS_ID and "desklamp: sidetable" in got[0][1] and len(got) == 3
    # training prompts never count their own floor plan's memories
    some = next(e for e in bank.entries if e.actions and found_in(e.actions))
    game = some.source_game_ids[0]
    assert bank.where_found(game, "floor_plan") != priors
