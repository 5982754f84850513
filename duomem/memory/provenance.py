"""Where a game comes from: its task folder and floor plan, read from its id, and how much a memory bank shares
with a set of tasks (leakage).

ALFWorld game ids (official and generated) are ``<split>/<task folder>/<trial>``, the task folder being
``<type>-<Object>-<MRecep>-<Receptacle>-<floor plan>``: all trials of one task share the folder, all tasks of one
room share the floor plan (``FloorPlan<N>`` of AI2-THOR; generated games use the same numbers).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from duomem.envs.base import TaskSpec

if TYPE_CHECKING:
    from duomem.memory.bank import MemoryBank

FEWSHOT_SCENES: tuple[int, ...] = (29, 215, 226, 315, 325, 404, 425)
"""Floor plans of the few-shot examples (``scripts/build_fewshot.py``): used by none of ALFWorld's task sets
(train, valid_seen, valid_unseen; they are ALFRED's unseen-test rooms) nor by the generated test split of seed 0
(which uses floor plan 9, the eighth such room). Kitchen 29 gives heat, cool and clean; 215 and 315 examine."""

_FOLDER = re.compile(r"^[A-Za-z_]+-[A-Za-z]+-[A-Za-z]+-[A-Za-z]+-(\d+)$")


def task_folder_of(game_id: str) -> str | None:
    """``pick_and_place_simple-Mug-None-Desk-308`` for ``valid_unseen/pick_and_place_simple-Mug-None-Desk-308/
    trial_T2019...``; None for an id of another form."""
    parts = game_id.split("/")
    if len(parts) < 3:
        return None
    folder = parts[-2]
    return folder if _FOLDER.match(folder) else None


def floor_plan_of(game_id: str) -> str | None:
    """The floor plan number of a game (``"308"``), from its task folder; None when the id does not tell."""
    folder = task_folder_of(game_id)
    return folder.rsplit("-", 1)[1] if folder else None


def _sorted_unique(values: Iterable[str | None]) -> list[str]:
    return sorted({v for v in values if v})


def provenance(game_ids: Iterable[str]) -> dict[str, list[str]]:
    """The games, task folders and floor plans of ``game_ids`` (sorted, no duplicates): what a bank manifest
    records about its sources."""
    ids = list(game_ids)
    return {"source_game_ids": sorted(set(ids)),
            "source_task_folders": _sorted_unique(task_folder_of(g) for g in ids),
            "source_floor_plans": sorted(_sorted_unique(floor_plan_of(g) for g in ids), key=int)}


def bank_overlap(bank: MemoryBank | str | Path, tasks: Iterable[TaskSpec]) -> dict:
    """What a bank shares with ``tasks`` (for example the games about to be evaluated).

    Returns ``games`` / ``task_folders`` / ``floor_plans``: how many of the tasks' distinct games, task folders
    and floor plans are also sources of the bank's memories; ``tasks_sharing_game`` / ``..._task_folder`` /
    ``..._floor_plan``: how many of the tasks are affected; ``shared_floor_plans`` (sorted), ``shared_splits``,
    ``tasks`` (the number of tasks) and ``bank_splits``. Works on banks written before their manifest recorded
    task folders and floor plans (read from the entries' game ids then)."""
    from duomem.memory.bank import MemoryBank

    if not isinstance(bank, MemoryBank):
        bank = MemoryBank.load(bank)
    m = bank.manifest
    if "source_game_ids" in m and "source_floor_plans" in m:
        games, folders, plans = (set(m["source_game_ids"]), set(m["source_task_folders"]),
                                 set(m["source_floor_plans"]))
    else:
        p = provenance(g for e in bank.entries for g in e.source_game_ids)
        games, folders, plans = set(p["source_game_ids"]), set(p["source_task_folders"]), set(p["source_floor_plans"])
    tasks = list(tasks)
    t_games = {t.game_id for t in tasks}
    t_folders = {f for t in tasks if (f := task_folder_of(t.game_id))}
    t_plans = {p for t in tasks if (p := floor_plan_of(t.game_id))}
    bank_splits = set(m.get("source_splits") or {e.source_split for e in bank.entries})
    return {
        "tasks": len(tasks),
        "games": len(t_games & games),
        "task_folders": len(t_folders & folders),
        "floor_plans": len(t_plans & plans),
        "tasks_sharing_game": sum(t.game_id in games for t in tasks),
        "tasks_sharing_task_folder": sum(task_folder_of(t.game_id) in folders for t in tasks),
        "tasks_sharing_floor_plan": sum(floor_plan_of(t.game_id) in plans for t in tasks),
        "shared_floor_plans": sorted(t_plans & plans, key=int),
        "shared_splits": sorted({t.split for t in tasks} & bank_splits),
        "bank_splits": sorted(bank_splits),
    }
