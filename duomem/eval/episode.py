"""An episode's record from its state, and the process memory figures that go into it."""

from __future__ import annotations

import resource
import time

from duomem.agent.episode import EpisodeState
from duomem.eval.records import EpisodeRecord


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


def to_record(state: EpisodeState, adapter: str | None, memory_bank: str | None, leakage_guard: str | None,
              action_selection: str | None = None) -> EpisodeRecord:
    """The finished episode ``state`` as a record (peak memory: this process's, i.e. the model's)."""
    traj = state.traj
    traj.won = bool(state.obs.won)
    return EpisodeRecord(
        game_id=state.task.game_id, task_type=state.task.task_type, split=state.task.split, sample=state.sample,
        seed=state.seed, policy=state.policy, model=state.model, adapter=adapter, memory_bank=memory_bank,
        memory_ids=state.memory_ids, memory_leakage_guard=leakage_guard, won=traj.won,
        score=state.obs.score, steps=len(traj.steps), loop_period=state.loop_period,
        env_steps=state.env_steps, thinks=state.thinks, invalid_actions=state.invalid,
        wall_s=time.perf_counter() - state.start, llm_s=state.llm_s, env_s=state.env_s,
        prompt_tokens=state.prompt_tokens, completion_tokens=state.completion_tokens,
        cached_prompt_tokens=state.cached_tokens,
        tokens_per_s=state.completion_tokens / state.llm_s if state.llm_s > 0 else 0.0,
        scored_tokens=state.scored_tokens, action_selection=action_selection,
        peak_rss_mb=peak_rss_mb(), ended_at=time.time(), error=state.error, expert_error=state.expert_error,
        trajectory=traj,
    )
