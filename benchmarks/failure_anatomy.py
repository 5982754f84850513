"""Failure anatomy: why each lost game of an evaluation run was lost, one class per game, from its records.

    python benchmarks/failure_anatomy.py RUN_DIR [RUN_DIR ...] [--out benchmarks/results/NAME]

RUN_DIR holds ``episodes.jsonl`` (plain or packed, ``.xz`` or ``.gz``). Prints Markdown tables per run (lost games per
class, overall and per task type); ``--out`` also writes NAME.json (per run: n_episodes, n_lost, counts per
class, per-type counts and every lost game with its class and facts) and NAME.md. Other scripts import it:
from the repo root (tests) ``from benchmarks.failure_anatomy import anatomy, classify``; from a script in
benchmarks/ ``from failure_anatomy import anatomy``.

The target is the task's object type (``params['object']``; for records without params, the game folder
``<task>-<Object>-<MoveableReceptacle|None>-<Receptacle or lamp>-<floorplan>``, lowercased) and its receptacle
type (the lamp for ``examine``). "Seen" means "<type> <n>" in the observation of a step (the initial
observation lists only receptacles and is excluded), including the contents shown by ``open`` or on arrival at
an open receptacle. Each lost game gets the first class whose rule holds:

1. ``never_saw_target``: no observation names an instance of the target object type.
2. ``closed_receptacle``: a ``take X from R`` or ``move X to R`` (``put X in/on R`` in old records) was
   answered "Nothing happens." while R's last known state was closed ("The R is closed." on arrival or
   ``examine``, or "You close the R.", not followed by "You open the R."). Counted even where the agent later
   opened R and recovered: the class names the first blunder of that kind, not necessarily the one that cost
   the game (in the two rows below no game recovered).
3. ``lamp_not_used`` (examine only): the target was picked up but no ``use`` ever answered "You turn on ...".
4. ``pick_two_second`` (pick_two only): at least one target instance was moved into a receptacle of the target
   type; ``detail`` says whether a placed one was picked up again (``taken_back``), a second instance was
   never seen (``second_not_seen``) or was seen but not placed (``second_not_placed``).
5. ``wrong_object``: the target was never picked up, but some other object was, and was then heated, cooled,
   cleaned or moved into a receptacle of the target type, or held while a lamp was turned on (examine).
6. ``other``: none of these (e.g. took the target and wandered, or never took a target it had seen).

Every lost game also carries ``saw_target``, ``took_target`` (a "You pick up the <object> <n>" answer),
``invented_places`` (``go to X n`` commands whose "X n" is not among the receptacles of the initial
observation; a listed place answered "Nothing happens." is not counted), ``steps``, ``invalid_actions`` and
``ran_to_limit`` (steps >= the run's ``max_steps`` from run.json, else 50).

Sanity check against the project's notes: the LoRA free-play row
(smollm2-135m-valid_unseen/eval_lora-1eb8f8a04d1f) loses 24 games, 14 never seeing the target; the scored row
(action-selection/valid_unseen/lora-score) loses 14, 11 never seeing it. This script finds the same numbers.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from duomem.eval.records import EpisodeRecord
from duomem.jsonl import atomic_write_json, atomic_write_text, read_jsonl

CLASSES = (
    "never_saw_target", "closed_receptacle", "lamp_not_used", "pick_two_second", "wrong_object", "other",
)
TYPES = ("pick", "clean", "heat", "cool", "examine", "pick_two")
DEFAULT_MAX_STEPS = 50
REPO = Path(__file__).resolve().parents[1]
NOTHING = "Nothing happens."

_INSTANCE = r"[a-z]+ \d+"
_PLACE_CMD = re.compile(rf"^(?:take|move|put) ({_INSTANCE}) (?:from|to|in/on|in|on) ({_INSTANCE})$")
_GO_CMD = re.compile(rf"^go to ({_INSTANCE})$")
_STATE = re.compile(rf"\bThe ({_INSTANCE}) is (open|closed)\b")
_OPENED = re.compile(rf"\bYou open the ({_INSTANCE})\b")
_CLOSED = re.compile(rf"\bYou close the ({_INSTANCE})\b")
_PICKED = re.compile(rf"\bYou pick up the ({_INSTANCE}) from the ({_INSTANCE})\b")
_MOVED = re.compile(rf"\bYou (?:move|put) the ({_INSTANCE}) (?:to|in|on|in/on) the ({_INSTANCE})\b")
_TREATED = re.compile(rf"\bYou (?:heat|cool|clean) the ({_INSTANCE}) using\b")
_TURNED_ON = re.compile(rf"\bYou turn on the ({_INSTANCE})\b")


def _kind(instance: str) -> str:
    """``"drawer 3"`` -> ``"drawer"``."""
    return instance.rsplit(" ", 1)[0]


def _targets(record: EpisodeRecord) -> tuple[str, str]:
    """Target object and receptacle types (the lamp for examine): from params, else from the game folder."""
    params = record.trajectory.params
    if params.get("object"):
        return params["object"].lower(), (params.get("receptacle") or params.get("toggle") or "").lower()
    folder = next((p for p in record.game_id.split("/") if p.count("-") >= 4), record.game_id)
    parts = folder.split("-")
    return parts[1].lower(), parts[3].lower()


def _rooms_receptacles(initial_observation: str) -> set[str]:
    """The "X n" receptacles the initial observation lists (the part before the task)."""
    return set(re.findall(rf"\b{_INSTANCE}\b", initial_observation.split("Your task is to")[0]))


def _as_record(record: EpisodeRecord | dict) -> EpisodeRecord:
    return record if isinstance(record, EpisodeRecord) else EpisodeRecord.model_validate(record)


def classify(record: EpisodeRecord | dict, max_steps: int = DEFAULT_MAX_STEPS) -> dict:
    """The failure class and facts of one episode (``class`` is None for a won game; ``detail``: the failed
    command for closed_receptacle, the sub-case for pick_two_second)."""
    rec = _as_record(record)
    obj, recep = _targets(rec)
    seen_obj = re.compile(rf"\b{re.escape(obj)} \d+\b")
    places = _rooms_receptacles(rec.trajectory.initial_observation)
    state: dict[str, str] = {}
    saw = took = lamp_on = False
    holding: str | None = None
    invented = 0
    closed_fail: str | None = None
    seen_instances: set[str] = set()
    placed: set[str] = set()
    taken_back = False
    other_taken = other_task_like = False
    for step in rec.trajectory.steps:
        if step.kind != "action":
            continue
        cmd, obs = step.text.strip(), step.observation
        if (go := _GO_CMD.match(cmd)) and go.group(1) not in places:
            invented += 1
        place = _PLACE_CMD.match(cmd)
        if place and obs.strip() == NOTHING and state.get(place.group(2)) == "closed":
            closed_fail = closed_fail or cmd
        found = set(seen_obj.findall(obs))
        seen_instances |= found
        saw = saw or bool(found)
        for r, s in _STATE.findall(obs):
            state[r] = s
        for r in _OPENED.findall(obs):
            state[r] = "open"
        for r in _CLOSED.findall(obs):
            state[r] = "closed"
        if picked := _PICKED.search(obs):
            holding = picked.group(1)
            if _kind(holding) == obj:
                took = True
                taken_back = taken_back or holding in placed
                placed.discard(holding)
            else:
                other_taken = True
        if moved := _MOVED.search(obs):
            thing, where = moved.groups()
            if _kind(where) == recep:
                if _kind(thing) == obj:
                    placed.add(thing)
                else:
                    other_task_like = True
            holding = None
        if (treated := _TREATED.search(obs)) and _kind(treated.group(1)) != obj:
            other_task_like = True
        if _TURNED_ON.search(obs):
            lamp_on = True
            if holding is not None and _kind(holding) != obj:
                other_task_like = True
    facts = {"game_id": rec.game_id, "sample": rec.sample, "task_type": rec.task_type, "won": rec.won,
             "saw_target": saw, "took_target": took, "invented_places": invented, "steps": rec.steps,
             "invalid_actions": rec.invalid_actions, "ran_to_limit": rec.steps >= max_steps}
    if rec.won:
        return {**facts, "class": None, "detail": None}
    detail: str | None = None
    if not saw:
        cls = "never_saw_target"
    elif closed_fail:
        cls, detail = "closed_receptacle", closed_fail
    elif rec.task_type == "examine" and took and not lamp_on:
        cls = "lamp_not_used"
    elif rec.task_type == "pick_two" and (placed or taken_back):
        cls = "pick_two_second"
        detail = ("taken_back" if taken_back else
                  "second_not_seen" if len(seen_instances - placed) == 0 else "second_not_placed")
    elif not took and other_taken and other_task_like:
        cls = "wrong_object"
    else:
        cls = "other"
    return {**facts, "class": cls, "detail": detail}


def anatomy(records: Iterable[EpisodeRecord | dict], max_steps: int = DEFAULT_MAX_STEPS) -> dict:
    """Counts per class, overall and per task type, and the classified lost games of one run's records."""
    rows = [classify(r, max_steps) for r in records]
    lost = [r for r in rows if not r["won"]]
    by_type: dict[str, dict] = {}
    for t in [*TYPES, *sorted({r["task_type"] for r in rows} - set(TYPES))]:
        of_type = [r for r in rows if r["task_type"] == t]
        if of_type:
            c = Counter(r["class"] for r in of_type if not r["won"])
            by_type[t] = {"n_episodes": len(of_type), "n_lost": sum(not r["won"] for r in of_type),
                          "counts": {k: c.get(k, 0) for k in CLASSES}}
    counts = Counter(r["class"] for r in lost)
    games = [{k: v for k, v in r.items() if k != "won"} for r in lost]
    return {"n_episodes": len(rows), "n_lost": len(lost), "counts": {k: counts.get(k, 0) for k in CLASSES},
            "saw_target": sum(r["saw_target"] for r in lost),
            "took_target": sum(r["took_target"] for r in lost),
            "ran_to_limit": sum(r["ran_to_limit"] for r in lost),
            "invented_places": sum(r["invented_places"] for r in lost), "by_type": by_type, "games": games}


def _max_steps(run_dir: Path) -> int:
    meta = run_dir / "run.json"
    if meta.is_file():
        return int(json.loads(meta.read_text()).get("spec", {}).get("max_steps") or DEFAULT_MAX_STEPS)
    return DEFAULT_MAX_STEPS


def run_anatomy(run_dir: Path) -> dict:
    """:func:`anatomy` of the records in ``run_dir`` (``episodes.jsonl``, plain or packed)."""
    run_dir = Path(run_dir)
    rows = read_jsonl(run_dir / "episodes.jsonl")
    if not rows:
        raise SystemExit(f"{run_dir} holds no episode records")
    name = run_dir.resolve()
    name = name.relative_to(REPO) if name.is_relative_to(REPO) else name
    return {"run": str(name), **anatomy(rows, _max_steps(run_dir))}


def markdown(result: dict) -> str:
    """One run's tables: lost games per class, then per task type."""
    n = result["n_lost"]
    head = "| task type | episodes | lost | " + " | ".join(CLASSES) + " |"
    lines = [f"### {result['run']}", "",
             f"{result['n_episodes']} episodes, {n} lost: {result['saw_target']} saw the target, "
             f"{result['took_target']} took it, {result['ran_to_limit']} ran to the step limit, "
             f"{result['invented_places']} `go to` commands to places the room does not have.", "",
             "| class | lost games | share |", "|---|---:|---:|"]
    lines += [f"| {k} | {v} | {v / n:.0%} |" if n else f"| {k} | {v} | - |"
              for k, v in result["counts"].items()]
    lines += ["", head, "|---|" + "---:|" * (len(CLASSES) + 2)]
    for t, row in result["by_type"].items():
        lines.append(f"| {t} | {row['n_episodes']} | {row['n_lost']} | "
                     + " | ".join(str(row["counts"][k]) for k in CLASSES) + " |")
    lines.append(f"| all | {result['n_episodes']} | {n} | "
                 + " | ".join(str(result["counts"][k]) for k in CLASSES) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument("--out", type=Path, help="write OUT.json and OUT.md (e.g. benchmarks/results/NAME)")
    args = parser.parse_args(argv)
    results = [run_anatomy(r) for r in args.runs]
    text = "\n".join(markdown(r) for r in results)
    print(text)
    if args.out:
        data = {"classes": list(CLASSES), "runs": results}
        atomic_write_json(args.out.with_name(args.out.name + ".json"), data)
        atomic_write_text(args.out.with_name(args.out.name + ".md"), "# Failure anatomy\n\n" + text)


if __name__ == "__main__":
    main()
