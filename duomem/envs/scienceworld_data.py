"""ScienceWorld's task lists: 30 tasks in 10 topics, each task's variations split into train, dev and test.

The table is ScienceWorld 1.2.3's: the task ids (topic-number) of its ``tasks.json`` and the splits its simulator
makes (each task's variations in three consecutive ranges); a test checks both against the package, so listing
tasks needs no JVM. Only the goals do (each variation's task description, read by loading it, about 0.06 s): they
are read once and kept in ``<data root>/scienceworld/goals.json``.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterable
from pathlib import Path

from duomem import settings
from duomem.envs.base import TaskSpec
from duomem.envs.scienceworld import ScienceWorldEnv
from duomem.errors import DataError

SPLITS: tuple[str, ...] = ("train", "dev", "test")
EXPECTED_COUNTS: dict[str, int] = {"train": 3592, "dev": 1796, "test": 1819}
EVAL_PER_TASK = 10
"""Variations per task of an evaluation sample: 271 test episodes over the 30 tasks (all the test variations of the
nine tasks that have fewer than 10)."""

TOPICS: dict[int, str] = {
    1: "Matter",
    2: "Measurement",
    3: "Electricity",
    4: "Classification",
    5: "Biology: growing plants",
    6: "Chemistry",
    7: "Biology: lifespans",
    8: "Biology: life stages",
    9: "Forces",
    10: "Biology: genetics",
}
"""ScienceWorld's ten topics, numbered as its task ids are (``4-2``: topic 4's second task); its ``tasks.json`` calls
topics 5, 7, 8 and 10 all "Biology"."""

TASKS: dict[str, tuple[str, int, int, int]] = {
    # name: (task id, first dev variation, first test variation, variations); train is 0 .. first dev - 1
    "boil": ("1-1", 14, 21, 30),
    "melt": ("1-2", 14, 21, 30),
    "freeze": ("1-3", 14, 21, 30),
    "change-the-state-of-matter-of": ("1-4", 14, 21, 30),
    "use-thermometer": ("2-1", 270, 405, 540),
    "measure-melting-point-known-substance": ("2-2", 218, 327, 436),
    "measure-melting-point-unknown-substance": ("2-3", 150, 225, 300),
    "power-component": ("3-1", 10, 15, 20),
    "power-component-renewable-vs-nonrenewable-energy": ("3-2", 10, 15, 20),
    "test-conductivity": ("3-3", 450, 675, 900),
    "test-conductivity-of-unknown-substances": ("3-4", 300, 450, 600),
    "find-living-thing": ("4-1", 150, 225, 300),
    "find-non-living-thing": ("4-2", 150, 225, 300),
    "find-plant": ("4-3", 150, 225, 300),
    "find-animal": ("4-4", 150, 225, 300),
    "grow-plant": ("5-1", 62, 93, 126),
    "grow-fruit": ("5-2", 62, 93, 126),
    "chemistry-mix": ("6-1", 16, 24, 32),
    "chemistry-mix-paint-secondary-color": ("6-2", 18, 27, 36),
    "chemistry-mix-paint-tertiary-color": ("6-3", 18, 27, 36),
    "lifespan-longest-lived": ("7-1", 62, 93, 125),
    "lifespan-shortest-lived": ("7-2", 62, 93, 125),
    "lifespan-longest-lived-then-shortest-lived": ("7-3", 62, 93, 125),
    "identify-life-stages-1": ("8-1", 6, 9, 14),
    "identify-life-stages-2": ("8-2", 4, 6, 10),
    "inclined-plane-determine-angle": ("9-1", 84, 126, 168),
    "inclined-plane-friction-named-surfaces": ("9-2", 692, 1038, 1386),
    "inclined-plane-friction-unnamed-surfaces": ("9-3", 80, 120, 162),
    "mendelian-genetics-known-plant": ("10-1", 60, 90, 120),
    "mendelian-genetics-unknown-plant": ("10-2", 240, 360, 480),
}
"""The 30 tasks in task-id order, by the names the simulator loads."""


def scienceworld_root(data_root: Path | None = None) -> Path:
    """Folder that holds ScienceWorld's goal cache."""
    return (data_root or settings.data_root()) / "scienceworld"


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise DataError(f"unknown ScienceWorld task {task!r}; choose from {', '.join(TASKS)}")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown ScienceWorld split {split!r}; choose from {', '.join(SPLITS)}")


def topic_of(task: str) -> int:
    """The topic number (1-10) of ``task``."""
    _check_task(task)
    return int(TASKS[task][0].split("-")[0])


def variations(task: str, split: str) -> list[int]:
    """The variation indices of ``task`` in ``split``, ascending."""
    _check_task(task)
    _check_split(split)
    _, dev, test, total = TASKS[task]
    start, end = {"train": (0, dev), "dev": (dev, test), "test": (test, total)}[split]
    return list(range(start, end))


def split_of(task: str, variation: int) -> str:
    """The split ``task``'s ``variation`` belongs to."""
    for split in SPLITS:
        if variation in variations(task, split):
            return split
    raise DataError(f"{task} has no variation {variation} (it has {TASKS[task][3]})")


def sample_variations(task: str, split: str, n: int, seed: int = 0) -> list[int]:
    """``n`` variations of ``task`` in ``split`` (all if it has no more), ascending: the same for the same seed on
    every machine (Python's ``random`` seeded with the seed, task and split)."""
    population = variations(task, split)
    if n >= len(population):
        return population
    return sorted(random.Random(f"{seed}:{task}:{split}").sample(population, n))


def episodes(split: str, tasks: Iterable[str] | None = None, per_task: int | None = None,
             seed: int = 0) -> list[tuple[str, int]]:
    """``(task, variation)`` of ``split``: every variation of ``tasks`` (default all 30, in task-id order), or
    ``per_task`` of each sampled with ``seed`` (see :func:`sample_variations`). Needs no JVM."""
    chosen = list(TASKS) if tasks is None else list(tasks)
    for task in chosen:
        _check_task(task)
    return [(task, v) for task in chosen
            for v in (variations(task, split) if per_task is None else sample_variations(task, split, per_task, seed))]


def game_id(task: str, variation: int) -> str:
    """``scienceworld/<task>/<variation>``."""
    return f"scienceworld/{task}/{variation}"


def task_spec(task: str, variation: int, goal: str = "") -> TaskSpec:
    """The TaskSpec of ``task``'s ``variation`` (``goal``: its task description)."""
    _check_task(task)
    return TaskSpec(game_id=game_id(task, variation), split=split_of(task, variation), task_type=task,
                    game_file=task, goal=goal, source="scienceworld",
                    params={"task_id": TASKS[task][0], "topic": str(topic_of(task)), "variation": str(variation)})


def load_tasks(split: str, tasks: Iterable[str] | None = None, per_task: int | None = None, seed: int = 0,
               env: ScienceWorldEnv | None = None, data_root: Path | None = None) -> list[TaskSpec]:
    """The TaskSpecs of :func:`episodes`, with their goals: from the goal cache, else read from the simulator (in
    ``env``, or in a JVM started for it and stopped after) and added to the cache."""
    chosen = episodes(split, tasks, per_task, seed)
    path = scienceworld_root(data_root) / "goals.json"
    goals: dict[str, str] = {}
    if path.is_file():
        try:
            goals = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"broken goal cache {path}: {exc}; delete it (it is rebuilt)") from exc
    missing = [(t, v) for t, v in chosen if game_id(t, v) not in goals]
    if missing:
        own = env is None
        reader = ScienceWorldEnv(admissible=False) if env is None else env
        try:
            for t, v in missing:
                goals[game_id(t, v)] = reader.task_description(t, v)
        finally:
            if own:
                reader.close()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(goals, sort_keys=True, indent=0))
        os.replace(tmp, path)
    return [task_spec(t, v, goals[game_id(t, v)]) for t, v in chosen]


def default_per_task(split: str) -> int | None:
    """Variations per task a prepared ``split`` holds by default: :data:`EVAL_PER_TASK` for dev and test (the fixed
    evaluation samples), every variation (None) for train."""
    return None if split == "train" else EVAL_PER_TASK


def prepare(splits: Iterable[str] = SPLITS, per_task: int | None = None, seed: int = 0,
            tasks: Iterable[str] | None = None, data_root: Path | None = None) -> dict:
    """Write a ScienceWorld task set in the layout of the ALFWorld ones: ``index/<split>.jsonl`` of TaskSpecs in
    :func:`scienceworld_root` (``<data root>/scienceworld``, beside the goal cache), so that
    ``duomem eval --tasks <that folder> --split test`` plays it. Each split holds ``per_task`` variations of each
    task sampled with ``seed`` (:func:`sample_variations`; 0: every variation; None: :func:`default_per_task`).
    Goals missing from the cache are read in one JVM (about 0.06 s each). ``prepare.json`` records what each split
    holds. Returns ``{"root", "splits": {split: {"games", "per_task", "seed", "per_topic"}}}``."""
    from duomem.envs.alfworld_data import write_index

    chosen = list(TASKS) if tasks is None else list(tasks)
    splits = list(splits)
    for split in splits:
        _check_split(split)
    if per_task is not None and per_task < 0:
        raise DataError(f"per_task must be 0 (every variation) or more, not {per_task}")
    root = scienceworld_root(data_root)
    (root / "index").mkdir(parents=True, exist_ok=True)
    manifest_path = root / "prepare.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    env: ScienceWorldEnv | None = None
    report: dict = {"root": str(root), "splits": {}}
    try:
        for split in splits:
            n = default_per_task(split) if per_task is None else (per_task or None)
            needed = episodes(split, chosen, n, seed)
            if env is None and not _goals_cached(needed, data_root):
                env = ScienceWorldEnv(admissible=False)
            rows = load_tasks(split, chosen, n, seed, env=env, data_root=data_root)
            write_index(root / "index" / f"{split}.jsonl", rows)
            per_topic: dict[str, int] = {}
            for row in rows:
                topic = TOPICS[int(row.params["topic"])]
                per_topic[topic] = per_topic.get(topic, 0) + 1
            info = {"games": len(rows), "per_task": n, "seed": seed, "tasks": len(chosen), "per_topic": per_topic}
            manifest[split] = {k: v for k, v in info.items() if k != "per_topic"}
            report["splits"][split] = info
    finally:
        if env is not None:
            env.close()
    tmp = manifest_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, manifest_path)
    return report


def _goals_cached(chosen: list[tuple[str, int]], data_root: Path | None) -> bool:
    path = scienceworld_root(data_root) / "goals.json"
    if not path.is_file():
        return not chosen
    try:
        goals = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return all(game_id(t, v) in goals for t, v in chosen)
