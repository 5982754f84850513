"""Shorter CPU play that changes no outcome: the loop limit (``RolloutSpec.loop_limit``: an episode whose agent plays
one cycle of turns over and over ends early, lost; on the committed runs it never ends a won episode) and the
llama.cpp workers' shared prefix store (the same records)."""

from __future__ import annotations

from pathlib import Path

import pytest

from duomem.agent.episode import loop_period
from duomem.agent.trajectory import Step
from duomem.envs.alfworld_data import load_tasks
from duomem.envs.generate import generate_tasks
from duomem.eval.player import play
from duomem.eval.runner import load_records, run_rollouts
from duomem.eval.spec import RolloutSpec
from duomem.jsonl import read_jsonl

ROOT = Path(__file__).resolve().parent.parent


def _steps(*commands: str) -> list[Step]:
    return [Step(kind="action", text=c, observation=f"after {c}") for c in commands]


@pytest.mark.fast
def test_loop_period_is_the_shortest_cycle_played_n_times():
    assert loop_period(_steps("a", "a", "a"), 4) is None
    assert loop_period(_steps("x", "a", "a", "a", "a"), 4) == 1
    assert loop_period(_steps("a", "b") * 4, 4) == 2
    assert loop_period(_steps("a", "b") * 4, 5) is None
    assert loop_period(_steps("a", "b", "c") * 3 + _steps("a", "b", "d"), 2) is None  # it broke out
    # the same words with another answer are no loop: the world changed
    steps = _steps("open drawer 1") * 4
    steps[1] = Step(kind="action", text="open drawer 1", observation="You open the drawer 1.")
    assert loop_period(steps, 4) is None


def test_the_base_model_looping_on_a_real_game_ends_early(duomem_home: Path, smollm2: str, tmp_path: Path):
    generate_tasks(tmp_path / "gen", n=1, seed=3, task_types=["pick"], show_progress=False)
    tasks = load_tasks("train", tmp_path / "gen")
    spec = RolloutSpec(model=smollm2, loop_limit=4, max_new_tokens=48)
    run_rollouts(spec, tasks, tmp_path / "base", "base", show_progress=False, measure_speed=False)
    [record] = load_records(tmp_path / "base")
    assert not record.won and record.loop_period is not None
    assert record.steps < spec.max_steps
    assert loop_period(record.trajectory.steps, 4) == record.loop_period
    assert loop_period(record.trajectory.steps[:-1], 4) is None  # it ended at the first turn the loop was complete
    assert "loop_limit" in spec.key_fields() and "loop_limit" not in RolloutSpec(model=smollm2).key_fields()


def test_four_times_ends_no_won_episode_of_the_committed_runs():
    """The demo's limit, checked on every committed LLM episode: no won one ever played a cycle four times over
    before it won (three did once, on valid_seen), and most of the base model's lost ones did."""
    won = cut_won = base = cut_base = 0
    for path in sorted({p.parent / "episodes.jsonl" for p in (ROOT / "benchmarks" / "runs").rglob("episodes.jsonl*")}):
        for rec in read_jsonl(path):
            if rec.get("policy") != "llm" or not rec.get("trajectory"):
                continue
            steps = [Step(**s) for s in rec["trajectory"]["steps"]]
            looped = any(loop_period(steps[:n], 4) for n in range(4, len(steps)))
            if rec["won"]:
                won, cut_won = won + 1, cut_won + looped
            elif not rec.get("adapter") and rec.get("model") == "smollm2-135m":
                base, cut_base = base + 1, cut_base + looped
    assert won > 2000 and cut_won == 0
    assert base > 500 and cut_base > base / 2


@pytest.mark.parametrize("actions", ["free", pytest.param("score", marks=pytest.mark.slow)])
def test_the_prefix_store_changes_no_record(duomem_home: Path, smollm2: str, tmp_path: Path, actions: str):
    """Games of pick, clean, pick in one llama.cpp worker: with the run's prefix store the third game starts from
    the first game's stored prompt (pick's examples, not evaluated again), and every record is the one played
    without the store, generated or scored."""
    generate_tasks(tmp_path / "gen", n=3, seed=5, task_types=["pick", "clean"], show_progress=False)
    tasks = load_tasks("train", tmp_path / "gen")
    assert [t.task_type for t in tasks] == ["pick", "clean", "pick"]
    spec = RolloutSpec(model=smollm2, max_steps=3, max_new_tokens=48, action_selection=actions)
    stored = run_rollouts(spec, tasks, tmp_path / "store", "store", show_progress=False, measure_speed=False)
    assert not (tmp_path / "store" / ".prefixes").exists()  # removed when the run ends
    plain = play(spec, [(t, 0) for t in tasks])  # in this process, without the store
    by_game = {r.game_id: r for r in stored.records}
    for record in plain:
        assert by_game[record.game_id].trajectory.steps == record.trajectory.steps
    third = tasks[2].game_id
    cold = next(r for r in plain if r.game_id == third)
    assert by_game[third].cached_prompt_tokens > cold.cached_prompt_tokens + 500
