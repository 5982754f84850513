"""Collect trajectories of a policy over (train) tasks, several per task, for memories and distillation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from duomem.agent.demonstrations import demonstration
from duomem.envs.base import TaskSpec
from duomem.eval.runner import load_records
from duomem.eval.spec import RolloutSpec
from duomem.jsonl import atomic_write_text

TRAJECTORIES = "trajectories.jsonl"
DEMONSTRATIONS = "demonstrations.jsonl"


def collect(policy: str, model: str | None, tasks: Sequence[TaskSpec], out_dir: Path, samples: int = 1,
            explore: float = 0.3, temperature: float = 0.7, max_steps: int = 50, workers: int = 1, shots: int = 2,
            threads: int | None = None, seed: int = 0, show_progress: bool = True,
            adapter: str | None = None, memory: str | None = None, top_k: int = 2,
            executor: str = "local", backend: str = "auto", device: str = "cpu", batch: int = 1) -> dict:
    """Sample 0 of each task is played plainly (expert, or greedy decoding); samples 1..S-1 diversely (expert
    detours with probability ``explore``, or decoding at ``temperature``). Writes ``trajectories.jsonl``: every
    episode's trajectory, each with its policy and model, so a teacher's provenance stays explicit.
    ``executor``: ``local`` worker processes or ``ray`` actors (see ``run_rollouts``); an LLM on the transformers
    backend with ``batch`` > 1 plays its episodes in batches (see ``duomem.eval.batched``)."""
    from duomem.eval.batched import evaluate

    out_dir = Path(out_dir)
    base = dict(policy=policy, model=model, max_steps=max_steps, threads=threads, seed=seed, shots=shots)
    if policy == "llm":
        base.update(adapter=adapter, memory=memory, top_k=top_k, backend=backend, device=device)
    runs = [("plain", RolloutSpec(**base), [0])]
    if samples > 1:
        diverse = dict(explore=explore) if policy == "expert" else dict(temperature=temperature)
        runs.append(("diverse", RolloutSpec(**base, **diverse), list(range(1, samples))))
    for sub, spec, sample_ids in runs:
        evaluate(spec, tasks, out_dir / sub, name=f"collect-{sub}", workers=workers, batch=batch,
                 samples=sample_ids, show_progress=show_progress, executor=executor, measure_speed=False)
    return write_trajectories(out_dir, [sub for sub, _, _ in runs], tasks)


def write_trajectories(out_dir: Path, subs: Sequence[str], tasks: Sequence[TaskSpec]) -> dict:
    """Merge the sub-runs' trajectories into ``trajectories.jsonl`` (one per episode, sorted) and write the won
    ones, simplified and annotated, to ``demonstrations.jsonl`` (distinct action sequences only)."""
    wanted = {t.game_id for t in tasks}
    records = [r for sub in subs for r in load_records(out_dir / sub) if r.game_id in wanted]
    records.sort(key=lambda r: (r.game_id, r.sample))
    lines = [r.trajectory.model_dump_json() for r in records]
    path = out_dir / TRAJECTORIES
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    demos, seen = [], set()
    for r in records:
        demo = demonstration(r.trajectory)
        if demo is None or (demo.game_id, tuple(demo.actions)) in seen:
            continue
        seen.add((demo.game_id, tuple(demo.actions)))
        demos.append(demo.model_dump_json())
    atomic_write_text(out_dir / DEMONSTRATIONS, "".join(line + "\n" for line in demos))
    return {"episodes": len(records), "won": sum(r.won for r in records), "trajectories": str(path),
            "demonstrations": len(demos)}
