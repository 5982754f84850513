"""ScienceWorld: its Scala simulator (a JVM behind py4j) played as text, optionally with its gold-path teacher.

duomem talks to the simulator's ``PythonInterface`` directly, with the calls the ``scienceworld`` package makes,
and leaves out the package's wrapper because of what it does at every step: it asks the JVM for the valid actions,
the room and the inventory (about 0.18 s of a 0.2 s step) and ends the episode after ``envStepLimit`` (100)
moves, before some gold paths win. Here the valid actions are asked for only where ``admissible`` is on, and
the turn limit is ``max_steps``.

The JVM is started with every object's identity hash code fixed (``-XX:hashCode=2``). ScienceWorld keeps a room's
objects in hash sets of identity hashes, which HotSpot draws at random: the order in which objects are listed,
handled and simulated then changes from load to load, so the same variation, seed and actions gave different
observations and some gold paths failed their replay. With fixed hashes an episode depends on the variation, the
seed and the actions alone (a test checks this), at no measurable cost (a step 0.03 s, the valid actions 0.18 s).
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from duomem.envs.base import Observation, TaskSpec
from duomem.envs.timeout import call_with_timeout
from duomem.errors import DataError, EngineError, EnvTimeout

T = TypeVar("T")

STEP_LIMIT = 100
"""The default turn limit of an agent's episode (ScienceWorld's own default, ``envStepLimit=100``)."""
GOLD_STEP_LIMIT = 1000
"""The default turn limit with the gold teacher on: gold paths are up to about 750 actions long (on the friction
tasks the teacher waits for a block to slide by looking at it again and again); most are under 150."""
GOLD_TRIES = 5
"""Gold paths generated per episode until one wins when replayed (each try reseeds the simulator)."""
JAVA_OPTIONS = ("-XX:+UnlockExperimentalVMOptions", "-XX:hashCode=2")
"""Every identity hash code 1: the same variation, seed and actions give the same episode (see the module doc)."""
INSTALL_JAVA = "apt-get install default-jre-headless (openjdk-17-jre-headless on Debian 12)"
LOOK = "look around"
"""ScienceWorld's first move of every episode (its reset does the same)."""


@dataclass
class GoldPath:
    """ScienceWorld's gold action sequence for one episode, checked by replaying it."""

    actions: list[str]
    """The actions up to the one that wins (the generated sequence often goes on after the task is complete)."""
    seed: int | None
    """The seed the simulator's randomness was given after loading (None: ScienceWorld's own, the variation's):
    the path was generated and replayed under it, and an episode that follows it is played under it."""
    tries: int
    """Generations it took (1 unless a replay did not win)."""
    score: float
    """The replay's final score: 100 when it won."""
    error: str | None = None
    """Why no try won, where none did (the best try's actions are kept)."""


def retry_seed(seed: int | None, attempt: int) -> int | None:
    """The simulator's seed for gold try ``attempt`` (0-based) of an episode seeded ``seed``: ``seed`` itself first,
    then seeds derived from it."""
    return seed if attempt == 0 else zlib.crc32(f"{seed}:{attempt}".encode()) & 0x7FFFFFFF


def task_and_variation(task: TaskSpec) -> tuple[str, int]:
    """The simulator's task name (``game_file``) and variation index (``params["variation"]``) of ``task``."""
    variation = task.params.get("variation", "")
    if not task.game_file or not variation.isdigit():
        raise DataError(f"{task.game_id} is not a ScienceWorld task (it needs the task name in game_file and "
                        "params['variation']); list tasks with duomem.envs.scienceworld_data.load_tasks")
    return task.game_file, int(variation)


class ScienceWorldEnv:
    """One ScienceWorld episode at a time, in a JVM of its own (300-560 MB, started at the first reset or the
    first call that needs it; ``close`` stops it).

    ``reset(task, seed)`` loads the task's variation (which fixes the world: rooms, objects, the substance to
    boil) and reseeds the simulator's randomness with ``seed`` (what happens over time: animals wandering, plants
    crossing); ``seed=None`` keeps ScienceWorld's own seed, the variation index. The first observation is the
    answer to ``look around`` (ScienceWorld's first move) followed by the task description ("Your task is to
    ...", as ALFWorld's first observation ends with its task). Each observation carries the 0-100 ``score``;
    ``won`` is a score of 100 and ``done`` is set when the task is complete, failed (a negative score: focusing on
    the wrong object) or ``max_steps`` actions were taken. An action the game does not understand is answered
    ("No known action matches that input.") and counts as a step.

    ``admissible`` (default on) lists the valid actions in every observation (``admissible_commands``): 380 to
    3,400 of them, about 0.18 s a step where the step itself takes 0.03 s; off, the list is empty and
    :meth:`valid_actions` gives it on demand. ``expert`` puts the gold teacher's next action in ``expert_action``
    (see :meth:`gold_path`: a generation and a replay at each reset of a new episode, 0.1-20 s); it then defaults
    ``max_steps`` to :data:`GOLD_STEP_LIMIT` instead of :data:`STEP_LIMIT`. A call into the JVM that exceeds
    ``step_timeout`` seconds (loading, generating or replaying a gold path: four times that) raises
    :class:`EnvTimeout` and stops the JVM; the next reset starts a new one. ``java`` is the Java runtime to run.
    """

    def __init__(self, max_steps: int | None = None, step_timeout: float | None = 30.0, expert: bool = False,
                 admissible: bool = True, java: str = "java") -> None:
        self.max_steps = max_steps or (GOLD_STEP_LIMIT if expert else STEP_LIMIT)
        self.step_timeout = step_timeout
        self.expert = expert
        self.admissible = admissible
        self.java = java
        if shutil.which(java) is None:
            raise EngineError(f"ScienceWorld needs Java and {java!r} is not installed or not on PATH: "
                              f"{INSTALL_JAVA}")
        self._gateway: Any = None
        self._server: Any = None
        self._random: Any = None
        self._task_names: frozenset[str] = frozenset()
        self._golds: dict[tuple[str, int, int | None], GoldPath] = {}
        self._gold: GoldPath | None = None
        self._gold_pos = 0
        self._gold_error: str | None = None
        self._steps = 0
        self._done = True
        self._generated = False
        """Whether this JVM has generated a gold path (the next generation then restarts it)."""

    # The JVM

    def _start(self) -> None:
        if self._server is not None:
            return
        try:
            from py4j.java_gateway import GatewayParameters, JavaGateway, launch_gateway
            from scienceworld.constants import BASEPATH, JAR_PATH
        except ImportError:
            raise EngineError("ScienceWorld is not installed: pip install -e '.[scienceworld]' "
                              "(scienceworld==1.2.3)") from None
        try:
            port, process = launch_gateway(classpath=JAR_PATH, java_path=self.java, javaopts=list(JAVA_OPTIONS),
                                           die_on_exit=True, cwd=BASEPATH, return_proc=True)
        except Exception as exc:
            raise EngineError(f"cannot start ScienceWorld's JVM with {self.java}: {type(exc).__name__}: {exc}; "
                              f"check the Java runtime ({INSTALL_JAVA})") from exc
        self._gateway = JavaGateway(gateway_parameters=GatewayParameters(auto_field=True, port=port),
                                    java_process=process)
        jvm = self._gateway.jvm
        self._server = jvm.scienceworld.runtime.pythonapi.PythonInterface()
        self._random = jvm.java.lang.Class.forName("scala.util.Random$").getField("MODULE$").get(None)
        self._task_names = frozenset(self._server.getTaskNames())

    def _call(self, fn: Callable[[], T], factor: float, what: str) -> T:
        """``fn`` under ``factor`` times the step timeout; a timeout stops the JVM (its connection is mid-answer)."""
        try:
            return call_with_timeout(fn, self.step_timeout and self.step_timeout * factor, what)
        except EnvTimeout:
            self.close()
            raise

    def _load(self, name: str, variation: int, seed: int | None) -> None:
        """Load a fresh episode of ``name``'s ``variation`` (the simulator seeds its randomness with the variation)
        and reseed it with ``seed`` unless None."""
        if name not in self._task_names:
            raise DataError(f"unknown ScienceWorld task {name!r}; choose from {', '.join(sorted(self._task_names))}")
        error = self._server.load(name, variation, "", False)
        if error:
            raise DataError(f"ScienceWorld cannot load {name} variation {variation}: {error}")
        if seed is not None:
            self._random.setSeed(seed)

    # Episodes

    def reset(self, task: TaskSpec, seed: int | None = None) -> Observation:
        """Start an episode of ``task`` (see the class doc); with the teacher on, under the seed its gold path was
        generated with (``seed`` unless that path did not win)."""
        name, variation = task_and_variation(task)
        self._start()
        self._gold, self._gold_pos, self._gold_error = None, 0, None
        if self.expert:
            self._gold = self.gold_path(task, seed)
            self._gold_error = self._gold.error
            seed = self._gold.seed

        def begin() -> str:
            self._load(name, variation, seed)
            look = self._server.step(LOOK).strip()
            return f"{look}\n\n{self._server.getTaskDescription().strip()}"

        text = self._call(begin, 4, f"reset of {task.game_id}")
        self._steps = 0
        self._done = False
        obs = self._observation(text)
        self._done = obs.done
        return obs

    def step(self, action: str) -> Observation:
        """Apply ``action`` (non-empty text); the observation's ``done`` ends the episode."""
        if not action or not action.strip():
            raise ValueError("empty action: the agent must send a command")
        if self._server is None or self._done:
            raise RuntimeError("step() called before reset() or after the episode ended")
        action = action.strip()
        text = self._call(lambda: self._server.step(action), 1, f"step {action!r}")
        self._steps += 1
        self._follow_gold(action)
        obs = self._observation(text.strip())
        self._done = obs.done
        return obs

    def valid_actions(self) -> list[str]:
        """The actions the game accepts in the current state, sorted (about 0.18 s)."""
        if self._server is None:
            raise RuntimeError("valid_actions() called before reset()")
        return sorted(set(self._call(self._server.getValidActionObjectCombinations, 1, "valid actions")))

    def _observation(self, text: str) -> Observation:
        score = float(round(100 * self._server.getScore()))
        won = score >= 100
        done = won or score < 0 or bool(self._server.getCompleted()) or self._steps >= self.max_steps
        on_path = self._gold is not None and self._gold_error is None
        next_gold = self._gold.actions[self._gold_pos] if on_path and self._gold_pos < len(self._gold.actions) \
            else None
        return Observation(
            text=text,
            admissible_commands=self.valid_actions() if self.admissible else [],
            won=won,
            done=done,
            expert_action=next_gold if self.expert else None,
            expert_error=self._gold_error if self.expert else None,
            score=score,
        )

    def _follow_gold(self, action: str) -> None:
        """Advance along the gold path, or note where the episode left it (the teacher cannot plan anew)."""
        gold = self._gold
        if gold is None or self._gold_error is not None:
            return
        if self._gold_pos < len(gold.actions) and action == gold.actions[self._gold_pos]:
            self._gold_pos += 1
            return
        expected = gold.actions[self._gold_pos] if self._gold_pos < len(gold.actions) else "nothing"
        self._gold_error = (f"the episode left the gold path at step {self._steps}: played {action!r}, the gold "
                            f"path says {expected!r}")

    # The gold teacher

    def gold_path(self, task: TaskSpec, seed: int | None = None) -> GoldPath:
        """ScienceWorld's gold action sequence for the episode of ``task`` seeded ``seed``, checked by replay.

        Each try loads the variation, reseeds the simulator (:func:`retry_seed`: ``seed`` first), has the simulator
        generate its gold path (the ``createGoldActions`` that ``load(..., generateGoldPath=True)`` calls, which
        cannot take a seed), then replays the path from a fresh load under the same seed; the first replay that
        reaches a score of 100 is kept, up to :data:`GOLD_TRIES` tries (otherwise the best one, with ``error``).
        Paths are kept per (task, variation, seed) for the life of this environment. The replay ignores
        ``max_steps``.

        ScienceWorld's gold-path generator keeps state from one generation to the next in a JVM (the path of
        ``change-the-state-of-matter-of`` 22 differs after ``boil`` 23's was generated, under the same seed;
        loading a task alone changes nothing), so a path is always generated in a JVM that has generated none:
        each generation but a JVM's first restarts it (about 2 s). The teacher's episodes then do not depend on
        what the JVM played before (one worker or several, a batch, a resumed run)."""
        name, variation = task_and_variation(task)
        key = (name, variation, seed)
        if key in self._golds:
            return self._golds[key]
        if self._generated:
            self.close()  # a fresh JVM for each generation (see the doc above)
        self._start()
        self._generated = True
        self._done = True  # generating and replaying load the variation: any episode in progress ends
        best: GoldPath | None = None
        for attempt in range(GOLD_TRIES):
            try_seed = retry_seed(seed, attempt)
            actions = self._call(functools.partial(self._generate, name, variation, try_seed), 4,
                                 f"gold path of {task.game_id}")
            score, won_at = self._call(functools.partial(self._replay, name, variation, try_seed, actions), 4,
                                       f"gold replay of {task.game_id}")
            path = GoldPath(actions[:won_at] if won_at else actions, try_seed, attempt + 1, score)
            if won_at:
                best = path
                break
            if best is None or path.score > best.score:
                best = path
        assert best is not None
        if best.score < 100:
            best.error = f"no gold path of {task.game_id} won in {GOLD_TRIES} tries (best score {best.score:.0f})"
        self._golds[key] = best
        return best

    def _generate(self, name: str, variation: int, seed: int | None) -> list[str]:
        self._load(name, variation, seed)
        pair = self._server.taskMaker().createGoldActions(self._server.taskStr(), variation, self._server)
        actions, error = [str(a) for a in pair._1], str(pair._2 or "")
        if error:
            raise DataError(f"ScienceWorld could not make a gold path for {name} variation {variation}: {error}")
        return actions

    def _replay(self, name: str, variation: int, seed: int | None, actions: list[str]) -> tuple[float, int | None]:
        """Play ``actions`` from a fresh episode: the final score and the number of actions that won (None)."""
        self._load(name, variation, seed)
        self._server.step(LOOK)
        score = 0.0
        for i, action in enumerate(actions):
            self._server.step(action)
            score = float(round(100 * self._server.getScore()))
            if score >= 100:
                return score, i + 1
            if score < 0 or self._server.getCompleted():
                break
        return score, None

    def expert_wins(self, task: TaskSpec, seed: int | None = None) -> tuple[bool, int, str | None]:
        """Follow the gold path on ``task`` (needs ``expert=True``): ``(won, steps, teacher error)``. A check of the
        teacher, not an agent: agents are played by ``duomem.eval``."""
        obs = self.reset(task, seed=seed)
        steps, error = 0, obs.expert_error
        while not obs.done and obs.expert_action:
            obs = self.step(obs.expert_action)
            steps += 1
            error = error or obs.expert_error
        return obs.won, steps, error

    def task_description(self, name: str, variation: int) -> str:
        """The task description ScienceWorld states for ``name``'s ``variation`` (loads it: about 0.06 s)."""
        self._start()

        def describe() -> str:
            self._load(name, variation, None)
            return str(self._server.getTaskDescription()).strip()

        self._done = True  # loading ends any episode in progress
        return self._call(describe, 4, f"description of {name} variation {variation}")

    def close(self) -> None:
        """Stop the JVM (the next reset starts a new one)."""
        gateway, self._gateway, self._server, self._random = self._gateway, None, None, None
        self._done = True
        self._generated = False
        if gateway is None:
            return
        process = gateway.java_process
        with contextlib.suppress(Exception):
            gateway.shutdown()
        if process is not None and process.poll() is None:
            with contextlib.suppress(Exception):
                process.stdin.write(b"\n")  # py4j's die_on_exit: the JVM exits when its stdin speaks or closes
                process.stdin.flush()
            try:
                process.wait(timeout=10)
            except Exception:
                process.kill()
                process.wait()
