"""SFT data from successful trajectories, in exactly the agent's inference prompt format.

Each won trajectory becomes one multi-turn chat example ``{"messages": [...]}`` (TRL's format): the instructions,
the first turn the agent would see (few-shot examples, retrieved memories, the task), then the trajectory's
commands/thoughts (assistant) and the game's answers (user). Training puts the loss on assistant turns only.
With a history window, each assistant turn becomes its own example with the windowed history the agent would see.

Retrieval for training prompts looks like retrieval at test time: a test game's room is never a source of the
bank, so a training example retrieves no memory of its own task folder or floor plan (``exclude="floor_plan"``).
With ``memory_dropout`` a seeded share of the trajectories is built without the memory block, so one adapter
works with and without memories. A trajectory of a few-shot example game is refused (its prompt would hold its
own answer).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from duomem.agent.prompts import (
    episode_conversation,
    fewshot_examples,
    fit_history,
    substitute_type,
    task_prompt,
)
from duomem.agent.trajectory import Trajectory
from duomem.envs.base import TASK_TYPES, TaskSpec
from duomem.envs.pool import SCIENCEWORLD
from duomem.errors import ConfigError, DataError
from duomem.jsonl import atomic_write_json, atomic_write_text
from duomem.memory.build import load_trajectories

TRAIN_FILE = "train.jsonl"
META_FILE = "dataset.json"


def _task_of(traj: Trajectory) -> TaskSpec:
    return TaskSpec(game_id=traj.game_id, split=traj.split, task_type=traj.task_type, game_file="", goal=traj.goal,
                    params=traj.params, source=traj.source)


def trajectory_examples(traj: Trajectory, shots: int, memories: list[tuple[str, str]],
                        history_window: int | None = None, fewshot: str = "train", note: bool = False,
                        example_type: str | None = None) -> list[list[dict]]:
    """The chat examples for one trajectory (one, or one per assistant turn with a history window); the prompt's
    solved examples are of ``example_type`` when given (see :func:`duomem.agent.prompts.task_prompt`)."""
    first = task_prompt(traj.task_type, traj.initial_observation, shots, [text for _, text in memories], fewshot,
                        traj.source, example_type)
    messages = episode_conversation(first, traj, note)[:-1]  # the game's answer to the last command is not needed
    if history_window is None:
        return [messages]
    examples = []
    for i in range(2, len(messages)):
        if messages[i]["role"] == "assistant":
            context = fit_history(messages[:i], lambda _m: 0, budget=1 << 30, window=history_window)
            examples.append([*context, messages[i]])
    return examples


def dropped_trajectories(trajectory_ids: list[str], share: float, seed: int = 0,
                         what: str = "memory dropout") -> set[str]:
    """The ids of ``round(share * n)`` of the ``n`` distinct ``trajectory_ids``, drawn with ``seed`` (and ``what``
    they are drawn for): the same set for the same ids and seed, whatever their order."""
    if not 0.0 <= share <= 1.0:
        raise ConfigError(f"{what} must be between 0 and 1, not {share}")
    ids = sorted(set(trajectory_ids))
    n = round(share * len(ids))
    salt = "duomem-" + what.replace(" ", "-")  # "duomem-memory-dropout" for the memory dropout, as it always was
    return set(random.Random(f"{salt}:{seed}").sample(ids, n)) if n else set()


def fewshot_game_ids(shots: int, fewshot: str = "train") -> set[str]:
    """The games shown as few-shot examples (all of them, of every environment, when ``shots`` > 0)."""
    if shots <= 0:
        return set()
    return {t.game_id for source in ("alfworld", SCIENCEWORLD)
            for examples in fewshot_examples(fewshot, source).values() for t in examples}


def build_dataset(trajectories: Path, out: Path, shots: int = 2, memory: str | None = None, top_k: int = 2,
                  history_window: int | None = None, only_won: bool = True,
                  retrieval: str = "similarity", exclude: str = "floor_plan", memory_dropout: float = 0.0,
                  dropout_seed: int = 0, memory_format: str | None = None, fewshot: str = "train",
                  note: bool = False, leave_out_types: Sequence[str] = (), fewshot_swap: float = 0.0) -> dict:
    """Write ``train.jsonl`` and ``dataset.json`` (counts, hash, provenance) into ``out``.

    ``exclude`` (``game``, ``task`` or ``floor_plan``, see :data:`duomem.memory.bank.EXCLUSIONS`) is what a
    training example may not retrieve; ``memory_dropout`` the share of trajectories whose examples have no memory
    block (drawn with ``dropout_seed``); ``memory_format`` how memories are shown (default: the bank's format);
    ``note`` writes the episodic note under each game answer, as play with ``note`` does. ``leave_out_types``: task
    types the student must not learn (new kinds of task it meets only through memories): their trajectories are left
    out, and so are their memories from every prompt (counted as ``left_out_type_trajectories``).
    ``fewshot_swap``: the share of trajectories (drawn with ``dropout_seed``) whose prompts show solved examples of
    another type (:func:`duomem.agent.prompts.substitute_type`), as a kind of task the student never learned is
    played: those examples can only be solved from the memories, so the student learns to read them.
    Trajectories of the games the prompt shows as few-shot examples (set ``fewshot``, when ``shots`` > 0) are
    left out: their prompts would show their own solution (counted as ``left_out_fewshot``)."""
    unknown = sorted(set(leave_out_types) - set(TASK_TYPES))
    if unknown:
        raise ConfigError(f"unknown task types {unknown} to leave out; choose from {', '.join(TASK_TYPES)}")
    trajs = load_trajectories(trajectories)
    shown = fewshot_game_ids(shots, fewshot)
    left_out = sorted({t.game_id for t in trajs if t.game_id in shown})
    held_out = [t for t in trajs if t.task_type in leave_out_types]
    chosen = [t for t in trajs if (t.won or not only_won) and t.game_id not in shown
              and t.task_type not in leave_out_types]
    if not chosen:
        raise DataError(f"{trajectories} holds no won trajectories to learn from")
    retriever = None
    if memory and top_k > 0:
        from duomem.memory.bank import MemoryBank

        bank = MemoryBank.load(memory).without_types(leave_out_types)
        retriever = bank.retriever(top_k, retrieval, memory_format, exclude)  # type: ignore[arg-type]
    dropped = dropped_trajectories([t.trajectory_id for t in chosen], memory_dropout, dropout_seed)
    if retriever is None:
        dropped = set()
    swapped = dropped_trajectories([t.trajectory_id for t in chosen], fewshot_swap, dropout_seed, "fewshot swap")
    if shots <= 0:
        swapped = set()
    lines = []
    for traj in chosen:
        no_memory = retriever is None or traj.trajectory_id in dropped
        memories = [] if no_memory else retriever.retrieve_for(_task_of(traj))  # type: ignore[union-attr]
        swap = traj.trajectory_id in swapped and traj.task_type in TASK_TYPES  # ALFWorld's types have substitutes
        other = substitute_type(traj.task_type) if swap else None
        for messages in trajectory_examples(traj, shots, memories, history_window, fewshot, note, other):
            row = {"messages": messages, "game_id": traj.game_id, "task_type": traj.task_type,
                   "memory_ids": [mid for mid, _ in memories]}
            if retriever:
                row["memory_dropped"] = traj.trajectory_id in dropped
            lines.append(json.dumps(row))
    text = "".join(line + "\n" for line in lines)
    out = Path(out)
    atomic_write_text(out / TRAIN_FILE, text)
    meta = {
        "examples": len(lines),
        "trajectories": len(chosen),
        "per_type": dict(Counter(t.task_type for t in chosen)),
        "source": str(trajectories),
        "source_policies": sorted({t.policy for t in chosen}),
        "source_models": sorted({t.model for t in chosen if t.model}),
        "shots": shots,
        "fewshot": fewshot,
        "left_out_fewshot": len(left_out),
        "memory": memory,
        "top_k": top_k if memory else 0,
        "retrieval": retrieval if memory else None,
        "history_window": history_window,
        "note": note,
        "left_out_types": sorted(leave_out_types),
        "left_out_type_trajectories": len(held_out),
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
    }
    if fewshot_swap:
        meta.update({"fewshot_swap": fewshot_swap, "trajectories_with_other_examples": len(swapped)})
    if retriever:
        meta.update({"exclude": exclude, "memory_format": retriever.fmt, "memory_dropout": memory_dropout,
                     "dropout_seed": dropout_seed, "trajectories_without_memory": len(dropped)})
    atomic_write_json(out / META_FILE, meta)
    return meta


def load_examples(data: Path) -> list[list[dict]]:
    path = Path(data) / TRAIN_FILE if Path(data).is_dir() else Path(data)
    if not path.is_file():
        raise DataError(f"no SFT data at {path}; make it with `duomem distill dataset`")
    from duomem.jsonl import read_jsonl

    return [row["messages"] for row in read_jsonl(path)]
