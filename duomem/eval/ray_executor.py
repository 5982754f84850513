"""Rollouts as Ray tasks over a cluster (``RAY_ADDRESS``) or a local Ray instance.

One actor per worker slot holds its game environment and policy (built by the same code as a local worker
process); the driver hands each idle actor the next episode and appends every record to ``episodes.jsonl`` as
it arrives. Records, resume (episodes already recorded are skipped) and summary are those of
:func:`duomem.eval.runner.run_rollouts`; with greedy decoding the trajectories are the local executor's.

On a cluster every node needs duomem, the same game files (``DUOMEM_HOME``/``ALFWORLD_DATA`` paths) and the
models; ``DUOMEM_*``, ``ALFWORLD_*`` and the OpenAI key variable are passed on to the actors.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from duomem.envs.base import TaskSpec
from duomem.errors import ConfigError, DuomemError
from duomem.eval.records import EpisodeRecord
from duomem.eval.runner import (
    EPISODES,
    RunResult,
    _check_resume,
    _make_player,
    _play,
    _progress,
    _sample_ids,
    load_records,
    write_summary,
)
from duomem.eval.spec import RolloutSpec
from duomem.jsonl import JsonlAppender, atomic_write_json


class RayPlayer:
    """A worker slot: one environment and one policy, playing the episodes it is given (a Ray actor)."""

    def __init__(self, spec_json: str) -> None:
        self.error: DuomemError | None = None
        self.player: dict | None = None
        try:
            self.player = _make_player(RolloutSpec.model_validate_json(spec_json))
        except DuomemError as exc:  # reported by ready(), as the exception itself
            self.error = exc

    def ready(self) -> bool:
        if self.error is not None:
            raise self.error
        return True

    def decode_speed(self) -> dict | None:
        model = getattr(self.player["policy"], "model", None) if self.player else None
        return model.decode_speed() if model is not None and hasattr(model, "decode_speed") else None

    def play(self, task_json: str, sample: int) -> str:
        assert self.player is not None
        return _play(self.player, TaskSpec.model_validate_json(task_json), sample).model_dump_json()

    def close(self) -> None:
        if self.player is not None:
            self.player["env"].close()
            close = getattr(getattr(self.player["policy"], "model", None), "close", None)
            if close is not None:
                close()
            self.player = None


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'ray>=2.30'") from None
    return ray


def init_ray() -> Any:
    """Join ``RAY_ADDRESS``'s cluster, or start a local Ray instance when it is unset (once per process)."""
    ray = _import_ray()
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        kwargs: dict[str, Any] = {} if address else {"include_dashboard": False}
        try:
            ray.init(address=address, logging_level=logging.WARNING, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"cannot start or join Ray at {address or 'a local instance'}: "
                              f"{' '.join(str(exc).split())[:200]}") from None
    return ray


def _passed_env() -> dict[str, str]:
    key_var = os.environ.get("DUOMEM_OPENAI_KEY_ENV") or "OPENAI_API_KEY"
    return {k: v for k, v in os.environ.items() if k.startswith(("DUOMEM_", "ALFWORLD_")) or k == key_var}


def _get(ray: Any, ref: Any) -> Any:
    """``ray.get`` with the workers' user errors raised as themselves (one line), not as Ray's wrappers."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, DuomemError):
            raise cause from None
        raise
    except ray.exceptions.RayActorError as exc:
        reason = " ".join(str(exc).split())[:200]
        raise DuomemError(f"a Ray worker died ({reason}); finished episodes are saved: rerun to resume") \
            from None


def run_rollouts_ray(spec: RolloutSpec, tasks: Sequence[TaskSpec], out_dir: Path, name: str,
                     samples: int | Sequence[int] = 1, workers: int = 1, show_progress: bool = True,
                     measure_speed: bool = True,
                     on_record: Callable[[EpisodeRecord], None] | None = None) -> RunResult:
    """:func:`duomem.eval.runner.run_rollouts` with ``workers`` Ray actors (``spec.threads`` CPUs each, 1 by
    default)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_resume(out_dir, spec, name)
    done = {r.key for r in load_records(out_dir)}
    sample_ids = _sample_ids(samples)
    jobs = [(t, s) for t in tasks for s in sample_ids if (t.game_id, s) not in done]
    played = 0
    if jobs:
        ray = init_ray()
        threads = spec.threads or 1
        spec_json = spec.model_copy(update={"threads": threads}).model_dump_json()
        actor_cls = ray.remote(RayPlayer).options(
            num_cpus=threads, num_gpus=1 if spec.device.startswith("cuda") else 0,
            runtime_env={"env_vars": _passed_env()})
        actors = [actor_cls.remote(spec_json) for _ in range(min(max(1, workers), len(jobs)))]
        try:
            for ref in [a.ready.remote() for a in actors]:
                _get(ray, ref)
            speed_path = out_dir / "speed.json"
            if measure_speed and spec.policy == "llm" and not speed_path.is_file():
                speed = _get(ray, actors[0].decode_speed.remote())
                if speed is not None:
                    atomic_write_json(speed_path, speed)
            queue = list(reversed(jobs))
            with JsonlAppender(out_dir / EPISODES) as out, _progress(show_progress) as progress:
                total = len(tasks) * len(sample_ids)
                bar = progress.add_task(name, total=total, completed=total - len(jobs))
                pending: dict[Any, Any] = {}

                def submit(actor: Any) -> None:
                    task, sample = queue.pop()
                    pending[actor.play.remote(task.model_dump_json(), sample)] = actor

                for actor in actors:
                    submit(actor)
                while pending:
                    (ref,), _ = ray.wait(list(pending), num_returns=1)
                    actor = pending.pop(ref)
                    line = _get(ray, ref)
                    out.append(line)
                    played += 1
                    progress.advance(bar)
                    if on_record:
                        on_record(EpisodeRecord.model_validate_json(line))
                    if queue:
                        submit(actor)
            for ref in [a.close.remote() for a in actors]:
                ray.get(ref)
        finally:
            for actor in actors:
                ray.kill(actor)
    records, summary = write_summary(out_dir, spec, tasks, samples, name)
    return RunResult(out_dir=out_dir, records=records, summary=summary, played=played)
