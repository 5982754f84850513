"""Rollouts on Ray actors over a cluster (``RAY_ADDRESS``) or a local Ray instance.

One actor per worker slot holds a :class:`~duomem.eval.player.Player` (the same one episode loop as every other
executor); the driver (:func:`duomem.eval.runner.run_rollouts`) hands each idle actor the next episode and
appends every record as it arrives. With greedy decoding the trajectories are the local executor's.

On a cluster every node needs duomem, the same game files (``DUOMEM_HOME``/``ALFWORLD_DATA`` paths) and the
models; ``DUOMEM_*``, ``ALFWORLD_*`` and the OpenAI key variable are passed on to the actors.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from duomem import settings
from duomem.envs.base import TaskSpec
from duomem.errors import ConfigError, DuomemError
from duomem.eval.player import Job, Player
from duomem.eval.spec import RolloutSpec
from duomem.jsonl import atomic_write_json


class RayPlayer:
    """A worker slot: one :class:`Player`, playing the episodes it is given (a Ray actor)."""

    def __init__(self, spec_json: str, guard: str | None) -> None:
        self.error: DuomemError | None = None
        self.player: Player | None = None
        try:
            self.player = Player(RolloutSpec.model_validate_json(spec_json), guard)
        except DuomemError as exc:  # reported by ready(), as the exception itself
            self.error = exc

    def ready(self) -> bool:
        if self.error is not None:
            raise self.error
        return True

    def decode_speed(self) -> dict | None:
        model = self.player.model if self.player else None
        return model.decode_speed() if model is not None and hasattr(model, "decode_speed") else None

    def play(self, task_json: str, sample: int) -> str:
        assert self.player is not None
        (record,) = self.player.play([(TaskSpec.model_validate_json(task_json), sample)])
        return record.model_dump_json()

    def close(self) -> None:
        if self.player is not None:
            self.player.close()
            self.player = None


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("the ray executor needs Ray: pip install 'ray>=2.30'") from None
    return ray


def init_ray() -> Any:
    """Join ``RAY_ADDRESS``'s cluster, or start a local Ray instance when it is unset (once per process)."""
    ray = _import_ray()
    if not ray.is_initialized():
        address = settings.ray_address()
        kwargs: dict[str, Any] = {} if address else {"include_dashboard": False}
        try:
            # a local instance started here: its start-up notices (token authentication on, ...) are nothing the
            # user can act on; a cluster joined by address keeps Ray's warnings
            ray.init(address=address, logging_level=logging.WARNING if address else logging.ERROR, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"cannot start or join Ray at {address or 'a local instance'}: "
                              f"{' '.join(str(exc).split())[:200]}") from None
    return ray


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


def ray_records(spec: RolloutSpec, jobs: list[Job], workers: int, guard: str | None,
                speed_path: Path | None) -> Iterator[str]:
    """Play ``jobs`` on ``workers`` actors (``spec.threads`` CPUs each), yielding records as they arrive."""
    ray = init_ray()
    actor_cls = ray.remote(RayPlayer).options(
        num_cpus=spec.threads or 1, num_gpus=1 if spec.device.startswith("cuda") else 0,
        runtime_env={"env_vars": settings.passed_to_workers()})
    spec_json = spec.model_dump_json()
    actors = [actor_cls.remote(spec_json, guard) for _ in range(min(max(1, workers), len(jobs)))]
    try:
        for ref in [a.ready.remote() for a in actors]:
            _get(ray, ref)
        if speed_path is not None:
            speed = _get(ray, actors[0].decode_speed.remote())
            if speed is not None:
                atomic_write_json(speed_path, speed)
        queue = list(reversed(jobs))
        pending: dict[Any, Any] = {}

        def submit(actor: Any) -> None:
            task, sample = queue.pop()
            pending[actor.play.remote(task.model_dump_json(), sample)] = actor

        for actor in actors:
            submit(actor)
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            actor = pending.pop(ref)
            yield _get(ray, ref)
            if queue:
                submit(actor)
        for ref in [a.close.remote() for a in actors]:
            ray.get(ref)
    finally:
        for actor in actors:
            ray.kill(actor)
