"""Collect trajectories of a policy over (train) tasks, several per task, for memories and distillation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from duomem.agent.demonstrations import demonstration
from duomem.envs.base import TaskSpec
from duomem.eval.runner import load_records, run_rollouts
from duomem.eval.spec import RolloutSpec
from duomem.jsonl import atomic_write_text

TRAJECTORIES = "trajectories.jsonl"
DEMONSTRATIONS = "demonstrations.jsonl"


def diverse(spec: RolloutSpec, explore: float = 0.3, temperature: float = 0.7) -> RolloutSpec:
    """The spec of samples after the first: the expert takes detours with probability ``explore``; a model
    samples at ``temperature``."""
    change = {"explore": explore} if spec.policy == "expert" else {"temperature": temperature}
    return spec.model_copy(update=change)


def collect(spec: RolloutSpec, tasks: Sequence[TaskSpec], out_dir: Path, samples: int = 1,
            diverse_spec: RolloutSpec | None = None, workers: int = 1, executor: str = "local",
            show_progress: bool = True) -> dict:
    """Sample 0 of each task is played with ``spec`` (the plain expert, or greedy decoding); samples 1..S-1 with
    ``diverse_spec`` (default :func:`diverse`). Writes ``trajectories.jsonl``: every episode's trajectory, each
    with its policy and model, so a teacher's provenance stays explicit, and ``demonstrations.jsonl``."""
    out_dir = Path(out_dir)
    runs = [("plain", spec, [0])]
    if samples > 1:
        runs.append(("diverse", diverse_spec or diverse(spec), list(range(1, samples))))
    for sub, run_spec, sample_ids in runs:
        run_rollouts(run_spec, tasks, out_dir / sub, name=f"collect-{sub}", samples=sample_ids, workers=workers,
                     executor=executor, show_progress=show_progress, measure_speed=False)
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
