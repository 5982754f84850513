"""Build a memory bank from a trajectories file: pick trajectories, write memories (resumable), dedupe, embed."""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Literal, get_args

from duomem.agent.prompts import transcript
from duomem.agent.trajectory import Trajectory
from duomem.envs.base import TASK_TYPES
from duomem.errors import ConfigError, DataError
from duomem.jsonl import (
    JsonlAppender,
    atomic_write_json,
    atomic_write_text,
    pack_jsonl,
    packed_path,
    read_jsonl,
)
from duomem.llm.base import ChatModel
from duomem.memory.bank import MANIFEST, MEMORIES, MemoryBank, bank_size_bytes
from duomem.memory.embed import DEFAULT_EMBEDDER, load_embedder, neural_retrieval_available
from duomem.memory.entry import MEMORY_FORMATS, MemoryEntry, MemoryFormat
from duomem.memory.writer import PLAN_WRITER, MemoryWriter, PlanWriter, memory_id, writer_prompt_version

WRITTEN = "written.jsonl"
CopyPolicy = Literal["strip", "reject"]
COPY_POLICIES: tuple[str, ...] = get_args(CopyPolicy)
"""What the bank builder does with a memory whose script copied the writer prompt's wording: ``strip`` keeps it
without the copied lines (the writer already removed them), ``reject`` leaves the memory out of the bank. Either
way a memory left with no script line is left out (unless the bank shows reference actions only)."""


def load_trajectories(path: Path) -> list[Trajectory]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"trajectories file {path} does not exist; make one with `duomem collect`")
    try:
        return [Trajectory.model_validate(r) for r in read_jsonl(path)]
    except Exception as exc:
        raise DataError(f"{path} is not a trajectories file ({str(exc).splitlines()[0]})") from exc


def select_trajectories(trajs: list[Trajectory], include_failures: bool, per_game: int = 1,
                        max_entries: int | None = None) -> list[Trajectory]:
    """Up to ``per_game`` trajectories per game (won first, then shortest), distinct action lists, in game
    order; failures only with ``include_failures`` (the self-memory baseline)."""
    by_game: dict[str, list[Trajectory]] = {}
    for t in trajs:
        if t.won or include_failures:
            by_game.setdefault(t.game_id, []).append(t)
    chosen: list[Trajectory] = []
    for game in sorted(by_game):
        seen: set[tuple[str, ...]] = set()
        ranked = sorted(by_game[game], key=lambda t: (not t.won, len(t.actions), t.sample))
        kept = 0
        for t in ranked:
            if tuple(t.actions) in seen or kept >= per_game:
                continue
            seen.add(tuple(t.actions))
            chosen.append(t)
            kept += 1
    return chosen[:max_entries] if max_entries else chosen


def dedupe(entries: list[MemoryEntry]) -> list[MemoryEntry]:
    """Merge memories with the same type, script and actions (their sources are kept)."""
    merged: dict[tuple, MemoryEntry] = {}
    for e in entries:
        key = (e.task_type, e.goal, e.script, tuple(e.actions))
        if key in merged:
            m = merged[key]
            m.source_game_ids += [g for g in e.source_game_ids if g not in m.source_game_ids]
            m.source_trajectory_ids += e.source_trajectory_ids
            m.source_task_folders = sorted(set(m.source_task_folders) | set(e.source_task_folders))
            m.source_floor_plans = sorted(set(m.source_floor_plans) | set(e.source_floor_plans), key=int)
        else:
            merged[key] = e.model_copy(deep=True)
    return list(merged.values())


def build_bank(trajectories: Path, out: Path, writer: ChatModel | str | None, fmt: MemoryFormat = "both",
               include_failures: bool = False, per_game: int = 1, max_entries: int | None = None,
               embedder: str | None = DEFAULT_EMBEDDER, batch: int = 32,
               on_progress: Callable[[int, int], None] | None = None, copy_policy: CopyPolicy = "strip",
               transcripts: bool = False) -> MemoryBank:
    """Write one memory per selected trajectory into ``out`` (``written.jsonl`` is the resumable log), then
    dedupe, embed the task descriptions and write the bank. ``writer`` is a chat model, ``"plan"`` (the
    deterministic :class:`PlanWriter`: the expert's plan, no model) or None (``fmt="trajectory"`` only).
    ``embedder`` None or ``bm25`` means BM25. A writer with batched generation (the transformers backend) writes
    ``batch`` memories at a time. ``copy_policy`` (:data:`COPY_POLICIES`) says what happens to memories whose
    script copied the writer prompt; the manifest counts them (``writer_copies``) and records the games, task
    folders and floor plans the bank was built from (``source_game_ids``, ``source_task_folders``,
    ``source_floor_plans``; see :func:`duomem.memory.bank.bank_overlap`). ``transcripts``: each memory of a won
    episode keeps the episode as a prompt's solved example shows it (:attr:`MemoryEntry.transcript`, for runs with
    ``examples: bank``)."""
    if fmt not in MEMORY_FORMATS:
        raise ConfigError(f"unknown memory format {fmt!r}; use {', '.join(MEMORY_FORMATS)}")
    if copy_policy not in COPY_POLICIES:
        raise ConfigError(f"unknown copy policy {copy_policy!r}; use {' or '.join(COPY_POLICIES)}")
    out = Path(out)
    selected = select_trajectories(load_trajectories(trajectories), include_failures, per_game, max_entries)
    if not selected:
        raise DataError(f"{trajectories} has no {'' if include_failures else 'won '}trajectories to write "
                        "memories from")
    done = {r["id"]: MemoryEntry.model_validate(r) for r in read_jsonl(out / WRITTEN)}
    if isinstance(writer, str):
        if writer != PLAN_WRITER:
            raise ConfigError(f"writer {writer!r}: give a loaded chat model or {PLAN_WRITER!r}")
        memory_writer: MemoryWriter | PlanWriter = PlanWriter(fmt)
        step = len(selected) or 1
    else:
        memory_writer = MemoryWriter(writer, fmt)
        step = batch if writer is not None and hasattr(writer, "complete_batch") else 1
    pending = [t for t in selected if memory_id(t) not in done]
    with JsonlAppender(out / WRITTEN) as log:
        for start in range(0, len(pending), step):
            for entry in memory_writer.write_many(pending[start:start + step]):
                log.append(entry.to_json())
                done[entry.id] = entry
            if on_progress:
                on_progress(len(selected) - len(pending) + min(len(pending), start + step), len(selected))
    written = [done[memory_id(t)] for t in selected]
    if transcripts:
        written = [e.model_copy(update={"transcript": transcript(t)}) if t.won else e
                   for e, t in zip(written, selected, strict=True)]
    copies = [e for e in written if e.copied_lines]
    rejected = {e.id for e in copies if copy_policy == "reject"}
    if fmt != "trajectory":  # nothing left of the script once the copied lines are gone
        rejected |= {e.id for e in copies if not e.script.strip()}
    entries = dedupe([e for e in written if e.id not in rejected])
    if not entries:
        raise DataError(f"every memory written from {trajectories} was rejected ({len(copies)} copied the writer "
                        "prompt); see written.jsonl in the bank folder")
    if embedder in (None, "bm25"):
        emb = None
    elif not neural_retrieval_available():
        emb = None  # no torch here: fall back to BM25 (recorded in the manifest)
    else:
        emb = load_embedder(embedder)
    return MemoryBank.create(out, entries, emb, fmt, extra={
        "source_file": str(trajectories), "include_failures": include_failures, "per_game": per_game,
        "copy_policy": copy_policy, **({"transcripts": True} if transcripts else {}),
        "writer_prompt": ", ".join(sorted({writer_prompt_version(t.source) for t in selected}))
        if writer is not None and not isinstance(writer, str) else None,
        "writer_copies": {"memories": len(copies), "lines_removed": sum(e.copied_lines for e in copies),
                          "rejected": len(rejected)}})


def add_memories(bank_path: Path, trajectories: Path, writer: ChatModel | str | None,
                 task_types: list[str] | None = None, copy_policy: CopyPolicy = "strip",
                 transcripts: bool = False) -> dict:
    """Add memories written from ``trajectories`` (only those of ``task_types``, if given) to the bank at
    ``bank_path``, in the bank's own format and with its own retrieval; every memory is embedded again and the
    manifest records the update (``updates``: source, types, memories and bytes added, whether the solved episodes
    were kept: ``transcripts``, see :func:`build_bank`). A packed bank stays packed.
    Returns the update's record."""
    bank_path = Path(bank_path)
    bank = MemoryBank.load(bank_path)
    unknown = sorted(set(task_types or ()) - set(TASK_TYPES))
    if unknown:
        raise ConfigError(f"unknown task types {unknown}; choose from {', '.join(TASK_TYPES)}")
    trajs = [t for t in load_trajectories(trajectories) if not task_types or t.task_type in task_types]
    if not trajs:
        raise DataError(f"{trajectories} has no trajectories{' of ' + ', '.join(task_types) if task_types else ''}")
    fmt = bank.manifest.get("memory_format", "both")
    embedder = None
    if bank.manifest.get("retrieval") == "embedding":
        if not neural_retrieval_available():
            raise ConfigError(f"bank {bank_path} retrieves with {bank.manifest.get('embedder')} embeddings, which "
                              "need torch: pip install torch==2.13.0 'duomem[train]'")
        embedder = load_embedder(bank.manifest["embedder"])
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "input.jsonl"
        atomic_write_text(source, "".join(t.model_dump_json() + "\n" for t in trajs))
        new = build_bank(source, Path(tmp) / "new", writer, fmt=fmt, embedder="bm25", copy_policy=copy_policy,
                         transcripts=transcripts)
    known = {e.id for e in bank.entries}
    merged = dedupe(bank.entries + [e for e in new.entries if e.id not in known])
    packed = packed_path(bank_path / MEMORIES).is_file()
    before = bank_size_bytes(bank_path)
    result = MemoryBank.create(bank_path, merged, embedder, fmt)
    if packed:
        pack_jsonl(bank_path / MEMORIES)
    added = [e for e in merged if e.id not in known]
    update = {"source_file": str(trajectories), "task_types": sorted(task_types or {t.task_type for t in trajs}),
              "memories_added": len(added), "per_type": dict(Counter(e.task_type for e in added)),
              "transcripts": transcripts}
    manifest = {**{k: v for k, v in bank.manifest.items() if k not in result.manifest}, **result.manifest}
    manifest["updates"] = [*bank.manifest.get("updates", []), update]
    atomic_write_json(bank_path / MANIFEST, manifest)
    manifest["size_bytes"] = bank_size_bytes(bank_path)
    update["bytes_added"] = manifest["size_bytes"] - before
    atomic_write_json(bank_path / MANIFEST, manifest)
    return update
