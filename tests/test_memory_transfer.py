"""Memories that transfer (issue 14), on real ALFWorld games and real expert demonstrations: training retrieval
that excludes the task and the room, memory dropout, abstract memories, the plan writer, the writer prompt's copy
check, bank provenance and few-shot examples held out of every task set."""

from __future__ import annotations

import json
import re
import shutil
from collections import defaultdict
from pathlib import Path

import pytest

from duomem.errors import ConfigError
from duomem.eval.spec import RolloutSpec
from duomem.llm.base import Completion

HEAT_EGG = "train/pick_heat_then_place_in_recep-Egg-None-CounterTop-30/trial_T20190909_130401_115312"


def _demos(path: Path):
    from duomem.memory.build import load_trajectories

    return load_trajectories(path / "demonstrations.jsonl")


@pytest.fixture(scope="module")
def room_games(prepared: Path, tmp_path_factory):
    """The expert's demonstrations of four train games: ``a``, ``a2`` (another trial of a's task), ``b`` (another
    task in a's floor plan) and ``c`` (a task of a's type in another floor plan)."""
    from duomem.envs.alfworld_data import load_tasks
    from duomem.eval.collect import collect
    from duomem.memory.provenance import floor_plan_of, task_folder_of

    tasks = load_tasks("train")
    by_folder, folders_of_plan = defaultdict(list), defaultdict(set)
    for t in tasks:
        by_folder[task_folder_of(t.game_id)].append(t)
        folders_of_plan[floor_plan_of(t.game_id)].add(task_folder_of(t.game_id))
    for folder in sorted(by_folder):
        trials = by_folder[folder]
        a = trials[0]
        plan = floor_plan_of(a.game_id)
        others = sorted(f for f in folders_of_plan[plan] if f != folder and by_folder[f][0].task_type != "pick_two")
        if a.task_type in ("pick", "heat") and len(trials) >= 2 and others:
            b = by_folder[others[0]][0]
            c = next(t for t in tasks if t.task_type == a.task_type and floor_plan_of(t.game_id) != plan
                     and t.params["object"] != a.params["object"])  # another goal: never merged with a's memory
            chosen = {"a": a, "a2": trials[1], "b": b, "c": c}
            break
    out = tmp_path_factory.mktemp("room_games")
    collect(RolloutSpec(policy="expert"), list(chosen.values()), out, samples=1, show_progress=False)
    assert {d.game_id for d in _demos(out)} == {t.game_id for t in chosen.values()}  # the expert won all four
    return out, chosen


@pytest.fixture(scope="module")
def plan_bank(room_games, tmp_path_factory) -> Path:
    from duomem.memory.build import build_bank

    out = tmp_path_factory.mktemp("plan_bank")
    build_bank(room_games[0] / "demonstrations.jsonl", out, "plan", fmt="both", embedder="bm25")
    return out


def test_training_retrieval_excludes_the_task_and_the_floor_plan(room_games, plan_bank: Path, tmp_path: Path):
    from duomem.distill.dataset import build_dataset
    from duomem.memory.bank import MemoryBank
    from duomem.memory.provenance import floor_plan_of, task_folder_of

    path, g = room_games
    bank = MemoryBank.load(plan_bank)
    source = {e.id: e.source_game_ids[0] for e in bank.entries}
    a = g["a"]
    assert task_folder_of(g["a2"].game_id) == task_folder_of(a.game_id) != task_folder_of(g["b"].game_id)
    assert floor_plan_of(g["b"].game_id) == floor_plan_of(a.game_id) != floor_plan_of(g["c"].game_id)

    def retrieved(exclude: str) -> set[str]:
        return {source[mid] for mid, _ in bank.retriever(top_k=4, exclude=exclude).retrieve_for(a)}  # type: ignore[arg-type]

    assert retrieved("game") == {g["a2"].game_id, g["b"].game_id, g["c"].game_id}
    assert retrieved("task") == {g["b"].game_id, g["c"].game_id}
    assert retrieved("floor_plan") == {g["c"].game_id}
    with pytest.raises(ConfigError, match="unknown exclusion"):
        bank.retriever(top_k=2, exclude="room")  # type: ignore[arg-type]

    # SFT prompts: the floor plan is excluded by default; the old behaviour (own game only) on request
    for exclude, allowed in (("floor_plan", {g["c"].game_id}), ("game", {t.game_id for t in g.values()} - {a.game_id})):
        meta = build_dataset(path / "demonstrations.jsonl", tmp_path / exclude, shots=0, memory=str(plan_bank),
                             top_k=3, exclude=exclude)
        assert meta["exclude"] == exclude and meta["memory_format"] == "both"
        rows = [json.loads(line) for line in (tmp_path / exclude / "train.jsonl").read_text().splitlines()]
        row = next(r for r in rows if r["game_id"] == a.game_id)
        assert {source[m] for m in row["memory_ids"]} == allowed
        for r in rows:  # no example retrieves a memory of its own room
            if exclude == "floor_plan":
                assert all(floor_plan_of(source[m]) != floor_plan_of(r["game_id"]) for m in r["memory_ids"])


def test_memory_dropout_share_and_determinism(room_games, plan_bank: Path, tmp_path: Path):
    from duomem.agent.prompts import MEMORY_OPEN
    from duomem.distill.dataset import build_dataset, dropped_trajectories

    ids = [f"train/t{i}#expert:-:0" for i in range(200)]
    dropped = dropped_trajectories(ids, 0.3, seed=7)
    assert len(dropped) == 60 and dropped <= set(ids)
    assert dropped_trajectories(list(reversed(ids)), 0.3, seed=7) == dropped  # order does not matter
    assert dropped_trajectories(ids, 0.3, seed=8) != dropped
    assert dropped_trajectories(ids, 0.0) == set() and dropped_trajectories(ids, 1.0) == set(ids)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        dropped_trajectories(ids, 1.5)

    path = room_games[0] / "demonstrations.jsonl"
    metas = [build_dataset(path, tmp_path / f"run{i}", shots=2, memory=str(plan_bank), top_k=2, memory_dropout=0.5,
                           dropout_seed=3) for i in range(2)]
    assert metas[0]["sha256"] == metas[1]["sha256"] and metas[0]["trajectories_without_memory"] == 2
    rows = [json.loads(line) for line in (tmp_path / "run0" / "train.jsonl").read_text().splitlines()]
    without = [r for r in rows if MEMORY_OPEN not in r["messages"][1]["content"]]
    assert len(without) == 2 and all(r["memory_dropped"] and not r["memory_ids"] for r in without)
    assert all(r["memory_ids"] for r in rows if not r["memory_dropped"])
    none = build_dataset(path, tmp_path / "none", shots=0, memory=str(plan_bank), top_k=2, memory_dropout=1.0)
    assert none["trajectories_without_memory"] == none["trajectories"]


def _digits_besides_step_numbers(text: str) -> bool:
    return any(ch.isdigit() for line in text.splitlines() for ch in re.sub(r"^\d+\. ", "", line))


def _room_receptacle_types(initial_observation: str) -> set[str]:
    head = initial_observation.split("Your task is to:")[0]
    return set(re.findall(r"\b([a-z]+) \d+\b", head))


def test_abstraction_removes_instance_numbers_and_room_receptacles(expert_collection: Path, room_games):
    from duomem.agent.prompts import fewshot_examples
    from duomem.memory.abstract import abstract_actions, abstract_script, kept_types

    fewshot = [t for ts in fewshot_examples("heldout").values() for t in ts]  # expert demonstrations on generated games
    demos = _demos(expert_collection) + _demos(room_games[0]) + fewshot
    assert len({d.task_type for d in demos}) == 6
    for demo in demos:
        lines = abstract_actions(demo.actions, demo.params)
        assert lines and not any(ch.isdigit() for line in lines for ch in line), lines
        keep = kept_types(demo.actions, demo.params)
        assert demo.params["object"] and all(t in keep for t in (demo.params["receptacle"], demo.params["toggle"])
                                             if t)
        words = {w for line in lines for w in re.findall(r"[a-z]+", line)}
        room = _room_receptacle_types(demo.initial_observation)
        assert (words & room) <= keep, (words & room) - keep
        assert f"take {demo.params['object']} from the place where you find the {demo.params['object']}" in lines
        # without the task's arguments (a bank written before they were recorded): the same abstraction
        assert abstract_actions(demo.actions) == lines
    script = "1. A mug is usually on a shelf or desk.\n2. go to shelf 2 and take the mug from shelf.\n3. go to desk"
    actions = ["go to shelf 1", "go to shelf 2", "take mug 1 from shelf 2", "go to desk 1", "move mug 1 to desk 1"]
    assert abstract_script(script, actions, {"object": "mug", "receptacle": "desk"}) == (
        "1. A mug is usually on a shelf or desk.\n2. go to the place where you find the mug and take the mug from "
        "the place where you find the mug.\n3. go to desk")


def test_plan_writer_on_a_real_expert_demonstration(prepared: Path, tmp_path: Path):
    from duomem.agent.demonstrations import demonstration
    from duomem.envs.alfworld_data import load_tasks
    from duomem.eval.player import play
    from duomem.memory.writer import PlanWriter, plan_script

    task = next(t for t in load_tasks("train") if t.game_id == HEAT_EGG)
    (record,) = play(RolloutSpec(policy="expert"), [(task, 0)])
    demo = demonstration(record.trajectory)
    assert demo is not None and demo.actions[-1].startswith("move egg ")
    assert plan_script(demo) == (
        "1. Find the egg: go to each place where an egg may be (open it if it is closed) until you see one, then "
        "take egg from the place where you find the egg.\n"
        "2. Go to microwave, then heat egg with microwave.\n"
        "3. Go to countertop, then move egg to countertop.")
    first, second = PlanWriter().write(demo), PlanWriter().write(demo)
    assert first == second and first.writer == "plan" and first.actions == demo.actions
    assert first.params["object"] == "egg" and first.source_floor_plans == ["30"]
    assert first.source_task_folders == ["pick_heat_then_place_in_recep-Egg-None-CounterTop-30"]
    text = first.text("abstract")
    assert "Script:\n1. Find the egg" in text and not _digits_besides_step_numbers(text)
    assert first.text("both").endswith("Reference actions: " + "; ".join(demo.actions))
    assert "Reference actions" not in first.text("script") and "Script" not in first.text("trajectory")


class CopyingWriter:
    """A writer that copies the old prompt's example line into every other memory (as the 135M student did)."""

    name = "copier"
    context_length = 4096

    def __init__(self) -> None:
        self.calls = 0

    def complete(self, messages, max_tokens: int = 64, temperature: float = 0.0, **_kw) -> Completion:
        from duomem.memory.writer import OLD_EXAMPLE_SENTENCES

        self.calls += 1
        steps = ["go to microwave, then heat the egg with microwave.", "move the egg to countertop."]
        if self.calls % 2:
            steps.insert(0, OLD_EXAMPLE_SENTENCES[0])
        return Completion(text="\n".join(f"{i + 1}. {s}" for i, s in enumerate(steps)), prompt_tokens=10,
                          completion_tokens=5, seconds=0.0)

    def count_tokens(self, messages) -> int:
        return 0

    def close(self) -> None:
        pass


def test_writer_prompt_copy_check(room_games, tmp_path: Path):
    from duomem.memory.bank import MemoryBank
    from duomem.memory.build import build_bank
    from duomem.memory.writer import OLD_EXAMPLE_SENTENCES, MemoryWriter, is_copy, prompt_sentences

    demo = _demos(room_games[0])[0]
    prompt = MemoryWriter(CopyingWriter())._messages(demo)[1]["content"]
    assert "example" not in prompt.lower() and "potato" not in prompt
    assert not any(s in prompt for s in OLD_EXAMPLE_SENTENCES)
    assert f"the place where you find the {demo.params['object']}" in prompt
    sentences = prompt_sentences(demo)
    assert is_copy("1. " + OLD_EXAMPLE_SENTENCES[0], sentences)
    assert is_copy("A potato is usually on a countertop, diningtable or sinkbasin.", sentences)
    assert is_copy(sentences[2], sentences) and is_copy("take the <object> from <place>", sentences)
    assert not is_copy("go to microwave, then heat the egg with microwave.", sentences)
    assert not is_copy(f"A {demo.params['object']} is often on a shelf or in a drawer.", sentences)

    n = len(_demos(room_games[0]))
    strip = build_bank(room_games[0] / "demonstrations.jsonl", tmp_path / "strip", CopyingWriter(), embedder="bm25")
    assert strip.manifest["writer_copies"] == {"memories": (n + 1) // 2, "lines_removed": (n + 1) // 2,
                                               "rejected": 0}
    assert len(strip.entries) == n and not any("potato" in e.script for e in strip.entries)
    assert all(e.script.startswith("1. go to microwave") for e in strip.entries)
    reject = build_bank(room_games[0] / "demonstrations.jsonl", tmp_path / "reject", CopyingWriter(), embedder="bm25",
                        copy_policy="reject")
    assert reject.manifest["writer_copies"]["rejected"] == (n + 1) // 2 and len(reject.entries) == n // 2
    assert MemoryBank.load(tmp_path / "reject").manifest["copy_policy"] == "reject"
    with pytest.raises(ConfigError, match="copy policy"):
        build_bank(room_games[0] / "demonstrations.jsonl", tmp_path / "bad", CopyingWriter(), copy_policy="keep")


def test_fewshot_examples_are_held_out_of_every_task_set(prepared: Path, expert_collection: Path, tmp_path: Path):
    from duomem.agent.prompts import fewshot_examples
    from duomem.distill.dataset import build_dataset
    from duomem.envs.alfworld_data import load_tasks
    from duomem.memory.provenance import FEWSHOT_SCENES, floor_plan_of

    examples = [t for ts in fewshot_examples("heldout").values() for t in ts]
    assert {t: len(v) for t, v in fewshot_examples("heldout").items()} == {t: 2 for t in
                                                                  ("clean", "cool", "examine", "heat", "pick", "pick_two")}
    plans = {floor_plan_of(t.game_id) for t in examples}
    assert all(t.source == "generated" and t.won for t in examples)
    assert plans <= {str(s) for s in FEWSHOT_SCENES}
    ids = {t.game_id for t in examples}
    for split in ("train", "valid_seen", "valid_unseen"):
        tasks = load_tasks(split)
        assert not plans & {floor_plan_of(t.game_id) for t in tasks}, split
        assert not ids & {t.game_id for t in tasks}

    # a training trajectory of a shown few-shot game is left out: its prompt would hold its own answer
    leaky = tmp_path / "leaky.jsonl"
    leaky.write_text((expert_collection / "demonstrations.jsonl").read_text() + examples[0].model_dump_json() + "\n")
    meta = build_dataset(leaky, tmp_path / "sft", shots=2, fewshot="heldout")
    assert meta["left_out_fewshot"] == 1 and meta["trajectories"] == len(_demos(expert_collection))
    assert build_dataset(leaky, tmp_path / "sft0", shots=0)["trajectories"] == len(_demos(expert_collection)) + 1
    train_set = [t for ts in fewshot_examples("train").values() for t in ts]  # the committed runs' examples
    assert all(t.split == "train" for t in train_set) and len(train_set) == 12


def test_bank_provenance_overlap_and_old_banks(room_games, plan_bank: Path, prepared: Path, tmp_path: Path):
    from duomem.envs.alfworld_data import load_tasks
    from duomem.memory.bank import MemoryBank, bank_overlap
    from duomem.memory.provenance import floor_plan_of

    _, g = room_games
    bank = MemoryBank.load(plan_bank)
    m = bank.manifest
    assert m["source_splits"] == ["train"] and set(m["source_game_ids"]) == {t.game_id for t in g.values()}
    assert set(m["source_floor_plans"]) == {floor_plan_of(t.game_id) for t in g.values()}
    assert len(m["source_task_folders"]) == 3 and m["writers"] == ["plan"]
    unseen = bank_overlap(bank, load_tasks("valid_unseen"))
    assert unseen["tasks"] == 134 and unseen["games"] == unseen["task_folders"] == unseen["floor_plans"] == 0
    assert unseen["shared_splits"] == []
    same = bank_overlap(plan_bank, list(g.values()))
    assert same["games"] == 4 and same["task_folders"] == 3 and same["floor_plans"] == 2
    assert same["tasks_sharing_floor_plan"] == 4 and same["shared_splits"] == ["train"]

    # a bank written before issue 14: no provenance in the manifest or the entries, no task arguments
    old = tmp_path / "old"
    shutil.copytree(plan_bank, old)
    manifest = json.loads((old / "manifest.json").read_text())
    for key in ("source_game_ids", "source_task_folders", "source_floor_plans"):
        del manifest[key]
    (old / "manifest.json").write_text(json.dumps(manifest))
    rows = [json.loads(line) for line in (old / "memories.jsonl").read_text().splitlines()]
    for r in rows:
        for key in ("source_task_folders", "source_floor_plans", "params", "copied_lines"):
            del r[key]
    (old / "memories.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = MemoryBank.load(old)
    assert [e.source_floor_plans for e in loaded.entries] == [e.source_floor_plans for e in bank.entries]
    assert bank_overlap(loaded, list(g.values())) == same
    got = loaded.retriever(top_k=4, exclude="floor_plan").retrieve_for(g["a"])
    assert [mid for mid, _ in got] == [mid for mid, _ in bank.retriever(top_k=4, exclude="floor_plan").retrieve_for(g["a"])]
    assert loaded.retriever(top_k=1).fmt == "both" and loaded.retriever(top_k=1, memory_format="abstract").fmt == "abstract"
    for e in loaded.entries:
        assert not _digits_besides_step_numbers(e.text("abstract"))


def test_cli_plan_bank_and_dropout(room_games, tmp_path: Path):
    from typer.testing import CliRunner

    from duomem.cli.main import app

    demos = room_games[0] / "demonstrations.jsonl"
    result = CliRunner().invoke(app, ["memory", "build", "--trajectories", str(demos), "--out", str(tmp_path / "b"),
                                      "--writer", "plan", "--format", "abstract", "--embedder", "bm25"])
    assert result.exit_code == 0, result.output
    assert "4 memories" in " ".join(result.output.split())
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["writers"] == ["plan"] and manifest["memory_format"] == "abstract"
    assert manifest["writer_copies"] == {"memories": 0, "lines_removed": 0, "rejected": 0}
    result = CliRunner().invoke(app, ["memory", "search", str(tmp_path / "b"), "put a hot egg in countertop", "-k", "1"])
    assert result.exit_code == 0 and "the place where you find the" in " ".join(result.output.split())
    result = CliRunner().invoke(app, ["distill", "dataset", "--trajectories", str(demos), "--out", str(tmp_path / "d"),
                                      "--memory", str(tmp_path / "b"), "--memory-dropout", "0.25", "--shots", "0"])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "d" / "dataset.json").read_text())
    assert meta["memory_dropout"] == 0.25 and meta["trajectories_without_memory"] == 1
    assert meta["exclude"] == "floor_plan" and meta["memory_format"] == "abstract"
