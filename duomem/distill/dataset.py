"""SFT data from successful trajectories, in exactly the agent's inference prompt format.

Each won trajectory becomes one multi-turn chat example ``{"messages": [...]}`` (TRL's format): the instructions,
the first turn the agent would see (few-shot examples, retrieved memories, the task), then the trajectory's
commands/thoughts (assistant) and the game's answers (user). Training puts the loss on assistant turns only.
With a history window, each assistant turn becomes its own example with the windowed history the agent would see.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

from duomem.agent.prompts import conversation, fit_history, task_prompt
from duomem.agent.trajectory import Trajectory
from duomem.envs.base import TaskSpec
from duomem.errors import DataError
from duomem.jsonl import atomic_write_json, atomic_write_text
from duomem.memory.build import load_trajectories

TRAIN_FILE = "train.jsonl"
META_FILE = "dataset.json"


def _task_of(traj: Trajectory) -> TaskSpec:
    return TaskSpec(game_id=traj.game_id, split=traj.split, task_type=traj.task_type, game_file="", goal=traj.goal,
                    params=traj.params, source=traj.source)


def trajectory_examples(traj: Trajectory, shots: int, memories: list[tuple[str, str]],
                        history_window: int | None = None) -> list[list[dict]]:
    """The chat examples for one trajectory (one, or one per assistant turn with a history window)."""
    first = task_prompt(traj.task_type, traj.initial_observation, shots, [text for _, text in memories])
    messages = conversation(first, traj.steps)[:-1]  # the game's answer to the last command is not needed
    if history_window is None:
        return [messages]
    examples = []
    for i in range(2, len(messages)):
        if messages[i]["role"] == "assistant":
            context = fit_history(messages[:i], lambda _m: 0, budget=1 << 30, window=history_window)
            examples.append([*context, messages[i]])
    return examples


def build_dataset(trajectories: Path, out: Path, shots: int = 2, memory: str | None = None, top_k: int = 2,
                  history_window: int | None = None, only_won: bool = True,
                  retrieval: str = "similarity") -> dict:
    """Write ``train.jsonl`` and ``dataset.json`` (counts, hash, provenance) into ``out``."""
    trajs = load_trajectories(trajectories)
    chosen = [t for t in trajs if t.won or not only_won]
    if not chosen:
        raise DataError(f"{trajectories} holds no won trajectories to learn from")
    retriever = None
    if memory and top_k > 0:
        from duomem.memory.bank import MemoryBank

        retriever = MemoryBank.load(memory).retriever(top_k, retrieval)  # type: ignore[arg-type]
    lines = []
    for traj in chosen:
        memories = retriever.retrieve_for(_task_of(traj)) if retriever else []
        for messages in trajectory_examples(traj, shots, memories, history_window):
            lines.append(json.dumps({"messages": messages, "game_id": traj.game_id, "task_type": traj.task_type,
                                     "memory_ids": [mid for mid, _ in memories]}))
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
        "memory": memory,
        "top_k": top_k if memory else 0,
        "retrieval": retrieval if memory else None,
        "history_window": history_window,
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
    }
    atomic_write_json(out / META_FILE, meta)
    return meta


def load_examples(data: Path) -> list[list[dict]]:
    path = Path(data) / TRAIN_FILE if Path(data).is_dir() else Path(data)
    if not path.is_file():
        raise DataError(f"no SFT data at {path}; make it with `duomem distill dataset`")
    from duomem.jsonl import read_jsonl

    return [row["messages"] for row in read_jsonl(path)]
