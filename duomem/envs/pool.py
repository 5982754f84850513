"""Games in worker processes, stepped in parallel (for batched GPU rollouts)."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import time
from multiprocessing.connection import Connection

from duomem.envs.base import Observation, TaskSpec


def _serve(conn: Connection, max_steps: int, step_timeout: float | None, expert: bool) -> None:
    from duomem.envs.alfworld import AlfworldEnv

    env = AlfworldEnv(max_steps=max_steps, step_timeout=step_timeout, expert=expert)
    while True:
        msg = conn.recv()
        if msg is None:
            env.close()
            return
        op, payload = msg
        start = time.perf_counter()
        try:
            if op == "reset":
                task_json, seed = payload
                obs = env.reset(TaskSpec.model_validate_json(task_json), seed=seed)
            else:
                obs = env.step(payload)
            conn.send(("ok", obs, time.perf_counter() - start))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}", time.perf_counter() - start))


class EnvProcess:
    """One game engine in its own process; ``send`` a reset or step, ``receive`` the observation later."""

    def __init__(self, max_steps: int = 50, step_timeout: float | None = 30.0, expert: bool = False) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, max_steps, step_timeout, expert), daemon=True)
        self._proc.start()

    def send_reset(self, task: TaskSpec, seed: int) -> None:
        self._conn.send(("reset", (task.model_dump_json(), seed)))

    def send_step(self, action: str) -> None:
        self._conn.send(("step", action))

    def receive(self) -> tuple[Observation | None, str | None, float]:
        """``(observation, error, seconds)``."""
        status, value, seconds = self._conn.recv()
        return (value, None, seconds) if status == "ok" else (None, value, seconds)

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self._conn.send(None)
        self._proc.join(timeout=5)
        if self._proc.is_alive():
            self._proc.kill()
