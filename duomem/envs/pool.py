"""Game slots: one game engine each, in this process or in its own process, reset and stepped by messages.

The rollout engine steps a batch of episodes through slots: it sends every slot its reset or step, then receives
the answers, so games in worker processes advance in parallel while the model thinks about the next batch.

A slot makes its engine from each task's ``source`` (:class:`_Engines`, the one place environments are made for
rollouts): ScienceWorld for ``scienceworld``, ALFWorld otherwise; one engine per source, made at its first task.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import time
from multiprocessing.connection import Connection
from typing import Protocol

from duomem.envs.base import MAX_STEPS, Environment, Observation, TaskSpec
from duomem.errors import DuomemError, EnvTimeout

Answer = tuple[Observation | None, str | None, float]
"""``(observation, error, seconds)``: the game's answer, or why there is none (the episode then fails)."""


class GameSlot(Protocol):
    """One game engine: ``send_reset``/``send_step``, then ``receive`` the answer."""

    def send_reset(self, task: TaskSpec, seed: int) -> None: ...

    def send_step(self, action: str) -> None: ...

    def receive(self) -> Answer: ...

    def close(self) -> None: ...


SCIENCEWORLD = "scienceworld"


def turn_limit(task: TaskSpec, max_steps: int, expert: bool) -> int:
    """The turn limit of an episode of ``task`` under a spec's ``max_steps``: ``max_steps`` itself, except on
    ScienceWorld where it is the default (:data:`MAX_STEPS`, ALFWorld's 50): there the environment's own default
    applies, :data:`~duomem.envs.scienceworld.GOLD_STEP_LIMIT` (1,000) for the expert (the gold teacher: gold
    paths run to about 750 actions) and :data:`~duomem.envs.scienceworld.STEP_LIMIT` (100) for an agent. Any
    other ``--max-steps`` is taken as given on both benchmarks."""
    if task.source != SCIENCEWORLD or max_steps != MAX_STEPS:
        return max_steps
    from duomem.envs.scienceworld import GOLD_STEP_LIMIT, STEP_LIMIT

    return GOLD_STEP_LIMIT if expert else STEP_LIMIT


class _Engines:
    """A slot's game engines, one per task source, each made at the first task of its source; ``reset`` picks the
    task's, ``step`` goes to the one last reset.

    ALFWorld: ``AlfworldEnv(max_steps, step_timeout, expert, expert_fix)``. ScienceWorld: ``ScienceWorldEnv`` with
    the gold teacher where ``expert``, valid actions listed only for an agent (the expert does not read them), and
    its turn limit by :func:`turn_limit` (the environment's own default where ``max_steps`` is the default)."""

    def __init__(self, max_steps: int, step_timeout: float | None, expert: bool, expert_fix: bool) -> None:
        self.max_steps, self.step_timeout, self.expert, self.expert_fix = max_steps, step_timeout, expert, expert_fix
        self._envs: dict[str, Environment] = {}
        self._current: Environment | None = None

    def _make(self, source: str) -> Environment:
        if source == SCIENCEWORLD:
            from duomem.envs.scienceworld import ScienceWorldEnv

            return ScienceWorldEnv(max_steps=None if self.max_steps == MAX_STEPS else self.max_steps,
                                   step_timeout=self.step_timeout, expert=self.expert, admissible=not self.expert)
        from duomem.envs.alfworld import AlfworldEnv

        return AlfworldEnv(max_steps=self.max_steps, step_timeout=self.step_timeout, expert=self.expert,
                           expert_fix=self.expert_fix)

    def reset(self, task: TaskSpec, seed: int) -> Observation:
        source = SCIENCEWORLD if task.source == SCIENCEWORLD else "alfworld"
        if source not in self._envs:
            self._envs[source] = self._make(source)
        self._current = self._envs[source]
        return self._current.reset(task, seed=seed)

    def step(self, action: str) -> Observation:
        if self._current is None:
            raise RuntimeError("step() called before reset()")
        return self._current.step(action)

    def close(self) -> None:
        for env in self._envs.values():
            env.close()


def _answer(env: _Engines, op: str, payload) -> Answer:
    """Play one message on ``env``. A timeout or a game that breaks fails the episode (the run goes on); a user
    error (a missing game file, no Java for ScienceWorld) is raised, to stop the run with its one line."""
    start = time.perf_counter()
    try:
        if op == "reset":
            task, seed = payload
            obs = env.reset(task, seed)
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
        self._env = _Engines(max_steps, step_timeout, expert, expert_fix)
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
    env = _Engines(max_steps, step_timeout, expert, expert_fix)
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
