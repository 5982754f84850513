"""Run many episodes, locally or in worker processes, writing each record as soon as it ends.

An interrupted run resumes: records already in ``episodes.jsonl`` are kept and their episodes are not played
again. The run's spec is stored in ``run.json``; resuming with a different spec is refused.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from duomem.envs.base import TASK_TYPES, TaskSpec
from duomem.errors import ConfigError
from duomem.eval.episode import reset_peak_rss, run_episode
from duomem.eval.records import EpisodeRecord
from duomem.eval.spec import RolloutSpec
from duomem.eval.summary import summarize, summary_markdown
from duomem.jsonl import JsonlAppender, atomic_write_json, atomic_write_text, read_jsonl

EPISODES = "episodes.jsonl"
EXECUTORS = ("local", "ray")


def select_games(tasks: Sequence[TaskSpec], n: int | None, seed: int = 0) -> list[TaskSpec]:
    """All games in index order, or a seeded subset of ``n`` that cycles through the task types."""
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


def _leakage_note(spec: RolloutSpec) -> str | None:
    if not spec.memory:
        return None
    return "retrieval excludes the episode's own game; see the bank's manifest for its source split"


# --- worker processes -------------------------------------------------------------------------------------------
_WORKER: dict = {}


def _worker_init(spec_json: str, threads: int) -> None:
    spec = RolloutSpec.model_validate_json(spec_json)
    if spec.threads is None:
        spec = spec.model_copy(update={"threads": threads})
    _WORKER.update(_make_player(spec))


def _make_player(spec: RolloutSpec) -> dict:
    from duomem.agent.factory import build_policy
    from duomem.envs.alfworld import AlfworldEnv

    reset_peak_rss()  # the run's peak memory: this process's model and game, not what it held before
    env = AlfworldEnv(max_steps=spec.max_steps, step_timeout=spec.step_timeout, expert=spec.policy == "expert",
                      expert_fix=spec.expert_fix)
    return {"spec": spec, "env": env, "policy": build_policy(spec)}


def _play(player: dict, task: TaskSpec, sample: int) -> EpisodeRecord:
    spec: RolloutSpec = player["spec"]
    extra = {"adapter": spec.adapter, "memory_bank": spec.memory, "memory_leakage_guard": _leakage_note(spec)}
    return run_episode(player["env"], player["policy"], task, seed=spec.seed, sample=sample,
                       max_steps=spec.max_steps, extra=extra)


def _worker_play(job: tuple[str, int]) -> str:
    task_json, sample = job
    return _play(_WORKER, TaskSpec.model_validate_json(task_json), sample).model_dump_json()


# --- the run ----------------------------------------------------------------------------------------------------
def _check_resume(out_dir: Path, spec: RolloutSpec, name: str) -> None:
    meta_path = out_dir / "run.json"
    meta = {"name": name, "spec": spec.model_dump(), "fingerprint": spec.fingerprint()}
    if meta_path.is_file():
        import json

        old = json.loads(meta_path.read_text())
        if old.get("fingerprint") != meta["fingerprint"]:
            diff = sorted(k for k, v in spec.model_dump().items() if old.get("spec", {}).get(k) != v
                          and k not in ("threads", "step_timeout", "device"))
            raise ConfigError(f"{out_dir} holds a run with other settings ({', '.join(diff) or 'spec'} differ); "
                              "use another --out or delete it")
    atomic_write_json(meta_path, meta)


def load_records(out_dir: Path) -> list[EpisodeRecord]:
    return [EpisodeRecord.model_validate(r) for r in read_jsonl(Path(out_dir) / EPISODES)]


def _sample_ids(samples: int | Sequence[int]) -> list[int]:
    return list(range(samples)) if isinstance(samples, int) else list(samples)


def run_rollouts(spec: RolloutSpec, tasks: Sequence[TaskSpec], out_dir: Path, name: str,
                 samples: int | Sequence[int] = 1,
                 workers: int = 1, show_progress: bool = True, measure_speed: bool = True,
                 on_record: Callable[[EpisodeRecord], None] | None = None,
                 executor: str = "local") -> RunResult:
    """Play every (game, sample) not yet in ``out_dir/episodes.jsonl``; then write ``summary.json``/``.md``.

    ``executor`` ``local`` plays in this process (``workers`` 1) or in worker processes; ``ray`` in
    ``workers`` Ray actors (see :mod:`duomem.eval.ray_executor`)."""
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; use {' or '.join(EXECUTORS)}")
    if executor == "ray":
        from duomem.eval.ray_executor import run_rollouts_ray

        return run_rollouts_ray(spec, tasks, out_dir, name, samples=samples, workers=workers,
                                show_progress=show_progress, measure_speed=measure_speed, on_record=on_record)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_resume(out_dir, spec, name)
    done = {r.key for r in load_records(out_dir)}
    sample_ids = _sample_ids(samples)
    jobs = [(t, s) for t in tasks for s in sample_ids if (t.game_id, s) not in done]
    speed_path = out_dir / "speed.json"
    player = None
    if jobs and measure_speed and spec.policy == "llm" and not speed_path.is_file():
        player = _make_player(spec if spec.threads else spec.model_copy(update={"threads": _threads(workers)}))
        model = player["policy"].model
        if hasattr(model, "decode_speed"):
            atomic_write_json(speed_path, model.decode_speed())
    played = 0
    with JsonlAppender(out_dir / EPISODES) as out, _progress(show_progress) as progress:
        total = len(tasks) * len(sample_ids)
        bar = progress.add_task(name, total=total, completed=total - len(jobs))
        if workers <= 1:
            player = player or _make_player(spec)
            for task, sample in jobs:
                record = _play(player, task, sample)
                out.append(record.model_dump_json())
                played += 1
                progress.advance(bar)
                if on_record:
                    on_record(record)
        elif jobs:
            player = None
            ctx = mp.get_context("spawn")
            with ctx.Pool(workers, initializer=_worker_init,
                          initargs=(spec.model_dump_json(), _threads(workers))) as pool:
                payload = [(t.model_dump_json(), s) for t, s in jobs]
                for line in pool.imap_unordered(_worker_play, payload):
                    out.append(line)
                    played += 1
                    progress.advance(bar)
                    if on_record:
                        on_record(EpisodeRecord.model_validate_json(line))
    if player is not None:
        player["env"].close()
    return RunResult(out_dir=out_dir, records=(result := write_summary(out_dir, spec, tasks, samples, name))[0],
                     summary=result[1], played=played)


def write_summary(out_dir: Path, spec: RolloutSpec, tasks: Sequence[TaskSpec], samples: int | Sequence[int],
                  name: str) -> tuple[list[EpisodeRecord], dict]:
    """Summarise the records of ``tasks`` found in ``out_dir`` into ``summary.json`` and ``summary.md``."""
    import json

    wanted = {(t.game_id, s) for t in tasks for s in _sample_ids(samples)}
    records = [r for r in load_records(out_dir) if r.key in wanted]
    records.sort(key=lambda r: (r.game_id, r.sample))
    split = ",".join(sorted({t.split for t in tasks})) or "-"
    extra = {
        "complete": len(records) == len(wanted),
        "n_planned": len(wanted),
        "samples_per_game": len(_sample_ids(samples)),
        "adapter": spec.adapter,
        "memory_bank": spec.memory,
        "top_k": spec.top_k if spec.memory else 0,
        "shots": spec.shots,
        "history_window": spec.history_window,
        "max_steps": spec.max_steps,
        "seed": spec.seed,
        "game_source": ",".join(sorted({t.source for t in tasks})),
    }
    speed_path = out_dir / "speed.json"
    if speed_path.is_file():
        extra["speed"] = json.loads(speed_path.read_text())
    summary = summarize(records, name=name, policy=spec.policy, model=spec.model, split=split, extra=extra)
    atomic_write_json(out_dir / "summary.json", summary)
    atomic_write_text(out_dir / "summary.md", summary_markdown(summary))
    return records, summary


def _threads(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def _progress(show: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), disable=not show)
