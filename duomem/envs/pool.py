"""Game slots: one game engine each, in this process or in its own process, reset and stepped by messages.

The rollout engine steps a batch of episodes through slots: it sends every slot its reset or step, then receives
the answers, so games in worker processes advance in parallel while the model thinks about the next batch.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import time
from multiprocessing.connection import Connection
from typing import Protocol

from duomem.envs.base import MAX_STEPS, Observation, TaskSpec
from duomem.errors import DuomemError, EnvTimeout

Answer = tuple[Observation | None, str | None, float]
"""``(observation, error, seconds)``: the game's answer, or why there is none (the episode then fails)."""


class GameSlot(Protocol):
    """One game engine: ``send_reset``/``send_step``, then ``receive`` the answer."""

    def send_reset(self, task: TaskSpec, seed: int) -> None: ...

    def send_step(self, action: str) -> None: ...

    def receive(self) -> Answer: ...

    def close(self) -> None: ...


def _answer(env, op: str, payload) -> Answer:
    """Play one message on ``env``. A timeout or a game that breaks fails the episode (the run goes on); a user
    error (a missing game file) is raised, to stop the run with its one line."""
    start = time.perf_counter()
    try:
        if op == "reset":
            task, seed = payload
            obs = env.reset(task, seed=seed)
        else:
            obs = env.step(payload)
        return obs, None, time.perf_counter() - start
    except EnvTimeout as exc:
        return None, f"timeout: {exc}", time.perf_counter() - start
    except DuomemError:
        raise
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}", time.perf_counter() - start


class LocalSlot:
    """A game engine in this process (answers are computed when sent)."""

    def __init__(self, max_steps: int = MAX_STEPS, step_timeout: float | None = 30.0, expert: bool = False,
                 expert_fix: bool = True) -> None:
        from duomem.envs.alfworld import AlfworldEnv

        self._env = AlfworldEnv(max_steps=max_steps, step_timeout=step_timeout, expert=expert,
                                expert_fix=expert_fix)
        self._answer: Answer | None = None

    def send_reset(self, task: TaskSpec, seed: int) -> None:
        self._answer = _answer(self._env, "reset", (task, seed))

    def send_step(self, action: str) -> None:
        self._answer = _answer(self._env, "step", action)

    def receive(self) -> Answer:
        answer, self._answer = self._answer, None
        assert answer is not None, "receive() without a message sent"
        return answer

    def close(self) -> None:
        self._env.close()


def _serve(conn: Connection, max_steps: int, step_timeout: float | None, expert: bool, expert_fix: bool) -> None:
    from duomem.envs.alfworld import AlfworldEnv

    env = AlfworldEnv(max_steps=max_steps, step_timeout=step_timeout, expert=expert, expert_fix=expert_fix)
    while True:
        msg = conn.recv()
        if msg is None:
            env.close()
            return
        op, payload = msg
        if op == "reset":
            task_json, seed = payload
            payload = (TaskSpec.model_validate_json(task_json), seed)
        try:
            conn.send(("ok", _answer(env, op, payload)))
        except DuomemError as exc:
            conn.send(("fatal", (type(exc).__name__, str(exc))))


class EnvProcess:
    """A game engine in its own process; ``send`` a reset or step, ``receive`` the answer later."""

    def __init__(self, max_steps: int = MAX_STEPS, step_timeout: float | None = 30.0, expert: bool = False,
                 expert_fix: bool = True) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, max_steps, step_timeout, expert, expert_fix),
                                 daemon=True)
        self._proc.start()

    def send_reset(self, task: TaskSpec, seed: int) -> None:
        self._conn.send(("reset", (task.model_dump_json(), seed)))

    def send_step(self, action: str) -> None:
        self._conn.send(("step", action))

    def receive(self) -> Answer:
        status, value = self._conn.recv()
        if status == "fatal":
            from duomem import errors

            kind, message = value
            raise getattr(errors, kind, DuomemError)(message)
        return value

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self._conn.send(None)
        self._proc.join(timeout=5)
        if self._proc.is_alive():
            self._proc.kill()
