"""Data preparation and the ALFWorld environment on real games."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from duomem.errors import DataError, EnvTimeout
from duomem.jsonl import read_jsonl
from tests.conftest import first_of_each_type


def test_split_counts(prepared: Path):
    from duomem.envs.alfworld_data import load_tasks

    assert len(load_tasks("train")) == 3553
    assert len(load_tasks("valid_seen")) == 140
    unseen = load_tasks("valid_unseen")
    assert len(unseen) == 134
    counts = {t: sum(x.task_type == t for x in unseen) for t in first_of_each_type(unseen)}
    assert counts == {"examine": 18, "pick": 24, "clean": 31, "cool": 21, "heat": 23, "pick_two": 17}
    assert all(t.goal and Path(t.game_file).is_file() for t in unseen)


def test_game_files_are_deterministic(prepared: Path, tmp_path: Path):
    from duomem.envs.alfworld_data import build_game_file, load_tasks

    task = load_tasks("valid_unseen")[0]
    trial = Path(task.game_file).parent
    copy = tmp_path / "trial"
    shutil.copytree(trial, copy)
    (copy / "game.tw-pddl").unlink()
    assert build_game_file(copy).read_bytes() == Path(task.game_file).read_bytes()


def test_prepare_errors(duomem_home: Path, tmp_path: Path):
    from duomem.envs.alfworld_data import load_tasks, prepare

    with pytest.raises(DataError, match="does not exist"):
        prepare(tmp_path / "missing")
    with pytest.raises(DataError, match="neither"):
        prepare(tmp_path)
    with pytest.raises(DataError, match="not prepared"):
        load_tasks("valid_unseen", tmp_path)


def test_broken_game_is_reported(prepared: Path, tmp_path: Path):
    """An official-layout folder with one corrupted game: verification names it."""
    from duomem.envs.alfworld_data import load_tasks, prepare

    tasks = load_tasks("valid_unseen")[:2]
    for t in tasks:
        src = Path(t.game_file).parent
        dst = tmp_path / "json_2.1.1" / "valid_unseen" / src.parent.name / src.name
        shutil.copytree(src, dst)
    broken = next((tmp_path / "json_2.1.1").rglob("game.tw-pddl"))
    game = json.loads(broken.read_text())
    game["pddl_problem"] = game["pddl_problem"][:200]
    broken.write_text(json.dumps(game))
    with pytest.raises(DataError, match="failed to load"):
        prepare(tmp_path, data_root=tmp_path / "out", splits=["valid_unseen"], verify="all", workers=1)


def test_expert_wins_each_task_type(prepared: Path):
    from duomem.envs.alfworld_data import load_tasks
    from duomem.eval.player import play
    from duomem.eval.spec import RolloutSpec

    tasks = load_tasks("valid_unseen")
    chosen = first_of_each_type(tasks)
    # The handcoded expert wanders on most pick_two games and needs 60-200 steps there (it wins 2 of 17 of this
    # split's pick_two games within 50); use one of those it solves within the limit.
    chosen["pick_two"] = [t for t in tasks if "SoapBar-None-GarbageCan-424" in t.game_id][-1]
    records = play(RolloutSpec(policy="expert"), [(task, 0) for task in chosen.values()])
    for (task_type, task), record in zip(chosen.items(), records, strict=True):
        assert record.won, f"expert lost {task_type} game {task.game_id}"
        assert record.trajectory.steps[-1].kind == "action" and record.expert_error is None


def test_env_observation_and_bad_action(prepared: Path):
    from duomem.envs.alfworld import AlfworldEnv
    from duomem.envs.alfworld_data import load_tasks

    env = AlfworldEnv(max_steps=3, expert=False)
    task = load_tasks("valid_unseen")[0]
    obs = env.reset(task)
    assert "Your task is to:" in obs.text and "Welcome" not in obs.text
    assert "look" in obs.admissible_commands and obs.expert_action is None
    with pytest.raises(ValueError, match="empty action"):
        env.step("  ")
    answer = env.step("dance wildly")  # not a command: the game says so, nothing breaks
    assert "Nothing happens" in answer.text
    env.step("look")
    assert env.step("look").done  # the step limit ends the episode
    env.close()


def test_step_timeout_recovers(prepared: Path, monkeypatch: pytest.MonkeyPatch):
    from duomem.envs.alfworld import AlfworldEnv
    from duomem.envs.alfworld_data import load_tasks

    env = AlfworldEnv(max_steps=10, step_timeout=1.0, expert=False)
    task = load_tasks("valid_unseen")[0]
    env.reset(task)
    monkeypatch.setattr(env._env, "step", lambda cmd: time.sleep(5))
    with pytest.raises(EnvTimeout):
        env.step("look")
    obs = env.reset(task)  # the hung engine was dropped and is reloaded
    assert obs.admissible_commands
    assert not env.step("look").done
    env.close()


@pytest.mark.parametrize("expert_fix", [True, False])
def test_a_crashing_expert_does_not_end_the_game(prepared: Path, expert_fix: bool):
    """ALFWorld's handcoded expert raises on some (generated) layouts; the played step stands and the expert's
    plan falls back to ALFWorld's default ``look``."""
    from duomem.envs.alfworld import AlfworldEnv
    from duomem.envs.alfworld_data import load_tasks

    env = AlfworldEnv(max_steps=10, expert=True, expert_fix=expert_fix)
    task = load_tasks("valid_unseen")[0]
    env.reset(task)
    wrapper = env._env
    while not hasattr(wrapper, "_handcoded_expert"):
        wrapper = wrapper._wrapped_env

    def broken(*args, **kwargs):
        raise IndexError("Cannot choose from an empty sequence")

    wrapper._handcoded_expert.act = broken
    obs = env.step("look")
    assert obs.expert_action == "look" and not obs.done and obs.admissible_commands
    assert obs.expert_error == "IndexError: Cannot choose from an empty sequence"  # it reaches the record
    env.close()


def test_games_play_exactly_as_in_the_committed_expert_records(prepared: Path, tmp_path: Path):
    """The engine as duomem runs it (TextWorld's text templates parsed once per process) writes every
    observation exactly as when the published expert row was played: one game of each type, step by step."""
    from duomem.envs.alfworld_data import load_tasks
    from duomem.eval.runner import run_rollouts
    from duomem.eval.spec import RolloutSpec

    committed = Path(__file__).resolve().parents[1] / "benchmarks" / "runs" / "expert-valid_unseen"
    want = {r["game_id"]: r for r in read_jsonl(committed / "episodes.jsonl")}
    tasks = list(first_of_each_type(load_tasks("valid_unseen")).values())
    spec = RolloutSpec.model_validate(json.loads((committed / "run.json").read_text())["spec"])
    result = run_rollouts(spec, tasks, tmp_path / "run", name="replay", show_progress=False)
    for record in result.records:
        old = want[record.game_id]["trajectory"]
        assert record.trajectory.initial_observation == old["initial_observation"]
        assert [(s.text, s.observation) for s in record.trajectory.steps] == \
            [(s["text"], s["observation"]) for s in old["steps"]]
        assert record.won == want[record.game_id]["won"]
