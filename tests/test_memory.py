"""Procedural memory: banks from real trajectories with a real writer, retrieval, leakage guard, damage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from duomem.envs.base import TaskSpec
from duomem.errors import ConfigError, DataError

HELD_OUT = {  # task descriptions of valid_unseen games (not in the bank's train tasks)
    "clean": "put a clean bowl in cabinet",
    "heat": "put a hot apple in garbagecan",
    "cool": "put a cool potato in microwave",
    "examine": "examine the mug with the desklamp",
    "pick_two": "find two soapbar and put them in garbagecan",
}


@pytest.fixture(scope="module")
def bank(expert_collection: Path, smollm2: str, needs_torch, tmp_path_factory) -> Path:
    from duomem.llm import load_chat_model
    from duomem.memory.build import build_bank

    out = tmp_path_factory.mktemp("bank")
    writer = load_chat_model(smollm2, threads=2, n_ctx=4096)
    build_bank(expert_collection / "demonstrations.jsonl", out, writer, fmt="both", embedder="minilm")
    writer.close()
    return out


def test_bank_contents(bank: Path, expert_collection: Path):
    from duomem.memory.bank import MemoryBank

    b = MemoryBank.load(bank)
    demos = [json.loads(line) for line in (expert_collection / "demonstrations.jsonl").read_text().splitlines()]
    assert len(b.entries) == len({d["game_id"] for d in demos}) >= 6
    m = b.manifest
    assert m["retrieval"] == "embedding" and m["embedder"] == "minilm" and m["dim"] == 384
    assert m["writers"] == ["smollm2-135m"] and m["source_policies"] == ["expert"] and m["source_splits"] == ["train"]
    assert 0 < m["size_bytes"] < 1_000_000
    for e in b.entries:
        assert e.script and e.actions and e.won and e.completion_tokens > 0 and e.prompt_tokens > 0
        assert e.source_trajectory_ids and e.source_game_ids
        assert not any(ch.isdigit() for ch in e.script.split("\n", 1)[0][3:])  # numbers of instances removed
        text = e.text("both")
        assert text.startswith("Task: ") and "Reference actions:" in text


def test_same_type_retrieval_keeps_the_procedure(bank: Path):
    """``similarity`` (the paper) ranks the whole bank by description similarity, which can hand an examine task a
    pick-two memory about the same object; ``same_type`` keeps that ranking but only the task type's memories."""
    from duomem.memory.bank import MemoryBank

    b = MemoryBank.load(bank)
    by_id = {e.id: e for e in b.entries}
    types = {e.task_type for e in b.entries}
    for task_type, description in HELD_OUT.items():
        task = TaskSpec(game_id="valid_unseen/held-out", split="valid_unseen", task_type=task_type, game_file="",
                        goal=description)
        ranking = [mid for mid, _ in b.retriever(top_k=len(b.entries)).retrieve_for(task)]
        assert len(ranking) == len(b.entries)
        typed = [mid for mid, _ in b.retriever(top_k=2, retrieval="same_type").retrieve_for(task)]
        if task_type in types:
            assert typed == [m for m in ranking if by_id[m].task_type == task_type][:2]
        else:
            assert typed == ranking[:2]  # no memory of that type: the whole bank
    with pytest.raises(ConfigError, match="unknown retrieval"):
        b.retriever(top_k=2, retrieval="nearest")  # type: ignore[arg-type]


def test_leakage_guard(bank: Path):
    from duomem.memory.bank import MemoryBank

    b = MemoryBank.load(bank)
    entry = b.entries[0]
    own = TaskSpec(game_id=entry.source_game_ids[0], split="train", task_type=entry.task_type, game_file="",
                   goal=entry.goal)
    retrieved = b.retriever(top_k=len(b.entries)).retrieve_for(own)
    assert entry.id not in [mid for mid, _ in retrieved]
    assert len(retrieved) == len(b.entries) - 1
    assert b.search(entry.goal, k=1)[0][0].id == entry.id  # without the guard it would come first


def test_damaged_banks_give_clear_errors(bank: Path, tmp_path: Path):
    import shutil

    from duomem.memory.bank import MemoryBank

    for damage in ("truncate_embeddings", "bad_line", "count", "missing"):
        copy = tmp_path / damage
        shutil.copytree(bank, copy)
        if damage == "truncate_embeddings":
            np.save(copy / "embeddings.npy", np.load(copy / "embeddings.npy")[:-1])
        elif damage == "bad_line":
            with (copy / "memories.jsonl").open("a") as fh:
                fh.write('{"id": 3}\n')
        elif damage == "count":
            m = json.loads((copy / "manifest.json").read_text())
            m["n_entries"] += 5
            (copy / "manifest.json").write_text(json.dumps(m))
        else:
            (copy / "memories.jsonl").unlink()
        with pytest.raises(DataError, match=r"corrupted|not a memory bank"):
            MemoryBank.load(copy)


def test_bm25_bank_without_writer(expert_collection: Path, tmp_path: Path):
    from duomem.memory.bank import MemoryBank
    from duomem.memory.build import build_bank

    b = build_bank(expert_collection / "demonstrations.jsonl", tmp_path, None, fmt="trajectory", embedder="bm25")
    assert b.manifest["retrieval"] == "bm25" and not (tmp_path / "embeddings.npy").exists()
    loaded = MemoryBank.load(tmp_path)
    hit = loaded.search(loaded.entries[-1].goal, k=1)[0][0]
    assert hit.id == loaded.entries[-1].id and not hit.script


def test_self_memory_includes_failures(tmp_path: Path):
    from duomem.agent.trajectory import Step, Trajectory
    from duomem.memory.build import select_trajectories

    def traj(game, won, n, sample=0):
        return Trajectory(game_id=game, split="train", task_type="pick", goal="g", initial_observation="o",
                          policy="llm", model="m", won=won, sample=sample,
                          steps=[Step(kind="action", text=f"go to desk {i}", observation="x") for i in range(n)])

    trajs = [traj("a", False, 5), traj("a", True, 7, 1), traj("a", True, 3, 2), traj("b", False, 4)]
    assert [t.sample for t in select_trajectories(trajs, include_failures=False)] == [2]
    chosen = select_trajectories(trajs, include_failures=True)
    assert [(t.game_id, t.won) for t in chosen] == [("a", True), ("b", False)]


def test_query_embeddings_are_cached_bit_for_bit(needs_torch, tmp_path: Path):
    """A text embedded once is read back from the on-disk cache, exactly, by a fresh embedder that never loads the
    model (the GPU machine plays memory rows with the cache alone)."""
    from duomem.memory.embed import CachedEmbedder, SentenceTransformerEmbedder

    texts = list(HELD_OUT.values())
    first = CachedEmbedder("minilm", tmp_path)
    vectors = first.embed(texts + texts[:1])
    assert vectors.shape == (len(texts) + 1, 384) and np.array_equal(vectors[0], vectors[-1])
    assert np.array_equal(vectors[:-1], SentenceTransformerEmbedder("minilm").embed(texts))
    again = CachedEmbedder("minilm", tmp_path)
    assert np.array_equal(again.embed(texts[::-1]), vectors[:-1][::-1]) and again._model is None
    assert len((tmp_path / "minilm.jsonl").read_text().splitlines()) == len(texts)
    with pytest.raises(Exception, match="unknown embedder"):
        CachedEmbedder("nope", tmp_path)
