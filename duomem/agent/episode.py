"""The state of one episode: everything a policy and the rollout engine know about it, in one object.

Policies are functions of this state (they keep nothing per episode themselves), so one policy object can play
many episodes at once, one at a time or stepped together in a batch, with the same per-turn seeds.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from duomem.agent.parsing import INVALID_MATCHES
from duomem.agent.trajectory import Step, Trajectory
from duomem.envs.base import Observation, TaskSpec
from duomem.llm.base import Completion
from duomem.seeds import episode_seed, step_seed

THINK_ANSWER = "OK."


@dataclass
class Decision:
    """What a policy does next."""

    kind: str
    """``think`` or ``action``."""
    command: str
    """The command to send (non-empty), or the thought."""
    raw: str | None = None
    """The model's raw output."""
    match: str = "exact"
    """How the output became the command (see :mod:`duomem.agent.parsing`)."""
    completion: Completion | None = None


class EpisodeState:
    """Bookkeeping of one episode: task, seed, trajectory so far, last observation, costs and the policy's
    per-episode context (first user turn, retrieved memories, random stream)."""

    def __init__(self, task: TaskSpec, policy: str, model: str | None, sample: int, run_seed: int,
                 max_steps: int, loop_limit: int | None = None) -> None:
        self.task = task
        self.sample = sample
        self.seed = episode_seed(run_seed, task.game_id, sample)
        self.max_steps = max_steps
        self.loop_limit = loop_limit
        """End the episode once its last turns are one cycle played this many times over (None: never)."""
        self.loop_period: int | None = None
        """The length of the cycle that ended the episode under ``loop_limit``."""
        self.policy, self.model = policy, model
        self.rng = random.Random(self.seed)
        """The policy's random stream for this episode (e.g. the exploring expert's detours)."""
        self.first_user = ""
        """The LLM agent's first user turn: instructions, examples, memories and the task."""
        self.memory_ids: list[str] = []
        self.start = time.perf_counter()
        self.env_s = self.llm_s = 0.0
        self.prompt_tokens = self.completion_tokens = self.cached_tokens = self.scored_tokens = 0
        self.invalid = self.thinks = self.env_steps = 0
        self.error: str | None = None
        self.expert_error: str | None = None
        self.obs = Observation(text="", admissible_commands=[])
        self.traj = Trajectory(game_id=task.game_id, split=task.split, task_type=task.task_type, goal=task.goal,
                               initial_observation="", policy=policy, model=model, sample=sample,
                               source=task.source, params=task.params)
        self.finished = False
        self._pending: Decision | None = None

    @property
    def turn(self) -> int:
        """Turns taken so far (thoughts included)."""
        return len(self.traj.steps)

    @property
    def step_seed(self) -> int:
        """The sampling seed of the next turn."""
        return step_seed(self.seed, self.turn)

    def begin(self, obs: Observation, env_seconds: float) -> None:
        """The game's first observation."""
        self.obs = obs
        self.env_s += env_seconds
        self.traj.initial_observation = obs.text
        self._note_expert(obs)

    def begin_failed(self, error: str, env_seconds: float) -> None:
        """The game could not be reset: an empty, lost episode with ``error``."""
        self.env_s += env_seconds
        self.fail(error)

    def decide(self, decision: Decision) -> str | None:
        """Account for ``decision``; the command to send to the game, or None for a thought."""
        if decision.completion is not None:
            c = decision.completion
            self.llm_s += c.seconds
            self.prompt_tokens += c.prompt_tokens
            self.completion_tokens += c.completion_tokens
            self.cached_tokens += c.cached_tokens
            self.scored_tokens += c.scored_tokens
        if decision.kind == "think":
            self.thinks += 1
            self.traj.steps.append(Step(kind="think", text=decision.command, observation=THINK_ANSWER,
                                        raw=decision.raw, match="think"))
            self.obs = Observation(text=THINK_ANSWER, admissible_commands=self.obs.admissible_commands,
                                   expert_action=self.obs.expert_action, score=self.obs.score)
            self._check_limit()
            return None
        self.invalid += decision.match in INVALID_MATCHES
        self._pending = decision
        return decision.command

    def observe(self, obs: Observation, env_seconds: float) -> None:
        """The game's answer to the command returned by :meth:`decide`."""
        decision = self._pending
        assert decision is not None, "observe() without a pending command"
        self._pending = None
        self.env_s += env_seconds
        self.env_steps += 1
        self.traj.steps.append(Step(kind="action", text=decision.command, observation=obs.text, raw=decision.raw,
                                    match=decision.match))
        self.obs = obs
        self._note_expert(obs)
        if obs.done:
            self.finished = True
        self._check_limit()

    def fail(self, error: str) -> None:
        self.error = error
        self.finished = True

    def _note_expert(self, obs: Observation) -> None:
        if obs.expert_error and not self.expert_error:
            self.expert_error = obs.expert_error

    def _check_limit(self) -> None:
        if len(self.traj.steps) >= self.max_steps:
            self.finished = True
        elif self.loop_limit and not self.finished:
            self.loop_period = loop_period(self.traj.steps, self.loop_limit)
            self.finished = self.loop_period is not None


def loop_period(steps: Sequence[Step], times: int) -> int | None:
    """The shortest P such that the last ``times`` x P turns are one cycle of P turns played ``times`` times over
    (the same kind, words and answer, turn for turn), or None. An agent that repeats itself so exactly is stuck:
    with ``times`` = 4 this ended none of the 2,746 won episodes of the committed records (3 ended one on
    valid_seen, a shelf sweep played three times before the fourth found the object)."""
    keys = [(s.kind, s.text, s.observation) for s in steps]
    n = len(keys)
    for period in range(1, n // times + 1):
        window = keys[n - period * times:]
        if all(window[i] == window[i - period] for i in range(period, len(window))):
            return period
    return None
