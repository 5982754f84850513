"""ALFWorld on TextWorld's PDDL engine, with ALFWorld's demangler, infos and (optionally) handcoded expert."""

from __future__ import annotations

import contextlib
import functools
import random
from pathlib import Path

from duomem.envs.base import MAX_STEPS, Observation, TaskSpec
from duomem.envs.timeout import call_with_timeout
from duomem.errors import DataError, EnvTimeout

WELCOME = "-= Welcome to TextWorld, ALFRED! =-"


@functools.cache
def _memoize_text_generation() -> None:
    """Parse each of TextWorld's text-generation templates once per process instead of at every step, and
    translate each game's problem once per episode instead of twice.

    TextWorld's PDDL engine re-parses the template of every sentence it writes, and the condition of each
    template, with a tatsu grammar (about 45 parses per step, most of a step's time), and translates the game's
    PDDL problem with Fast Downward four times per episode (twice when the game loads, twice again at its reset);
    the result for the same input is always the same, so it is kept and a deep copy handed out (the engine writes
    into what it gets).
    Observations do not change: a test replays games against the committed expert records, and
    ``benchmarks/env_speed.py`` compares the two engines' observations."""
    import copy

    from textworld.envs.pddl import textgen

    parse = textgen._parse_and_convert

    @functools.lru_cache(maxsize=16384)
    def parsed(text: str, rule_name: str) -> list:
        return parse(text, rule_name=rule_name)

    def cached(text, rule_name="symbols", trace=False, **kwargs):
        if trace or kwargs or not isinstance(text, str):
            return parse(text, rule_name=rule_name, trace=trace, **kwargs)
        return copy.deepcopy(parsed(text, rule_name))

    textgen._parse_and_convert = cached

    parse_query = textgen.Rule.parse_conjunctive_query  # the conditions of the templates: parsed once too
    parsed_query = functools.lru_cache(maxsize=16384)(parse_query)
    textgen.Rule.parse_conjunctive_query = classmethod(lambda cls, expr: copy.deepcopy(parsed_query(expr)))

    import fast_downward

    translate = fast_downward.pddl2sas  # loading a game and resetting it translate the same problem: once

    @functools.lru_cache(maxsize=8)
    def translated(domain: str, problem: str, verbose: bool, optimize: bool) -> tuple:
        return translate(domain, problem, verbose=verbose, optimize=optimize)

    fast_downward.pddl2sas = lambda domain, problem, verbose=False, optimize=False: copy.deepcopy(
        translated(domain, problem, verbose, optimize))


def _expert_wrapper(fix: bool):
    """ALFWorld's handcoded expert as a textworld wrapper, made safe and optionally repaired.

    Safe: the expert raises on some games (``random.choice`` over no object of interest when a generated layout
    gives it nothing to search); the step that was played stands, the expert's plan falls back to ALFWorld's
    default ``look`` and the error is kept in ``expert_error`` (it reaches the observation and the episode's
    record), so one game cannot end a whole run.

    Repaired (``fix``): ALFWorld 0.4's grammar says ``move X to Y`` where older releases said ``put X in/on Y``,
    but the expert still tracks its inventory by looking for "put" in the last command: after placing the first of
    two objects it believes it still holds it and wanders (it wins few pick_two games). The repair tells the expert
    the old wording of the command that was actually played."""
    import textworld
    from alfworld.agents.environment.alfred_tw_env import AlfredExpert

    class SafeAlfredExpert(AlfredExpert):
        expert_error: str | None = None

        def _gather_infos(self):
            try:
                super()._gather_infos()
            except Exception as exc:  # the expert's own bug, not the game's: keep playing
                self.expert_error = f"{type(exc).__name__}: {exc}"
                self.state["extra.expert_plan"] = ["look"]

        def step(self, command):
            if not fix:
                return super().step(command)
            self.state, reward, done = textworld.core.Wrapper.step(self, command)
            text = str(command)
            self.prev_command = "put " + text[len("move "):].replace(" to ", " in/on ", 1) \
                if text.startswith("move ") else text
            self._gather_infos()
            return self.state, reward, done

    return SafeAlfredExpert


def _expert_error(env: object) -> str | None:
    """The error the safe expert wrapper kept for the last step, cleared once read."""
    node = env
    while node is not None:
        if "expert_error" in vars(type(node)):
            error = node.expert_error
            node.expert_error = None
            return error
        node = vars(node).get("_wrapped_env")
    return None


class AlfworldEnv:
    """One ALFWorld game at a time: ``reset(task)`` loads it (reusing a loaded game), ``step(action)`` plays.

    ``done`` is set when the game is won or ``max_steps`` actions were taken. A step that exceeds ``step_timeout``
    seconds raises :class:`EnvTimeout` and the engine is reloaded at the next reset (loading and reset get four
    times ``step_timeout``). ``expert_fix`` (default)
    repairs the handcoded expert's inventory tracking under the 0.4 grammar (see :func:`_expert_wrapper`);
    ``expert_fix=False`` is ALFWorld's expert exactly as released.
    """

    def __init__(self, max_steps: int = MAX_STEPS, step_timeout: float | None = 30.0, expert: bool = True,
                 expert_fix: bool = True) -> None:
        self.max_steps = max_steps
        self.step_timeout = step_timeout
        self.expert = expert
        self.expert_fix = expert_fix
        self._env = None
        self._loaded: str | None = None
        self._steps = 0
        self._done = True
        self._random_state: object = random.Random(0).getstate()

    def _load(self, game_file: str) -> None:
        import textworld
        from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredInfos

        if not Path(game_file).is_file():
            raise DataError(f"game file {game_file} is missing; run `duomem data prepare` again")
        _memoize_text_generation()
        self.close()
        extras = ["gamefile", "expert_plan"] if self.expert else ["gamefile"]
        infos = textworld.EnvInfos(won=True, admissible_commands=True, extras=extras)
        wrappers = [AlfredDemangler(shuffle=False), AlfredInfos]
        if self.expert:
            wrappers.append(_expert_wrapper(self.expert_fix))
        try:
            self._env = call_with_timeout(lambda: textworld.start(game_file, infos, wrappers=wrappers),
                                          self.step_timeout and self.step_timeout * 4, f"loading {game_file}")
        except EnvTimeout:
            raise
        except Exception as exc:
            raise DataError(f"cannot load game {game_file}: {type(exc).__name__}: {exc}") from exc
        self._loaded = game_file

    def _seeded(self, fn):
        """Run ``fn`` with Python's global ``random`` (which ALFWorld's expert draws from when stuck) set to this
        episode's own stream, then give the process its stream back: the game's randomness depends on the
        episode's seed alone, and nothing else in the process is reseeded."""
        outside = random.getstate()
        random.setstate(self._random_state)
        try:
            return fn()
        finally:
            self._random_state = random.getstate()
            random.setstate(outside)

    def reset(self, task: TaskSpec, seed: int | None = None) -> Observation:
        """Start an episode of ``task``; ``seed`` seeds the game's randomness (the expert's choices when stuck)."""
        if self._loaded != task.game_file or self._env is None:
            self._load(task.game_file)
        self._random_state = random.Random(seed if seed is not None else 0).getstate()
        state = self._seeded(lambda: call_with_timeout(self._env.reset, self.step_timeout and self.step_timeout * 4,
                                                       f"reset of {task.game_id}"))
        self._steps = 0
        self._done = False
        text = state["feedback"].replace(WELCOME, "").strip()
        return self._observation(state, text)

    def step(self, action: str) -> Observation:
        """Apply ``action`` (non-empty text); the observation's ``done`` ends the episode."""
        if not action or not action.strip():
            raise ValueError("empty action: the agent must send a command")
        if self._env is None or self._done:
            raise RuntimeError("step() called before reset() or after the episode ended")
        try:
            state, _, _ = self._seeded(lambda: call_with_timeout(lambda: self._env.step(action.strip()),
                                                                 self.step_timeout, f"step {action!r}"))
        except EnvTimeout:
            self.close()
            raise
        self._steps += 1
        obs = self._observation(state, state["feedback"].strip())
        self._done = obs.done
        return obs

    def _observation(self, state: dict, text: str) -> Observation:
        won = bool(state["won"])
        plan = state.get("extra.expert_plan") if self.expert else None
        error = None
        if self.expert and self._env is not None:
            error = _expert_error(self._env)
        return Observation(
            text=text,
            admissible_commands=sorted(state["admissible_commands"] or []),
            won=won,
            done=won or self._steps >= self.max_steps,
            expert_action=plan[0] if plan else None,
            expert_error=error,
        )

    def expert_wins(self, task: TaskSpec, seed: int, max_steps: int = MAX_STEPS) -> tuple[bool, int, str | None]:
        """Follow the handcoded expert's plan on ``task`` (needs ``expert=True``): ``(won, steps, expert error)``.
        A check of a game (e.g. a generated one), not an agent: agents are played by ``duomem.eval``."""
        obs = self.reset(task, seed=seed)
        steps, error = 0, obs.expert_error
        while not obs.won and steps < max_steps:
            obs = self.step(obs.expert_action or "look")
            steps += 1
            error = error or obs.expert_error
        return obs.won, steps, error

    def close(self) -> None:
        if self._env is not None:
            with contextlib.suppress(Exception):
                self._env.close()
        self._env = None
        self._loaded = None
