"""Run many episodes, writing each record as soon as it ends: the one driver behind every executor.

The driver owns the run: ``run.json`` (the spec; resuming with another is refused), the leakage check, the job
list (episodes already in ``episodes.jsonl`` are not played again), the JSONL appender, progress and the summary.
Executors differ only in where a :class:`~duomem.eval.player.Player` steps its episodes: this process
(``local``, one worker), worker processes (``local``, several workers) or Ray actors (``ray``).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from duomem.envs.base import TASK_TYPES, TaskSpec
from duomem.envs.pool import turn_limit
from duomem.errors import ConfigError, DuomemError, ModelError
from duomem.eval.player import Job, Player
from duomem.eval.records import EpisodeRecord
from duomem.eval.spec import RolloutSpec
from duomem.eval.summary import summarize, summary_markdown
from duomem.jsonl import JsonlAppender, atomic_write_json, atomic_write_text, read_jsonl

EPISODES = "episodes.jsonl"
PREFIXES = ".prefixes"
"""The run folder's prefix store while it plays (see ``LlamaCppChatModel.share_prefixes``), removed after."""
Executor = Literal["local", "ray"]
EXECUTORS: tuple[str, ...] = get_args(Executor)


def select_games(tasks: Sequence[TaskSpec], n: int | None, seed: int = 0) -> list[TaskSpec]:
    """All games in index order, or a seeded subset of ``n`` that cycles through the task types."""
    if n is not None and n < 1:
        raise ConfigError(f"the number of games must be at least 1, not {n}")
    if n is None or n >= len(tasks):
        return list(tasks)
    rng = random.Random(seed)
    by_type: dict[str, list[TaskSpec]] = {}
    for t in tasks:
        by_type.setdefault(t.task_type, []).append(t)
    for games in by_type.values():
        rng.shuffle(games)
    order = [t for t in TASK_TYPES if t in by_type] + sorted(set(by_type) - set(TASK_TYPES))
    picked: list[TaskSpec] = []
    while len(picked) < n:
        for t in order:
            if by_type[t] and len(picked) < n:
                picked.append(by_type[t].pop())
    return picked


@dataclass
class RunResult:
    out_dir: Path
    records: list[EpisodeRecord]
    summary: dict
    played: int


def sample_ids(samples: int | Sequence[int]) -> list[int]:
    return list(range(samples)) if isinstance(samples, int) else list(samples)


def load_records(out_dir: Path) -> list[EpisodeRecord]:
    return [EpisodeRecord.model_validate(r) for r in read_jsonl(Path(out_dir) / EPISODES)]


def check_resume(out_dir: Path, spec: RolloutSpec, name: str) -> None:
    """Write ``run.json``; refuse a folder that holds a run with other settings."""
    meta_path = out_dir / "run.json"
    meta = {"name": name, "spec": spec.model_dump(), "key": spec.key_fields(), "fingerprint": spec.fingerprint()}
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if old.get("fingerprint") != meta["fingerprint"]:
            before = old.get("key") or old.get("spec", {})
            diff = sorted(k for k in set(before) | set(meta["key"]) if before.get(k) != meta["key"].get(k))
            raise ConfigError(f"{out_dir} holds a run with other settings ({', '.join(diff) or 'spec'} differ); "
                              "write to another output folder or delete it")
    atomic_write_json(meta_path, meta)


def run_rollouts(spec: RolloutSpec, tasks: Sequence[TaskSpec], out_dir: Path, name: str,
                 samples: int | Sequence[int] = 1, workers: int = 1, executor: Executor = "local",
                 show_progress: bool = True, measure_speed: bool = True,
                 on_record: Callable[[EpisodeRecord], None] | None = None) -> RunResult:
    """Play every (game, sample) not yet in ``out_dir/episodes.jsonl``; then write ``summary.json``/``.md``.

    ``executor`` ``local``: this process (``workers`` 1; ``spec.batch`` episodes stepped together) or
    ``workers`` processes; ``ray``: ``workers`` Ray actors (see :mod:`duomem.eval.ray_executor`). A batch > 1
    steps its episodes in one process: it takes one worker."""
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; use {' or '.join(EXECUTORS)}")
    if not tasks:
        raise ConfigError("no games to play: the selection is empty")
    if spec.batch > 1 and (workers > 1 or executor != "local"):
        raise ConfigError(f"a batch of {spec.batch} episodes is stepped in one process: use one local worker "
                          f"(not {workers} {executor} workers)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    guard = None
    if spec.memory:
        from duomem.eval.leakage import check_leakage

        guard = check_leakage(spec.memory, tasks)
    check_resume(out_dir, spec, name)
    done = {r.key for r in load_records(out_dir)}
    ids = sample_ids(samples)
    jobs: list[Job] = [(t, s) for t in tasks for s in ids if (t.game_id, s) not in done]
    played = 0
    if jobs:
        if workers > 1 or executor == "ray":
            spec = spec if spec.threads else spec.model_copy(update={"threads": _threads(workers, executor)})
        speed_path = out_dir / "speed.json" if measure_speed and spec.policy == "llm" else None
        if speed_path is not None and speed_path.is_file():
            speed_path = None
        prefixes = out_dir / PREFIXES
        shutil.rmtree(prefixes, ignore_errors=True)  # a killed run's
        try:
            with JsonlAppender(out_dir / EPISODES) as out, _progress(show_progress) as progress:
                total = len(tasks) * len(ids)
                bar = progress.add_task(name, total=total, completed=total - len(jobs))
                for line in _records(spec, jobs, workers, executor, guard, speed_path, prefixes):
                    out.append(line)
                    played += 1
                    progress.advance(bar)
                    if on_record:
                        on_record(EpisodeRecord.model_validate_json(line))
        finally:
            shutil.rmtree(prefixes, ignore_errors=True)
    records, summary = write_summary(out_dir, spec, tasks, samples, name)
    return RunResult(out_dir=out_dir, records=records, summary=summary, played=played)


def _records(spec: RolloutSpec, jobs: list[Job], workers: int, executor: str, guard: str | None,
             speed_path: Path | None, prefixes: Path) -> Iterator[str]:
    """Each played episode's record as a JSON line, from the executor asked for (local workers share the prefix
    store ``prefixes``)."""
    if executor == "ray":
        from duomem.eval.ray_executor import ray_records

        yield from ray_records(spec, jobs, workers, guard, speed_path)
        return
    if workers <= 1:
        player = Player(spec, guard)
        share_prefixes(player, prefixes)
        try:
            _write_speed(player, speed_path)
            for record in player.play(jobs):
                yield record.model_dump_json()
        finally:
            player.close()
        return
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                               initargs=(spec.model_dump_json(), guard, str(prefixes)))
    try:
        if speed_path is not None:
            speed = pool.submit(_worker_speed).result()
            if speed is not None:
                atomic_write_json(speed_path, speed)
        futures = [pool.submit(_worker_play, (t.model_dump_json(), s)) for t, s in jobs]
        for future in as_completed(futures):
            yield future.result()
    except BrokenProcessPool as exc:
        raise ModelError("a worker process died while playing (a crash in the model library or the game, or out "
                         "of memory); the episodes that finished are kept: run again to resume, with one worker "
                         "to see the crash itself") from exc
    finally:
        # Workers exit on their own (terminating them leaks the semaphores that libraries they loaded registered,
        # and Python warns about them at exit); episodes not started yet are cancelled.
        pool.shutdown(wait=True, cancel_futures=True)


def _write_speed(player: Player, path: Path | None) -> None:
    """Raw model speed, no agent around it (llama.cpp), once per run folder."""
    model = player.model
    if path is not None and model is not None and hasattr(model, "decode_speed"):
        atomic_write_json(path, model.decode_speed())


# --- worker processes: one Player each -------------------------------------------------------------------------
_PLAYER: list[Player] = []
_INIT_ERROR: list[DuomemError] = []


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def share_prefixes(player: Player, directory: Path) -> None:
    """Let the player's model share long prompts' evaluated states with the run's other workers (llama.cpp; not
    for a batch, whose episodes take turns: each turn would be a long evaluation)."""
    share = getattr(player.model, "share_prefixes", None)
    if share is not None and player.spec.batch == 1:
        share(directory)


def _worker_init(spec_json: str, guard: str | None, prefixes: str) -> None:
    """Load the worker's player. A failure (say, a model file llama.cpp cannot read) is kept and raised by the
    worker's first job, so that it reaches the driver as its own one-line error. A worker ends within a second of
    its driver being killed (an orphan would go on playing its episode, whose record no one writes)."""
    threading.Thread(target=_exit_with, args=(os.getppid(),), daemon=True).start()
    try:
        _PLAYER.append(Player(RolloutSpec.model_validate_json(spec_json), guard))
        share_prefixes(_PLAYER[0], Path(prefixes))
    except DuomemError as exc:
        _INIT_ERROR.append(exc)


def _player() -> Player:
    if _INIT_ERROR:
        raise _INIT_ERROR[0]
    return _PLAYER[0]


def _worker_speed() -> dict | None:
    model = _player().model
    return model.decode_speed() if model is not None and hasattr(model, "decode_speed") else None


def _worker_play(job: tuple[str, int]) -> str:
    task_json, sample = job
    (record,) = _player().play([(TaskSpec.model_validate_json(task_json), sample)])
    return record.model_dump_json()


# --- summary ----------------------------------------------------------------------------------------------------
def write_summary(out_dir: Path, spec: RolloutSpec, tasks: Sequence[TaskSpec], samples: int | Sequence[int],
                  name: str) -> tuple[list[EpisodeRecord], dict]:
    """Summarise the records of ``tasks`` found in ``out_dir`` into ``summary.json`` and ``summary.md``."""
    wanted = {(t.game_id, s) for t in tasks for s in sample_ids(samples)}
    records = [r for r in load_records(out_dir) if r.key in wanted]
    records.sort(key=lambda r: (r.game_id, r.sample))
    split = ",".join(sorted({t.split for t in tasks})) or "-"
    extra = {
        "complete": len(records) == len(wanted),
        "n_planned": len(wanted),
        "samples_per_game": len(sample_ids(samples)),
        "adapter": spec.adapter,
        "memory_bank": spec.memory,
        "top_k": spec.top_k if spec.memory else 0,
        "shots": spec.shots,
        "history_window": spec.history_window,
        "max_steps": spec.max_steps,
        "seed": spec.seed,
        "backend": spec.backend,
        "action_selection": spec.action_selection if spec.policy == "llm" else None,
        "score_norm": spec.score_norm if spec.action_selection == "score" else None,
        "batch": spec.batch,
        "spec": spec.key_fields(),
        "game_source": ",".join(sorted({t.source for t in tasks})),
    }
    sw = next((t for t in tasks if t.source == "scienceworld"), None)
    if sw is not None:  # the turn limit ScienceWorld's episodes were played under (see turn_limit)
        extra["max_steps_scienceworld"] = turn_limit(sw, spec.max_steps, expert=spec.policy == "expert")
    speed_path = out_dir / "speed.json"
    if speed_path.is_file():
        extra["speed"] = json.loads(speed_path.read_text())
    summary = summarize(records, name=name, policy=spec.policy, model=spec.model, split=split, extra=extra)
    atomic_write_json(out_dir / "summary.json", summary)
    atomic_write_text(out_dir / "summary.md", summary_markdown(summary))
    return records, summary


def _threads(workers: int, executor: str) -> int:
    if executor == "ray":
        return 1
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def _progress(show: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), disable=not show)
