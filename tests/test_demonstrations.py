"""Demonstrations: simplified expert trajectories replay to the same observations and still win."""

from __future__ import annotations

import json
from pathlib import Path

from duomem.agent.trajectory import Step, Trajectory, simplify_steps


def test_simplified_demonstrations_replay_exactly(expert_collection: Path):
    from duomem.agent.demonstrations import demonstration
    from duomem.envs.alfworld import AlfworldEnv
    from duomem.envs.alfworld_data import load_tasks
    from duomem.eval.replay import replay

    tasks = {t.game_id: t for t in load_tasks("train")}
    env = AlfworldEnv(max_steps=50, expert=False)
    checked = shortened = 0
    for line in (expert_collection / "trajectories.jsonl").read_text().splitlines():
        source = Trajectory.model_validate(json.loads(line))
        demo = demonstration(source)
        if demo is None:
            continue
        actions = [s for s in demo.steps if s.kind == "action"]
        shortened += len(actions) < len(source.actions)
        replayed = replay(env, tasks[source.game_id], [s.text for s in actions])
        assert replayed is not None and replayed.won, source.game_id
        assert [s.observation for s in replayed.steps] == [s.observation for s in actions]
        assert demo.steps[0].kind == "think" and demo.steps[0].text.startswith("To solve the task")
        checked += 1
    env.close()
    assert checked >= 6 and shortened >= 1


def test_simplify_removes_noops_and_detours():
    def steps(*texts):
        return [Step(kind="action", text=t, observation=f"after {t}") for t in texts]

    out = simplify_steps(steps("look", "go to desk 1", "go to shelf 1", "examine shelf 1", "go to desk 1",
                               "take mug 1 from desk 1", "go to shelf 1", "open drawer 1", "go to sink 1",
                               "go to shelf 1", "move mug 1 to shelf 1"))
    assert [s.text for s in out] == ["go to desk 1", "take mug 1 from desk 1", "go to shelf 1", "open drawer 1",
                                     "go to sink 1", "go to shelf 1", "move mug 1 to shelf 1"]
    assert out[0].observation == "after go to desk 1"
