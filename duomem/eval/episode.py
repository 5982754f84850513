"""Play one episode: a policy against an environment, timed and recorded."""

from __future__ import annotations

import resource
import time
import zlib

from duomem.agent.base import Decision, Policy
from duomem.agent.trajectory import Step, Trajectory
from duomem.envs.base import Environment, Observation, TaskSpec
from duomem.errors import EnvTimeout
from duomem.eval.records import EpisodeRecord

THINK_ANSWER = "OK."


def episode_seed(seed: int, game_id: str, sample: int) -> int:
    """A per-episode seed derived from the run's seed, the game and the sample index."""
    return zlib.crc32(f"{seed}:{game_id}:{sample}".encode()) & 0x7FFFFFFF


def reset_peak_rss() -> None:
    """Start measuring peak memory afresh (Linux: clears the VmHWM high-water mark); elsewhere a no-op."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """Peak resident memory of this process since the last :func:`reset_peak_rss` (or since it started)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class EpisodeState:
    """The bookkeeping of one episode, shared by the sequential loop and the batched runner."""

    def __init__(self, task: TaskSpec, policy_name: str, model_name: str | None, sample: int, seed: int,
                 max_steps: int, extra: dict | None = None) -> None:
        self.task = task
        self.sample = sample
        self.seed = episode_seed(seed, task.game_id, sample)
        self.max_steps = max_steps
        self.extra = extra or {}
        self.policy_name, self.model_name = policy_name, model_name
        self.start = time.perf_counter()
        self.env_s = self.llm_s = 0.0
        self.prompt_tokens = self.completion_tokens = self.cached = 0
        self.invalid = self.thinks = self.env_steps = 0
        self.error: str | None = None
        self.info: dict = {}
        self.obs: Observation | None = None
        self.traj: Trajectory | None = None
        self.finished = False

    def begin(self, obs: Observation, env_seconds: float, info: dict) -> None:
        self.obs, self.info = obs, info
        self.env_s += env_seconds
        t = self.task
        self.traj = Trajectory(game_id=t.game_id, split=t.split, task_type=t.task_type, goal=t.goal,
                               initial_observation=obs.text, policy=self.policy_name, model=self.model_name,
                               sample=self.sample, source=t.source, params=t.params)

    def begin_failed(self, error: str, env_seconds: float) -> None:
        """The game could not be reset: an empty, lost episode with ``error``."""
        self.begin(Observation(text="", admissible_commands=[]), env_seconds, {})
        self.fail(error)

    def decide(self, decision: Decision) -> str | None:
        """Account for ``decision``; the command to send to the game, or None for a thought."""
        assert self.traj is not None and self.obs is not None
        if decision.completion is not None:
            c = decision.completion
            self.llm_s += c.seconds
            self.prompt_tokens += c.prompt_tokens
            self.completion_tokens += c.completion_tokens
            self.cached += c.cached_tokens
        if decision.kind == "think":
            self.thinks += 1
            self.traj.steps.append(Step(kind="think", text=decision.command, observation=THINK_ANSWER,
                                        raw=decision.raw, match="think"))
            self.obs = Observation(text=THINK_ANSWER, admissible_commands=self.obs.admissible_commands,
                                   expert_action=self.obs.expert_action)
            self._check_limit()
            return None
        self.invalid += decision.match in ("closest", "empty")
        self._pending = decision
        return decision.command

    def observe(self, obs: Observation, env_seconds: float) -> None:
        """The game's answer to the command returned by :meth:`decide`."""
        assert self.traj is not None
        decision = self._pending
        self.env_s += env_seconds
        self.env_steps += 1
        self.traj.steps.append(Step(kind="action", text=decision.command, observation=obs.text, raw=decision.raw,
                                    match=decision.match))
        self.obs = obs
        if obs.done:
            self.finished = True
        self._check_limit()

    def fail(self, error: str) -> None:
        self.error = error
        self.finished = True

    def _check_limit(self) -> None:
        if self.traj is not None and len(self.traj.steps) >= self.max_steps:
            self.finished = True

    def record(self, rss_mb: float | None = None) -> EpisodeRecord:
        assert self.traj is not None
        self.traj.won = bool(self.obs.won) if self.obs else False
        return EpisodeRecord(
            game_id=self.task.game_id, task_type=self.task.task_type, split=self.task.split, sample=self.sample,
            seed=self.seed, policy=self.policy_name, model=self.model_name, won=self.traj.won,
            steps=len(self.traj.steps), env_steps=self.env_steps, thinks=self.thinks, invalid_actions=self.invalid,
            wall_s=time.perf_counter() - self.start, llm_s=self.llm_s, env_s=self.env_s,
            prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
            cached_prompt_tokens=self.cached,
            tokens_per_s=self.completion_tokens / self.llm_s if self.llm_s > 0 else 0.0,
            peak_rss_mb=peak_rss_mb() if rss_mb is None else rss_mb, ended_at=time.time(), error=self.error,
            trajectory=self.traj,
            memory_ids=self.info.get("memory_ids", []), **self.extra,
        )


def run_episode(env: Environment, policy: Policy, task: TaskSpec, seed: int, sample: int = 0,
                max_steps: int = 50, extra: dict | None = None) -> EpisodeRecord:
    """Reset, then let ``policy`` take up to ``max_steps`` turns (thoughts count as turns)."""
    state = EpisodeState(task, policy.name, policy.model_name, sample, seed, max_steps, extra)
    t0 = time.perf_counter()
    obs = env.reset(task, seed=state.seed)
    env_s = time.perf_counter() - t0
    state.begin(obs, env_s, policy.reset(task, obs, state.seed))
    try:
        while not state.finished:
            assert state.traj is not None and state.obs is not None
            command = state.decide(policy.act(state.traj, state.obs))
            if command is None:
                continue
            t0 = time.perf_counter()
            obs = env.step(command)
            state.observe(obs, time.perf_counter() - t0)
    except EnvTimeout as exc:
        state.fail(f"timeout: {exc}")
    return state.record()
