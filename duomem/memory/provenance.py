"""Where a game comes from: its task folder and floor plan, read from its id, and how much a memory bank shares
with a set of tasks (leakage: :func:`duomem.memory.bank.bank_overlap`).

ALFWorld game ids (official and generated) are ``<split>/<task folder>/<trial>``, the task folder being
``<type>-<Object>-<MRecep>-<Receptacle>-<floor plan>``: all trials of one task share the folder, all tasks of one
room share the floor plan (``FloorPlan<N>`` of AI2-THOR; generated games use the same numbers).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

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
