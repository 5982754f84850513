"""New kinds of task after a student shipped: SFT data that leaves task types out (their trajectories and their
memories), and a bank (a shipped student's too) that learns a new type by `duomem memory add`, on real expert
demonstrations."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from duomem.distill.dataset import build_dataset
from duomem.errors import ConfigError
from duomem.jsonl import jsonl_exists, pack_jsonl, packed_path, read_jsonl
from duomem.memory.bank import MemoryBank
from duomem.memory.build import add_memories, build_bank, load_trajectories


@pytest.fixture(scope="module")
def demos(expert_collection: Path) -> Path:
    path = expert_collection / "demonstrations.jsonl"
    assert "heat" in {t.task_type for t in load_trajectories(path)}
    return path


def first_prompts(agent) -> dict[str, str]:
    """The first user turn ``agent`` writes for a real heat game and a real pick game of valid_seen, by type."""
    from duomem.agent.episode import EpisodeState
    from duomem.envs.alfworld import AlfworldEnv
    from duomem.envs.alfworld_data import load_tasks

    tasks = load_tasks("valid_seen")
    env = AlfworldEnv(expert=False)
    try:
        firsts = {}
        for kind in ("heat", "pick"):
            task = next(t for t in tasks if t.task_type == kind)
            state = EpisodeState(task, "llm", "smollm2-135m", 0, 0, 5)
            state.begin(env.reset(task, seed=0), 0.0)
            agent.start(state)
            firsts[kind] = state.first_user
    finally:
        env.close()
    return firsts


def test_sft_data_leaves_a_type_and_its_memories_out(demos: Path, tmp_path: Path):
    bank = build_bank(demos, tmp_path / "bank", "plan", fmt="both", embedder="bm25")
    assert "heat" in bank.manifest["per_type"]
    heat_ids = {e.id for e in bank.entries if e.task_type == "heat"}
    meta = build_dataset(demos, tmp_path / "sft", memory=str(tmp_path / "bank"), top_k=2, exclude="game",
                         leave_out_types=["heat"])
    rows = read_jsonl(tmp_path / "sft" / "train.jsonl")
    assert rows and "heat" not in {r["task_type"] for r in rows} and "heat" not in meta["per_type"]
    assert meta["left_out_types"] == ["heat"] and meta["left_out_type_trajectories"] >= 1
    assert not heat_ids & {m for r in rows for m in r["memory_ids"]}  # never shown a memory of the new type
    with pytest.raises(ConfigError, match="unknown task types"):
        build_dataset(demos, tmp_path / "bad", leave_out_types=["bake"])


def test_memory_add_teaches_a_bank_a_new_type(demos: Path, tmp_path: Path):
    without = tmp_path / "without.jsonl"
    without.write_text("".join(t.model_dump_json() + "\n" for t in load_trajectories(demos) if t.task_type != "heat"))
    build_bank(without, tmp_path / "bank", "plan", fmt="abstract", embedder="bm25")
    pack_jsonl(tmp_path / "bank" / "memories.jsonl")
    before = MemoryBank.load(tmp_path / "bank")
    assert "heat" not in before.manifest["per_type"]
    update = add_memories(tmp_path / "bank", demos, "plan", task_types=["heat"])
    after = MemoryBank.load(tmp_path / "bank")
    assert update["memories_added"] == after.manifest["per_type"]["heat"] >= 1
    assert len(after.entries) == len(before.entries) + update["memories_added"]
    assert after.manifest["updates"] == [update] and update["bytes_added"] > 0
    assert after.manifest["memory_format"] == "abstract" and after.manifest["retrieval"] == "bm25"
    assert packed_path(tmp_path / "bank" / "memories.jsonl").is_file() and jsonl_exists(tmp_path / "bank" / "memories.jsonl")
    heat = next(e for e in after.entries if e.task_type == "heat")
    assert after.search(heat.goal, 1)[0][0].task_type == "heat"
    again = add_memories(tmp_path / "bank", demos, "plan", task_types=["heat"])  # nothing new: nothing added
    assert again["memories_added"] == 0 and len(MemoryBank.load(tmp_path / "bank").entries) == len(after.entries)


def test_memory_add_updates_a_shipped_students_manifest(tmp_path: Path, needs_torch: None):
    from duomem.cli.main import app
    from duomem.envs.alfworld_data import load_tasks
    from duomem.envs.generate import generate_tasks
    from duomem.eval.collect import collect
    from duomem.eval.spec import RolloutSpec
    from duomem.eval.students import get_student, read_student

    generate_tasks(tmp_path / "gen", n=2, seed=11, task_types=["heat"], show_progress=False)  # games no bank saw
    collect(RolloutSpec(policy="expert"), load_tasks("train", tmp_path / "gen"), tmp_path / "teacher", samples=1,
            show_progress=False)
    demos = tmp_path / "teacher" / "demonstrations.jsonl"

    shipped = get_student("smollm2-135m-duomem")
    folder = tmp_path / shipped.name
    shutil.copytree(shipped.folder, folder)
    bank = folder / shipped.bank
    n_before = MemoryBank.load(bank).manifest["n_entries"]
    done = CliRunner().invoke(app, ["memory", "add", str(bank), "--trajectories", str(demos), "--writer", "plan",
                                    "--task-types", "heat"])
    assert done.exit_code == 0, done.output
    assert "manifest updated" in done.output
    student = read_student(folder)
    student.verify()  # the new bank matches the manifest's new hash
    assert student.bank_sha256 != shipped.bank_sha256
    manifest = json.loads((bank / "manifest.json").read_text())
    assert manifest["n_entries"] > n_before and manifest["retrieval"] == "embedding"
    assert manifest["updates"][-1]["per_type"] == {"heat": manifest["n_entries"] - n_before}


def test_an_unseen_type_is_shown_solved_examples_of_another_type(prepared: Path, smollm2_model, duomem_home: Path):
    """A type the student never learned shows solved examples of another type (pick) in place of its own (the
    other types keep theirs, and runs that name no unseen type keep their keys); the CLI refuses an unknown type in
    one line."""
    from duomem.agent.react import ReActAgent
    from duomem.eval.spec import RolloutSpec

    agent = ReActAgent(smollm2_model, shots=2, unseen_types=["heat"])
    firsts = first_prompts(agent)
    from duomem.agent.prompts import fewshot_examples, transcript

    pick_examples = [transcript(ex) for ex in fewshot_examples()["pick"][:2]]
    assert firsts["heat"].startswith("Here are 2 solved tasks of another kind.")
    assert all(ex in firsts["heat"] for ex in pick_examples)  # pick's examples, the layout kept
    assert not any(transcript(ex) in firsts["heat"] for ex in fewshot_examples()["heat"])
    assert firsts["pick"].startswith("Here are 2 solved tasks of the same kind.")
    assert all(ex in firsts["pick"] for ex in pick_examples)
    plain = RolloutSpec(model="smollm2-135m")
    assert "unseen_types" not in plain.key_fields()
    assert RolloutSpec(model="smollm2-135m", unseen_types=["heat"]).fingerprint() != plain.fingerprint()
    bad = subprocess.run([sys.executable, "-m", "duomem.cli", "eval", "--model", "smollm2-135m", "--unseen-types", "bake"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "unseen_types" in bad.stderr


def test_sft_data_can_show_another_types_examples(demos: Path, tmp_path: Path):
    """fewshot_swap: that share of trajectories is trained with another type's solved examples (the layout of an
    unseen type at play), the same trajectories for the same seed; none by default."""
    from duomem.agent.prompts import fewshot_examples, substitute_type, transcript

    def firsts(meta_out: Path) -> dict[str, str]:
        return {r["game_id"]: r["messages"][1]["content"] for r in read_jsonl(meta_out / "train.jsonl")}

    plain = build_dataset(demos, tmp_path / "plain", shots=2)
    assert "fewshot_swap" not in plain
    assert all(f.startswith("Here are 2 solved tasks of the same kind.") for f in firsts(tmp_path / "plain").values())
    meta = build_dataset(demos, tmp_path / "swap", shots=2, fewshot_swap=0.5, dropout_seed=3)
    assert meta["trajectories_with_other_examples"] == round(0.5 * meta["trajectories"]) >= 1
    rows = read_jsonl(tmp_path / "swap" / "train.jsonl")
    other = [r for r in rows if r["messages"][1]["content"].startswith("Here are 2 solved tasks of another kind.")]
    assert len(other) == meta["trajectories_with_other_examples"]
    for r in other:
        shown = fewshot_examples()[substitute_type(r["task_type"])][:2]
        assert all(transcript(ex) in r["messages"][1]["content"] for ex in shown)
    again = build_dataset(demos, tmp_path / "again", shots=2, fewshot_swap=0.5, dropout_seed=3)
    assert again["sha256"] == meta["sha256"]
    with pytest.raises(ConfigError, match="fewshot swap must be between 0 and 1"):
        build_dataset(demos, tmp_path / "bad", shots=2, fewshot_swap=1.5)


def test_a_bank_update_brings_a_new_types_solved_examples(demos: Path, tmp_path: Path, prepared: Path,
                                                           smollm2_model, duomem_home: Path):
    """``duomem memory add --transcripts`` keeps the new type's solved episodes; a run with ``examples: bank`` shows
    them as the prompt's solved examples of a type the student never learned (the packaged ones complete them),
    while types the bank keeps no episode of keep the packaged examples; a bank without episodes, or no bank, is
    one clear error."""
    from duomem.agent.prompts import fewshot_examples, transcript
    from duomem.agent.react import ReActAgent
    from duomem.cli.main import app
    from duomem.eval.spec import RolloutSpec

    without = tmp_path / "without.jsonl"
    without.write_text("".join(t.model_dump_json() + "\n" for t in load_trajectories(demos) if t.task_type != "heat"))
    build_bank(without, tmp_path / "bank", "plan", fmt="abstract", embedder="bm25")
    with pytest.raises(ConfigError, match="keeps no solved episodes"):
        MemoryBank.load(tmp_path / "bank").retriever(0, transcripts=True)
    done = CliRunner().invoke(app, ["memory", "add", str(tmp_path / "bank"), "--trajectories", str(demos),
                                    "--writer", "plan", "--task-types", "heat", "--transcripts"])
    assert done.exit_code == 0, done.output
    bank = MemoryBank.load(tmp_path / "bank")
    assert bank.manifest["updates"][-1]["transcripts"] is True
    heat_demos = [t for t in load_trajectories(demos) if t.task_type == "heat" and t.won]
    kept = {e.transcript for e in bank.entries if e.task_type == "heat"}
    assert kept == {transcript(t) for t in heat_demos}  # the episodes as a solved example shows them
    assert not any(e.transcript for e in bank.entries if e.task_type != "heat")

    agent = ReActAgent(smollm2_model, shots=1, memory=bank.retriever(0, transcripts=True), unseen_types=["heat"],
                       examples="bank")
    firsts = first_prompts(agent)
    assert firsts["heat"].startswith("Here is a solved task of the same kind.\n\n### Example 1\n")
    assert any(text in firsts["heat"] for text in kept) and "### Memories" not in firsts["heat"]
    assert firsts["pick"].startswith("Here is a solved task of the same kind.")
    assert transcript(fewshot_examples()["pick"][0]) in firsts["pick"]  # no pick episode in the bank: packaged

    plain = RolloutSpec(model="smollm2-135m", memory=str(tmp_path / "bank"))
    assert "examples" not in plain.key_fields()
    assert RolloutSpec(model="smollm2-135m", memory=str(tmp_path / "bank"), examples="bank").fingerprint() != \
        plain.fingerprint()
    bad = subprocess.run([sys.executable, "-m", "duomem.cli", "eval", "--model", "smollm2-135m", "--examples", "bank"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "need a memory bank" in bad.stderr
