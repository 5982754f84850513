"""Play one episode: a policy against an environment, timed and recorded."""

from __future__ import annotations

import resource
import time
import zlib

from duomem.agent.base import Policy
from duomem.agent.trajectory import Step, Trajectory
from duomem.envs.base import Environment, Observation, TaskSpec
from duomem.errors import EnvTimeout
from duomem.eval.records import EpisodeRecord

THINK_ANSWER = "OK."


def episode_seed(seed: int, game_id: str, sample: int) -> int:
    """A per-episode seed derived from the run's seed, the game and the sample index."""
    return zlib.crc32(f"{seed}:{game_id}:{sample}".encode()) & 0x7FFFFFFF


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_episode(env: Environment, policy: Policy, task: TaskSpec, seed: int, sample: int = 0,
                max_steps: int = 50, extra: dict | None = None) -> EpisodeRecord:
    """Reset, then let ``policy`` take up to ``max_steps`` turns (thoughts count as turns)."""
    ep_seed = episode_seed(seed, task.game_id, sample)
    start = time.perf_counter()
    env_s = 0.0
    t0 = time.perf_counter()
    obs = env.reset(task, seed=ep_seed)
    env_s += time.perf_counter() - t0
    info = policy.reset(task, obs, ep_seed)
    traj = Trajectory(game_id=task.game_id, split=task.split, task_type=task.task_type, goal=task.goal,
                      initial_observation=obs.text, policy=policy.name, model=policy.model_name, sample=sample,
                      source=task.source, params=task.params)
    llm_s = 0.0
    prompt_tokens = completion_tokens = cached = 0
    invalid = thinks = env_steps = 0
    error = None
    try:
        for _ in range(max_steps):
            decision = policy.act(traj, obs)
            if decision.completion is not None:
                c = decision.completion
                llm_s += c.seconds
                prompt_tokens += c.prompt_tokens
                completion_tokens += c.completion_tokens
                cached += c.cached_tokens
            if decision.kind == "think":
                thinks += 1
                traj.steps.append(Step(kind="think", text=decision.command, observation=THINK_ANSWER,
                                       raw=decision.raw, match="think"))
                obs = Observation(text=THINK_ANSWER, admissible_commands=obs.admissible_commands,
                                  expert_action=obs.expert_action)
                continue
            invalid += decision.match in ("closest", "empty")
            t0 = time.perf_counter()
            obs = env.step(decision.command)
            env_s += time.perf_counter() - t0
            env_steps += 1
            traj.steps.append(Step(kind="action", text=decision.command, observation=obs.text, raw=decision.raw,
                                   match=decision.match))
            if obs.done:
                break
    except EnvTimeout as exc:
        error = f"timeout: {exc}"
    traj.won = bool(obs.won)
    return EpisodeRecord(
        game_id=task.game_id, task_type=task.task_type, split=task.split, sample=sample, seed=ep_seed,
        policy=policy.name, model=policy.model_name, won=traj.won, steps=len(traj.steps), env_steps=env_steps,
        thinks=thinks, invalid_actions=invalid, wall_s=time.perf_counter() - start, llm_s=llm_s, env_s=env_s,
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cached_prompt_tokens=cached,
        tokens_per_s=completion_tokens / llm_s if llm_s > 0 else 0.0, peak_rss_mb=peak_rss_mb(), error=error,
        trajectory=traj, memory_ids=info.get("memory_ids", []), **(extra or {}),
    )
