"""The offline task generator: determinism, file schema, valid rooms, expert-solvable games, scene splits, errors."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from duomem.envs.base import TASK_TYPES, TaskSpec
from duomem.errors import ConfigError


def _isolate(mp: pytest.MonkeyPatch, factory: pytest.TempPathFactory) -> None:
    """A temporary DUOMEM_HOME (and ALFWorld cache: importing alfworld creates one) before alfworld is imported."""
    home = factory.getbasetemp() / "duomem_home"
    mp.setenv("DUOMEM_HOME", str(home))
    mp.setenv("ALFWORLD_DATA", str(home / "alfworld-cache"))
    pytest.importorskip("alfworld")


@pytest.fixture(autouse=True)
def _home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    _isolate(monkeypatch, tmp_path_factory)


@pytest.fixture(scope="module")
def six(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One task of each type, unverified (fast)."""
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, tmp_path_factory)
        from duomem.envs.generate import generate_tasks

        out = tmp_path_factory.mktemp("six")
        generate_tasks(out, n=6, seed=0, verify="none", show_progress=False)
        yield out


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _rows(root: Path, split: str = "train") -> list[TaskSpec]:
    from duomem.envs.alfworld_data import load_tasks

    return load_tasks(split, root)


# --- a tiny reader for the problems we write ------------------------------------------------------------------


def _parse(problem: str) -> dict:
    declared = dict(re.findall(r"^\s*(\S+) - (object|receptacle|location|agent|otype|rtype)$", problem, re.M))
    init = problem.split("(:init", 1)[1].split("(:goal", 1)[0]
    facts: dict[str, list[tuple[str, ...]]] = {}
    for name, args in re.findall(r"^\s*\((\w+) ([^()]*)\)$", init, re.M):
        facts.setdefault(name, []).append(tuple(args.split()))
    otype = {o: t.removesuffix("Type") for o, t in facts.get("objectType", [])}
    rtype = {r: t.removesuffix("Type") for r, t in facts.get("receptacleType", [])}
    return {"declared": declared, "facts": facts, "otype": otype, "rtype": rtype}


def _demangle(name: str) -> str:
    for word, char in (("_minus_", "-"), ("_plus_", "+"), ("_dot_", "."), ("_bar_", "|")):
        name = name.replace(word, char)
    return name


# --- tests ----------------------------------------------------------------------------------------------------


def test_same_seed_same_files_other_seed_other_files(six: Path, tmp_path: Path):
    from duomem.envs.generate import generate_tasks

    again = tmp_path / "again"
    generate_tasks(again, n=6, seed=0, verify="none", show_progress=False)
    a, b = _files(six / "json_2.1.1"), _files(again / "json_2.1.1")
    assert a and a == b
    assert (six / "generation.json").read_bytes() == (again / "generation.json").read_bytes()
    assert [r.game_id for r in _rows(six)] == [r.game_id for r in _rows(again)]
    # rerunning into the same folder replaces it with the same bytes
    generate_tasks(again, n=6, seed=0, verify="none", show_progress=False)
    assert _files(again / "json_2.1.1") == b
    other = tmp_path / "other"
    generate_tasks(other, n=6, seed=1, verify="none", show_progress=False)
    assert _files(other / "json_2.1.1") != a


def test_worker_processes_write_the_same_files(six: Path, tmp_path: Path):
    from duomem.envs.generate import generate_tasks

    generate_tasks(tmp_path / "pool", n=6, seed=0, verify="none", workers=2, show_progress=False)
    assert _files(tmp_path / "pool" / "json_2.1.1") == _files(six / "json_2.1.1")


def test_every_type_once_with_schema(six: Path):
    from duomem.envs.alfworld_data import TASK_TYPE_SHORT, goal_of

    rows = _rows(six)
    assert [r.task_type for r in rows] == list(TASK_TYPES)  # round-robin, in TASK_TYPES order
    summary = json.loads((six / "generation.json").read_text())
    assert summary["seed"] == 0 and summary["splits"]["train"]["per_type"] == {t: 1 for t in TASK_TYPES}
    assert summary["splits"]["train"]["generated"] == 6 and summary["rejected"] == 0
    assert "test" not in summary["splits"]
    for row in rows:
        game = Path(row.game_file)
        assert row.source == "generated" and row.split == "train" and game.is_absolute() and game.is_file()
        assert row.game_id == f"train/{game.parent.parent.name}/{game.parent.name}"
        traj = json.loads((game.parent / "traj_data.json").read_text())
        assert list(traj) == ["task_id", "task_type", "pddl_params", "scene", "turk_annotations"]
        assert TASK_TYPE_SHORT[traj["task_type"]] == row.task_type
        assert traj["task_id"] == game.parent.name
        p = traj["pddl_params"]
        assert set(p) == {"object_target", "parent_target", "toggle_target", "mrecep_target", "object_sliced"}
        assert p["mrecep_target"] == "" and p["object_sliced"] is False
        assert (p["toggle_target"] == "DeskLamp") == (row.task_type == "examine")
        assert (p["parent_target"] == "") == (row.task_type == "examine")
        assert traj["scene"] == {"floor_plan": f"FloorPlan{traj['scene']['scene_num']}",
                                 "scene_num": traj["scene"]["scene_num"]}
        anns = traj["turk_annotations"]["anns"]
        assert anns and all(isinstance(a["task_desc"], str) and a["task_desc"] for a in anns)
        assert "movable" not in row.game_file and "Sliced" not in row.game_file
        folder = f"{traj['task_type']}-{p['object_target']}-None-{p['parent_target'] or p['toggle_target']}-" \
                 f"{traj['scene']['scene_num']}"
        assert game.parent.parent.name == folder
        assert row.goal == goal_of(game) and p["object_target"].lower() in row.goal
        assert row.params["object"] == p["object_target"].lower() and row.params["sliced"] == "false"
        game_json = json.loads(game.read_text())
        assert game_json["solvable"] is True
        assert game_json["pddl_problem"] == (game.parent / "initial_state.pddl").read_text()


def test_placements_respect_alfred_tables(six: Path, tmp_path: Path):
    from duomem.envs.generate import LAMP_RECEPTACLES, generate_tasks, layouts_dir, tables

    generate_tasks(tmp_path / "more", n=12, seed=7, verify="none", show_progress=False)
    t = tables()
    trials = [Path(r.game_file).parent for r in _rows(six) + _rows(tmp_path / "more")]
    for trial in trials:
        traj = json.loads((trial / "traj_data.json").read_text())
        kind, scene = traj["task_type"], traj["scene"]["scene_num"]
        obj, parent = traj["pddl_params"]["object_target"], traj["pddl_params"]["parent_target"]
        plan = layouts_dir() / f"FloorPlan{scene}"
        plan_types = set(json.loads(Path(f"{plan}-objects.json").read_text()))
        plan_receps = set(json.loads(Path(f"{plan}-openable.json").read_text()))
        pddl = _parse((trial / "initial_state.pddl").read_text())
        facts, otype, rtype = pddl["facts"], pddl["otype"], pddl["rtype"]
        # rooms only hold what their floor plan has; layout receptacles keep their ids
        assert set(otype.values()) <= plan_types and set(rtype.values()) <= plan_types
        fixed = {r for r in plan_receps if r.split("|")[4 if r.count("|") == 4 else 0] in t.receptacle_types}
        assert fixed <= {_demangle(r) for r in rtype}
        # every object in a receptacle is allowed there
        pickupable = {x[0] for x in facts["pickupable"]}
        inside = dict(facts["inReceptacle"])
        for o, r in inside.items():
            if o in pickupable:
                assert otype[o] in t.can_contain[rtype[r]], (trial, otype[o], rtype[r])
            else:
                assert otype[o] == "DeskLamp" and rtype[r] in LAMP_RECEPTACLES
        assert {otype[o] for o in pickupable} <= t.pickupable
        for r, o in facts["canContain"]:
            assert o.removesuffix("Type") in t.can_contain[r.removesuffix("Type")]
        # objects in a receptacle stand at its location; one agent; openable = ALFRED's openable classes
        rloc = dict(facts["receptacleAtLocation"])
        oloc = dict(facts["objectAtLocation"])
        assert set(oloc) == set(otype) and set(rloc) == set(rtype)
        assert all(oloc[o] == rloc[r] for o, r in inside.items())
        assert len(facts["atLocation"]) == 1 and facts["atLocation"][0][0] == "agent1"
        assert {r for (r,) in facts.get("openable", [])} == {r for r, ty in rtype.items() if ty in t.openable}
        # the task's needs: targets present, never already in place, appliances and lamps there
        targets = [o for o, ty in otype.items() if ty == obj]
        assert len(targets) >= (2 if kind == "pick_two_obj_and_place" else 1)
        assert all(o in inside and o in pickupable for o in targets)
        if parent:
            assert parent in rtype.values() and obj in t.can_contain[parent]
            assert not any(rtype[inside[o]] == parent for o in targets)
        need = {"pick_clean_then_place_in_recep": "SinkBasin", "pick_heat_then_place_in_recep": "Microwave",
                "pick_cool_then_place_in_recep": "Fridge"}.get(kind)
        if need:
            assert need in rtype.values()
            affordance = {"SinkBasin": "cleanable", "Microwave": "heatable", "Fridge": "coolable"}[need]
            assert set(targets) <= {o for (o,) in facts[affordance]}
        if kind == "look_at_obj_in_light":
            lamps = [o for o, ty in otype.items() if ty == "DeskLamp"]
            assert lamps and all(o in inside for o in lamps)
            assert set(lamps) <= {o for (o,) in facts["toggleable"]}


def test_expert_wins_one_game_of_each_type(tmp_path: Path):
    """The slow one: six games checked by ALFWorld's handcoded expert, then replayed with the same seed."""
    from duomem.envs.alfworld import AlfworldEnv
    from duomem.envs.generate import generate_tasks
    from duomem.seeds import episode_seed

    out = tmp_path / "expert"
    summary = generate_tasks(out, n=6, seed=5, verify="expert", show_progress=False)
    assert summary["splits"]["train"]["per_type"] == {t: 1 for t in TASK_TYPES}
    assert set(summary["rejections"]) <= {"expert failed"}
    env = AlfworldEnv(max_steps=50, expert=True)
    try:
        for task in _rows(out):
            won, steps, error = env.expert_wins(task, seed=episode_seed(5, task.game_id, 0), max_steps=50)
            assert won, (task.task_type, task.game_id, steps, error)
    finally:
        env.close()


def test_test_scenes_are_held_out(tmp_path: Path):
    from duomem.envs.generate import all_scenes, generate_tasks

    out = tmp_path / "split"
    summary = generate_tasks(out, n=4, test_n=4, seed=3, task_types=["pick", "clean"], verify="none",
                             show_progress=False)
    train, test = summary["splits"]["train"]["scenes"], summary["splits"]["test"]["scenes"]
    assert not set(train) & set(test) and sorted(train + test) == list(all_scenes())
    assert len(test) == 24  # 20% of each room type's 30 floor plans
    for split, scenes in (("train", train), ("test", test)):
        rows = _rows(out, split)
        assert len(rows) == 4 and {r.task_type for r in rows} == {"pick", "clean"}
        for row in rows:
            traj = json.loads((Path(row.game_file).parent / "traj_data.json").read_text())
            assert traj["scene"]["scene_num"] in scenes
            assert row.game_id.startswith(f"{split}/") and f"/json_2.1.1/{split}/" in row.game_file
    explicit = generate_tasks(tmp_path / "explicit", n=1, test_n=1, scenes=[1, 2, 3], test_scenes=[4],
                              task_types=["heat"], verify="none", show_progress=False)
    assert explicit["splits"]["train"]["scenes"] == [1, 2, 3] and explicit["splits"]["test"]["scenes"] == [4]
    held = generate_tasks(tmp_path / "held", n=1, test_n=1, scenes=list(range(1, 11)), task_types=["cool"],
                          verify="none", show_progress=False)
    assert len(held["splits"]["test"]["scenes"]) == 2 and len(held["splits"]["train"]["scenes"]) == 8


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"n": 0}, ConfigError, "--n must be at least 1"),
    ({"n": 1, "test_n": -1}, ConfigError, "--test-n"),
    ({"n": 1, "task_types": ["juggle"]}, ConfigError, "unknown task type 'juggle'"),
    ({"n": 1, "scenes": [1, 999]}, ConfigError, "unknown scene 999"),
    ({"n": 1, "test_n": 1, "scenes": [1, 2], "test_scenes": [2, 3]}, ConfigError, "overlap train scenes \\(2\\)"),
    ({"n": 1, "test_n": 1, "scenes": [1]}, ConfigError, "not enough"),
    ({"n": 1, "scenes": [301], "task_types": ["heat"]}, ConfigError, "no train scene allows heat"),
    ({"n": 1, "verify": "maybe"}, ConfigError, "--verify must be one of"),
    ({"n": 1, "workers": 0}, ConfigError, "--workers"),
])
def test_invalid_arguments(tmp_path: Path, kwargs: dict, error: type[Exception], match: str):
    from duomem.envs.generate import generate_tasks

    with pytest.raises(error, match=match):
        generate_tasks(tmp_path / "out", verify=kwargs.pop("verify", "none"), show_progress=False, **kwargs)
    assert not (tmp_path / "out").exists()


def test_foreign_data_is_not_overwritten(tmp_path: Path):
    from duomem.envs.generate import generate_tasks

    (tmp_path / "json_2.1.1" / "train" / "x").mkdir(parents=True)
    with pytest.raises(ConfigError, match="did not write"):
        generate_tasks(tmp_path, n=1, verify="none", show_progress=False)
    assert (tmp_path / "json_2.1.1" / "train" / "x").is_dir()


def test_cli_generate(tmp_path: Path):
    from typer.testing import CliRunner

    from duomem.cli.data import app

    result = CliRunner().invoke(app, ["generate", "--out", str(tmp_path / "cli"), "--n", "2", "--seed", "4",
                                      "--task-types", "pick,examine", "--test-n", "1", "--test-scenes", "301-302",
                                      "--verify", "none"])
    assert result.exit_code == 0, result.output
    assert "train" in result.output and "test" in result.output and "no sample was rejected" in result.output
    assert [r.task_type for r in _rows(tmp_path / "cli")] == ["pick", "examine"]
    assert len(_rows(tmp_path / "cli", "test")) == 1
    bad = CliRunner().invoke(app, ["generate", "--out", str(tmp_path / "bad"), "--n", "1", "--scenes", "a-b"])
    assert isinstance(bad.exception, ConfigError)
