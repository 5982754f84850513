"""The fast tier's end-to-end check (``pytest -m fast``, run first by CI): a freshly generated game, won by the
expert, played by a shipped student on the real packaged model, with its record written. No ALFWorld download."""

from __future__ import annotations

from pathlib import Path

import pytest

from duomem.envs.alfworld_data import load_tasks
from duomem.envs.generate import generate_tasks
from duomem.eval.runner import load_records, run_rollouts
from duomem.eval.spec import RolloutSpec
from duomem.eval.students import get_student

pytestmark = pytest.mark.fast


def test_a_shipped_student_plays_a_generated_game(duomem_home: Path, smollm2: str, tmp_path: Path):
    generate_tasks(tmp_path / "gen", n=1, seed=3, task_types=["pick"], show_progress=False)
    tasks = load_tasks("train", tmp_path / "gen")
    assert len(tasks) == 1 and tasks[0].task_type == "pick"
    expert = run_rollouts(RolloutSpec(policy="expert"), tasks, tmp_path / "expert", "expert", show_progress=False,
                          measure_speed=False)
    assert [r.won for r in expert.records] == [True]
    spec = RolloutSpec(**{**get_student("smollm2-135m-lora").spec_fields(), "max_steps": 3})
    run_rollouts(spec, tasks, tmp_path / "student", "student", show_progress=False, measure_speed=False)
    [record] = load_records(tmp_path / "student")
    assert record.game_id == tasks[0].game_id and 1 <= record.steps <= 3
    assert record.trajectory.steps and record.trajectory.steps[0].text  # the student wrote something and it was played
