"""Batched rollouts: many episodes stepped together, one batched ``generate`` per step, games in worker
processes. Same records, resume and summary as :func:`duomem.eval.runner.run_rollouts`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from duomem.envs.base import TaskSpec
from duomem.errors import ConfigError
from duomem.eval.episode import EpisodeState, peak_rss_mb
from duomem.eval.runner import (
    EPISODES,
    RunResult,
    _check_resume,
    _leakage_note,
    _progress,
    _sample_ids,
    load_records,
    run_rollouts,
    write_summary,
)
from duomem.eval.spec import RolloutSpec
from duomem.jsonl import JsonlAppender


def evaluate(spec: RolloutSpec, tasks: Sequence[TaskSpec], out_dir: Path, name: str, workers: int = 1,
             batch: int = 1, samples: int | Sequence[int] = 1, show_progress: bool = True,
             executor: str = "local", measure_speed: bool = True) -> RunResult:
    """Batched when the spec runs an LLM on the transformers backend and ``batch`` > 1; otherwise one episode at
    a time per worker process (``executor`` ``local``) or Ray actor (``ray``)."""
    if spec.policy == "llm" and spec.backend == "transformers" and batch > 1:
        if executor != "local":
            raise ConfigError(f"--batch > 1 steps its episodes in one process; use --executor local, not "
                              f"{executor}")
        return run_rollouts_batched(spec, tasks, out_dir, name, batch=batch, samples=samples,
                                    show_progress=show_progress)
    return run_rollouts(spec, tasks, out_dir, name, samples=samples, workers=workers,
                        show_progress=show_progress, executor=executor, measure_speed=measure_speed)


def run_rollouts_batched(spec: RolloutSpec, tasks: Sequence[TaskSpec], out_dir: Path, name: str, batch: int = 32,
                         samples: int | Sequence[int] = 1, show_progress: bool = True) -> RunResult:
    from duomem.agent.factory import build_policy
    from duomem.agent.react import STOP, ReActAgent
    from duomem.envs.pool import EnvProcess

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_resume(out_dir, spec, name)
    done = {r.key for r in load_records(out_dir)}
    sample_ids = _sample_ids(samples)
    queue = [(t, s) for t in tasks for s in sample_ids if (t.game_id, s) not in done]
    queue.reverse()
    extra = {"adapter": spec.adapter, "memory_bank": spec.memory, "memory_leakage_guard": _leakage_note(spec)}
    played = 0
    if queue:
        prototype = build_policy(spec)
        assert isinstance(prototype, ReActAgent)
        model = prototype.model
        slots = [EnvProcess(max_steps=spec.max_steps, step_timeout=spec.step_timeout)
                 for _ in range(min(batch, len(queue)))]
        active: dict[int, tuple[EpisodeState, ReActAgent]] = {}
        with JsonlAppender(out_dir / EPISODES) as out, _progress(show_progress) as progress:
            total = len(tasks) * len(sample_ids)
            bar = progress.add_task(name, total=total, completed=total - len(queue))

            def start(i: int) -> None:
                task, sample = queue.pop()
                state = EpisodeState(task, "llm", model.name, sample, spec.seed, spec.max_steps, extra)
                agent = ReActAgent(model, shots=spec.shots, memory=prototype.memory,
                                   history_window=spec.history_window, max_new_tokens=spec.max_new_tokens,
                                   temperature=spec.temperature)
                active[i] = (state, agent)
                slots[i].send_reset(task, state.seed)

            def finish(i: int) -> None:
                nonlocal played
                state, _ = active.pop(i)
                out.append(state.record(rss_mb=peak_rss_mb()).model_dump_json())
                played += 1
                progress.advance(bar)

            def begin(i: int) -> None:
                obs, error, seconds = slots[i].receive()
                state, agent = active[i]
                if obs is None:
                    state.begin_failed(error or "reset failed", seconds)
                else:
                    state.begin(obs, seconds, agent.reset(state.task, obs, state.seed))

            for i in range(len(slots)):
                start(i)
            for i in list(active):
                begin(i)
            while active:
                ids = sorted(active)
                if not ids:
                    break
                convs = [active[i][1].messages(active[i][0].traj) for i in ids]
                completions = model.complete_batch(convs, max_tokens=spec.max_new_tokens, stop=STOP,
                                                   temperature=spec.temperature, seed=spec.seed)
                stepping = []
                for i, completion in zip(ids, completions, strict=True):
                    state, agent = active[i]
                    command = state.decide(agent.decide(state.traj, state.obs, completion))
                    if command is not None:
                        slots[i].send_step(command)
                        stepping.append(i)
                for i in stepping:
                    obs, error, seconds = slots[i].receive()
                    state = active[i][0]
                    if obs is None:
                        state.fail(error or "env error")
                    else:
                        state.observe(obs, seconds)
                restarted = []
                for i in ids:
                    if active[i][0].finished:
                        finish(i)
                        if queue:
                            start(i)
                            restarted.append(i)
                for i in restarted:
                    begin(i)
                for i in [i for i in active if active[i][0].finished]:
                    finish(i)  # an episode whose reset failed
        for slot in slots:
            slot.close()
    records, summary = write_summary(out_dir, spec, tasks, samples, name)
    return RunResult(out_dir=out_dir, records=records, summary=summary, played=played)
