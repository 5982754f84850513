"""The memory-leakage guard: an evaluation never retrieves from a bank made from the games it is evaluated on.

A bank's memories record the games (and so the split, task folders and floor plans) they were made from. Before a
run plays anything, its games are compared with the bank: a shared game, or an evaluated split that the bank was
built from, stops the run with one line; otherwise each record says what was checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from duomem.envs.base import TaskSpec
from duomem.errors import ConfigError


def _folder(game_id: str) -> str:
    """``<split>/<task folder>/<trial>`` -> the task folder (the same task, other trials)."""
    parts = game_id.split("/")
    return parts[-2] if len(parts) >= 3 else game_id


def _floor_plan(game_id: str) -> str:
    """The floor plan (ALFRED scene) from the task folder's last field (``...-Recep-313`` -> ``313``)."""
    return _folder(game_id).rsplit("-", 1)[-1]


def bank_overlap(bank_path: str | Path, tasks: Sequence[TaskSpec]) -> dict:
    """What the bank at ``bank_path`` shares with ``tasks``: games, task folders, floor plans and splits."""
    from duomem.memory.bank import MemoryBank

    bank = MemoryBank.load(bank_path)
    source_games = {g for e in bank.entries for g in e.source_game_ids}
    source_splits = {e.source_split for e in bank.entries}
    games = {t.game_id for t in tasks}
    return {
        "bank": str(bank_path),
        "bank_splits": sorted(source_splits),
        "bank_games": len(source_games),
        "shared_games": sorted(games & source_games),
        "shared_splits": sorted({t.split for t in tasks} & source_splits),
        "shared_task_folders": len({_folder(g) for g in games} & {_folder(g) for g in source_games}),
        "shared_floor_plans": len({_floor_plan(g) for g in games} & {_floor_plan(g) for g in source_games}),
    }


def check_leakage(bank_path: str | Path, tasks: Sequence[TaskSpec]) -> str:
    """Refuse (one-line :class:`ConfigError`) a bank made from the evaluated games or split; otherwise the note
    that goes into every record of the run."""
    o = bank_overlap(bank_path, tasks)
    if o["shared_games"] or o["shared_splits"]:
        what = (f"{len(o['shared_games'])} of the evaluated games" if o["shared_games"]
                else f"the evaluated split {', '.join(o['shared_splits'])}")
        raise ConfigError(f"memory bank {bank_path} was built from {what}: evaluating with it would leak the "
                          "answers; build the bank from the train split")
    return (f"bank from {', '.join(o['bank_splits'])} ({o['bank_games']} games): 0 evaluated games or splits "
            f"shared; {o['shared_task_folders']} task folders and {o['shared_floor_plans']} floor plans shared")
