"""The memory-leakage guard: an evaluation never retrieves from a bank made from the games it is evaluated on.

A bank records the games (and so the splits, task folders and floor plans) its memories were made from. Before a
run plays anything, its games are compared with the bank (:func:`duomem.memory.bank.bank_overlap`): a
shared game, or an evaluated split that the bank was built from, stops the run with one line. Shared floor plans
are allowed (valid_seen shares its rooms with train by design) and said in every record.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from duomem.envs.base import TaskSpec
from duomem.errors import ConfigError


def check_leakage(bank_path: str | Path, tasks: Sequence[TaskSpec]) -> str:
    """Refuse (one-line :class:`ConfigError`) a bank made from the evaluated games or split; otherwise the note
    that goes into every record of the run."""
    from duomem.memory.bank import bank_overlap

    o = bank_overlap(bank_path, tasks)
    if o["games"] or o["shared_splits"]:
        what = (f"{o['games']} of the evaluated games" if o["games"]
                else f"the evaluated split {', '.join(o['shared_splits'])}")
        raise ConfigError(f"memory bank {bank_path} was built from {what}: evaluating with it would leak the "
                          "answers; build the bank from the train split")
    return (f"bank from {', '.join(o['bank_splits'])}: 0 of {o['tasks']} evaluated games and 0 splits shared; "
            f"{o['task_folders']} task folders and {o['floor_plans']} floor plans shared")
