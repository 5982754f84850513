"""A memory bank: a folder with ``memories.jsonl``, ``embeddings.npy`` and ``manifest.json``; top-k retrieval by
similarity of task descriptions, never returning memories of the episode's own game (and, when building training
prompts, none of the same task or floor plan)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import ValidationError

from duomem.agent.note import goal_types
from duomem.envs.base import TaskSpec
from duomem.errors import ConfigError, DataError
from duomem.jsonl import atomic_write_json, atomic_write_text, jsonl_exists, packed_names, read_jsonl
from duomem.memory.embed import BM25Index, Embedder, load_embedder
from duomem.memory.entry import MEMORY_FORMATS, MemoryEntry, MemoryFormat
from duomem.memory.priors import PRIORS_ID, count_found, found_in, priors_text, where_found
from duomem.memory.provenance import floor_plan_of, provenance, task_folder_of

MEMORIES = "memories.jsonl"
EMBEDDINGS = "embeddings.npy"
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
Retrieval = Literal["similarity", "same_type"]
RETRIEVALS: tuple[str, ...] = ("similarity", "same_type")
"""``similarity``: top-k over the whole bank by similarity of task descriptions (the DuoMem paper).
``same_type``: the same similarity ranking restricted to memories of the task's type (type-filtered similarity;
the whole bank when it has no memory of that type)."""
Exclusion = Literal["game", "task", "floor_plan"]
EXCLUSIONS: tuple[str, ...] = ("game", "task", "floor_plan")
"""Which memories a task may not retrieve, each level including the one before: ``game`` (memories made from the
task's own game: the evaluation default), ``task`` (from any trial of the same task folder), ``floor_plan``
(from any game in the same room: what SFT prompts use, since test games are in rooms the bank never saw)."""


def bank_size_bytes(path: Path) -> int:
    names = (MEMORIES, *packed_names(MEMORIES), EMBEDDINGS, MANIFEST)
    return sum(f.stat().st_size for f in Path(path).glob("*") if f.is_file() and f.name in names)


@dataclass
class MemoryBank:
    path: Path
    entries: list[MemoryEntry]
    manifest: dict
    embeddings: np.ndarray | None
    found: dict[int, set[tuple[str, str]]] | None = None
    """Each memory's where-found pairs, computed once (see :meth:`where_found`)."""

    # --- persistence ---------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, entries: list[MemoryEntry], embedder: Embedder | None, fmt: MemoryFormat,
               extra: dict | None = None) -> MemoryBank:
        """Write a bank: the entries, their goal embeddings (or none for BM25) and a manifest."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path / MEMORIES, "".join(e.to_json() + "\n" for e in entries))
        for name in packed_names(MEMORIES):  # a packed copy of an earlier bank here
            (path / name).unlink(missing_ok=True)
        embeddings = None
        if embedder is not None:
            embeddings = embedder.embed([e.goal for e in entries]) if entries else np.zeros((0, 1), np.float32)
            tmp = path / f".{EMBEDDINGS}.tmp"
            with tmp.open("wb") as fh:
                np.save(fh, embeddings)
            tmp.replace(path / EMBEDDINGS)
        elif (path / EMBEDDINGS).exists():
            (path / EMBEDDINGS).unlink()
        manifest = {
            "format_version": FORMAT_VERSION,
            "n_entries": len(entries),
            "retrieval": "embedding" if embedder is not None else "bm25",
            "embedder": embedder.name if embedder is not None else None,
            "dim": int(embeddings.shape[1]) if embeddings is not None and len(entries) else None,
            "memory_format": fmt,
            "writers": sorted({e.writer for e in entries if e.writer}),
            "source_splits": sorted({e.source_split for e in entries}),
            "source_policies": sorted({e.source_policy for e in entries}),
            "source_models": sorted({e.source_model for e in entries if e.source_model}),
            "per_type": {t: sum(e.task_type == t for e in entries) for t in sorted({e.task_type for e in entries})},
            "where_found": where_found(e.actions for e in entries),
            "writer_tokens": {"prompt": sum(e.prompt_tokens for e in entries),
                              "completion": sum(e.completion_tokens for e in entries)},
            **provenance(g for e in entries for g in e.source_game_ids),
            **(extra or {}),
        }
        atomic_write_json(path / MANIFEST, manifest)
        manifest["size_bytes"] = bank_size_bytes(path)
        atomic_write_json(path / MANIFEST, manifest)
        return cls(path=path, entries=entries, manifest=manifest, embeddings=embeddings)

    @classmethod
    def load(cls, path: str | Path) -> MemoryBank:
        """Open a bank, checking that its files agree; a damaged bank is a one-line error."""
        path = Path(path)
        fix = f"rebuild it with `duomem memory build ... --out {path}`"
        if not (path / MANIFEST).is_file() or not jsonl_exists(path / MEMORIES):
            raise DataError(f"{path} is not a memory bank (needs {MANIFEST} and {MEMORIES}); {fix}")
        try:
            manifest = json.loads((path / MANIFEST).read_text())
            entries = [MemoryEntry.model_validate(r) for r in read_jsonl(path / MEMORIES)]
        except (json.JSONDecodeError, ValidationError, DataError) as exc:
            raise DataError(f"memory bank {path} is corrupted ({str(exc).splitlines()[0]}); {fix}") from exc
        if manifest.get("n_entries") != len(entries):
            raise DataError(f"memory bank {path} is corrupted: manifest says {manifest.get('n_entries')} entries, "
                            f"{MEMORIES} has {len(entries)}; {fix}")
        embeddings = None
        if manifest.get("retrieval") == "embedding":
            try:
                embeddings = np.load(path / EMBEDDINGS, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise DataError(f"memory bank {path} is corrupted ({EMBEDDINGS}: {exc}); {fix}") from exc
            if embeddings.shape[0] != len(entries):
                raise DataError(f"memory bank {path} is corrupted: {embeddings.shape[0]} embeddings for "
                                f"{len(entries)} memories; {fix}")
        return cls(path=path, entries=entries, manifest=manifest, embeddings=embeddings)

    # --- retrieval -----------------------------------------------------------------------------------------------
    def _scorer(self):
        if self.manifest.get("retrieval") == "embedding":
            embedder = load_embedder(self.manifest["embedder"])
            return lambda query: self.embeddings @ embedder.embed([query])[0]
        index = BM25Index([e.goal for e in self.entries])
        return index.scores

    def search(self, query: str, k: int, exclude_game: str | None = None, scorer=None,
               task_type: str | None = None, exclude: Exclusion = "game") -> list[tuple[MemoryEntry, float]]:
        """The ``k`` memories whose task descriptions are most similar to ``query``, best first (ties: bank
        order), leaving out memories made from ``exclude_game`` (with ``exclude`` = ``task`` or ``floor_plan``,
        also those made from any game of its task folder or floor plan); with ``task_type``, only memories of
        that type (all of them when the bank has none of that type)."""
        if not self.entries or k <= 0:
            return []
        if exclude not in EXCLUSIONS:
            raise ConfigError(f"unknown exclusion {exclude!r}; use {', '.join(EXCLUSIONS)}")
        scores = (scorer or self._scorer())(query)
        order = sorted(range(len(self.entries)), key=lambda i: (-float(scores[i]), i))
        if task_type and any(e.task_type == task_type for e in self.entries):
            order = [i for i in order if self.entries[i].task_type == task_type]
        allowed = {id(e) for e in self.allowed(exclude_game, exclude)}
        out = []
        for i in order:
            entry = self.entries[i]
            if id(entry) not in allowed:
                continue
            out.append((entry, float(scores[i])))
            if len(out) == k:
                break
        return out

    def allowed(self, game_id: str | None, exclude: Exclusion = "game") -> list[MemoryEntry]:
        """The memories a task of ``game_id`` may read (see :meth:`search`'s exclusions)."""
        folder = task_folder_of(game_id) if game_id and exclude in ("task", "floor_plan") else None
        plan = floor_plan_of(game_id) if game_id and exclude == "floor_plan" else None
        return [e for e in self.entries if not (game_id and game_id in e.source_game_ids)
                and not (folder and folder in e.source_task_folders) and not (plan and plan in e.source_floor_plans)]

    def where_found(self, game_id: str | None = None, exclude: Exclusion = "game") -> dict[str, dict[str, int]]:
        """Where-found priors (:mod:`duomem.memory.priors`) of the memories a task of ``game_id`` may read."""
        if self.found is None:
            self.found = {id(e): found_in(e.actions) for e in self.entries}
        return count_found(self.found[id(e)] for e in self.allowed(game_id, exclude))

    def without_types(self, task_types: Iterable[str]) -> MemoryBank:
        """This bank without the memories of ``task_types``, in memory only: what a student trained before those
        kinds of task existed could have read."""
        gone = set(task_types)
        keep = [i for i, e in enumerate(self.entries) if e.task_type not in gone]
        return MemoryBank(path=self.path, entries=[self.entries[i] for i in keep], manifest=self.manifest,
                          embeddings=None if self.embeddings is None else self.embeddings[keep])

    def retriever(self, top_k: int, retrieval: Retrieval = "similarity", memory_format: MemoryFormat | None = None,
                  exclude: Exclusion = "game", transcripts: bool = False) -> BankRetriever:
        """What the agent reads from this bank; ``transcripts``: it also shows the bank's solved episodes as
        examples (a bank that keeps none is a :class:`ConfigError`)."""
        if transcripts and not any(e.transcript for e in self.entries):
            raise ConfigError(f"bank {self.path} keeps no solved episodes to show as examples: add them with "
                              "`duomem memory add BANK --transcripts ...` or build it with --transcripts")
        return BankRetriever(self, top_k, retrieval, memory_format, exclude)


class BankRetriever:
    """What the agent calls: memories for a task, its own game excluded (no leakage).

    ``similarity`` ranks all memories by task-description similarity (the DuoMem paper's retrieval);
    ``same_type`` ranks only memories of the task's type (ALFWorld's goal templates fix the type), so that a
    "put two mugs in the desk" memory is never retrieved for "examine the mug with the desklamp".
    ``memory_format`` is how the memories are shown (:data:`~duomem.memory.entry.MEMORY_FORMATS`; default: the
    format the bank was built with, ``both`` for a DuoMem bank). ``exclude`` widens the leakage guard to the
    task's task folder or floor plan (:data:`EXCLUSIONS`; training prompts use ``floor_plan``)."""

    def __init__(self, bank: MemoryBank, top_k: int, retrieval: Retrieval = "similarity",
                 memory_format: MemoryFormat | None = None, exclude: Exclusion = "game") -> None:
        if retrieval not in RETRIEVALS:
            raise ConfigError(f"unknown retrieval {retrieval!r}; use {' or '.join(RETRIEVALS)}")
        if memory_format is not None and memory_format not in MEMORY_FORMATS:
            raise ConfigError(f"unknown memory format {memory_format!r}; use {', '.join(MEMORY_FORMATS)}")
        if exclude not in EXCLUSIONS:
            raise ConfigError(f"unknown exclusion {exclude!r}; use {', '.join(EXCLUSIONS)}")
        self.bank = bank
        self.top_k = top_k
        self.retrieval = retrieval
        self.exclude: Exclusion = exclude
        self.fmt: MemoryFormat = memory_format or bank.manifest.get("memory_format", "both")
        self._scorer = bank._scorer()

    def retrieve_for(self, task: TaskSpec) -> list[tuple[str, str]]:
        hits = self.bank.search(task.goal, self.top_k, exclude_game=task.game_id, scorer=self._scorer,
                                task_type=task.task_type if self.retrieval == "same_type" else None,
                                exclude=self.exclude)
        memories = [(entry.id, entry.text(self.fmt)) for entry, _ in hits]
        if self.fmt == "typed":
            priors = priors_text(self.bank.where_found(task.game_id, self.exclude), goal_types(task.goal))
            if priors:
                memories.insert(0, (PRIORS_ID, priors))
        return memories

    def examples_for(self, task: TaskSpec, n: int) -> list[tuple[str, str]]:
        """The ``n`` solved episodes of ``task``'s type that the bank keeps (:attr:`MemoryEntry.transcript`), most
        similar first, under the same exclusions as memories; fewer (or none) when it keeps fewer."""
        if n <= 0:
            return []
        hits = self.bank.search(task.goal, len(self.bank.entries), exclude_game=task.game_id, scorer=self._scorer,
                                task_type=task.task_type, exclude=self.exclude)
        return [(e.task_type, e.transcript) for e, _ in hits if e.transcript and e.task_type == task.task_type][:n]


def bank_overlap(bank: MemoryBank | str | Path, tasks: Iterable[TaskSpec]) -> dict:
    """What a bank shares with ``tasks`` (for example the games about to be evaluated).

    Returns ``games`` / ``task_folders`` / ``floor_plans``: how many of the tasks' distinct games, task folders
    and floor plans are also sources of the bank's memories; ``tasks_sharing_game`` / ``..._task_folder`` /
    ``..._floor_plan``: how many of the tasks are affected; ``shared_floor_plans`` (sorted), ``shared_splits``,
    ``tasks`` (the number of tasks) and ``bank_splits``. Works on banks written before their manifest recorded
    task folders and floor plans (read from the entries' game ids then)."""
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
