"""The one rollout engine: every executor and batch size plays the same episodes; seeds; the leakage guard."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from duomem.errors import ConfigError
from duomem.eval.spec import RolloutSpec


def _actions(out: Path) -> dict[tuple[str, int], list[str]]:
    rows = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    return {(r["game_id"], r["sample"]): [s["text"] for s in r["trajectory"]["steps"]] for r in rows}


def test_expert_plays_the_same_in_process_in_workers_and_batched(prepared: Path, tmp_path: Path):
    """One loop for every executor: in this process, in two worker processes, and three games stepped together
    (games in their own processes) give identical trajectories; the exploring expert's detours come from the
    episode's own seed, so they match too."""
    from duomem.envs.alfworld_data import load_tasks
    from duomem.eval.runner import run_rollouts, select_games

    tasks = select_games(load_tasks("valid_unseen"), 3, seed=1)
    spec = RolloutSpec(policy="expert", explore=0.5, max_steps=12)
    runs = {
        "one": run_rollouts(spec, tasks, tmp_path / "one", "one", samples=2, show_progress=False),
        "workers": run_rollouts(spec, tasks, tmp_path / "workers", "w", samples=2, workers=2, show_progress=False),
        "batch": run_rollouts(spec.model_copy(update={"batch": 3}), tasks, tmp_path / "batch", "b", samples=2,
                              show_progress=False),
    }
    actions = {name: _actions(r.out_dir) for name, r in runs.items()}
    assert len(actions["one"]) == 6
    assert actions["one"] == actions["workers"] == actions["batch"]
    assert actions["one"][(tasks[0].game_id, 0)] != actions["one"][(tasks[0].game_id, 1)]  # samples differ
    for r in runs.values():
        assert r.summary["n_episodes"] == 6 and r.summary["complete"]


def test_llm_batch_sizes_agree_and_sampling_is_seeded(prepared: Path, smollm2: str, tmp_path: Path):
    """The real 135M student on llama.cpp: greedy episodes stepped two together play what one at a time plays;
    sampled play (temperature 0.8) draws each turn with the episode's per-turn seed, so a rerun repeats it.
    (Sampled runs at different batch sizes need not agree: llama.cpp's logits differ in the last bits between a
    prompt evaluated whole and one extended from the cache, which can tip a sampled token.)"""
    from duomem.envs.alfworld_data import load_tasks
    from duomem.eval.runner import run_rollouts, select_games

    tasks = select_games(load_tasks("valid_unseen"), 2, seed=2)
    spec = RolloutSpec(policy="llm", model=smollm2, shots=1, max_steps=3, n_ctx=4096, threads=2)

    def actions(s: RolloutSpec, name: str) -> dict:
        return _actions(run_rollouts(s, tasks, tmp_path / name, name, show_progress=False,
                                     measure_speed=False).out_dir)

    greedy = actions(spec, "one")
    assert greedy == actions(spec.model_copy(update={"batch": 2}), "two")
    assert all(len(v) == 3 for v in greedy.values())
    sampled = spec.model_copy(update={"temperature": 0.8, "max_steps": 2})
    assert actions(sampled, "s1") == actions(sampled, "s2")


def test_transformers_batch_matches_one_at_a_time(prepared: Path, smollm2: str, needs_torch: None,
                                                  tmp_path: Path):
    """Greedy transformers (CPU): two episodes stepped in one padded batch play what one at a time plays."""
    from duomem.envs.alfworld_data import load_tasks
    from duomem.eval.runner import run_rollouts, select_games

    tasks = select_games(load_tasks("valid_unseen"), 2, seed=3)
    spec = RolloutSpec(policy="llm", model=smollm2, backend="transformers", shots=1, max_steps=2, threads=2)
    one = run_rollouts(spec, tasks, tmp_path / "one", "one", show_progress=False)
    two = run_rollouts(spec.model_copy(update={"batch": 2}), tasks, tmp_path / "two", "two", show_progress=False)
    assert _actions(one.out_dir) == _actions(two.out_dir)
    assert json.loads((two.out_dir / "run.json").read_text())["key"]["batch"] == 2


def test_seed_sequence():
    """Episode seeds depend on run seed, game and sample; turn seeds count up from the episode seed."""
    from duomem.agent.episode import EpisodeState
    from duomem.envs.base import TaskSpec
    from duomem.seeds import episode_seed

    task = TaskSpec(game_id="valid_unseen/x/trial_1", split="valid_unseen", task_type="pick", game_file="-")
    state = EpisodeState(task, "llm", "m", sample=1, run_seed=7, max_steps=5)
    assert state.seed == episode_seed(7, task.game_id, 1) != episode_seed(7, task.game_id, 0)
    assert state.step_seed == state.seed
    state.traj.steps.append(_think())
    assert state.step_seed == state.seed + 1


def _think():
    from duomem.agent.trajectory import Step

    return Step(kind="think", text="plan", observation="OK.")


def test_a_bank_built_on_the_evaluated_split_is_refused(prepared: Path, tmp_path: Path):
    """A bank made from valid_unseen games cannot be used to evaluate on valid_unseen, other games of the split
    included: the run stops with one line before it plays anything."""
    from duomem.envs.alfworld_data import load_tasks
    from duomem.eval.collect import collect
    from duomem.eval.runner import run_rollouts
    from duomem.memory.build import build_bank

    unseen = load_tasks("valid_unseen")
    collect(RolloutSpec(policy="expert"), unseen[:2], tmp_path / "c", show_progress=False)
    bank = build_bank(tmp_path / "c" / "trajectories.jsonl", tmp_path / "bank", None, fmt="trajectory",
                      embedder="bm25")
    spec = RolloutSpec(policy="llm", model="smollm2-135m", memory=str(bank.path))
    with pytest.raises(ConfigError, match="valid_unseen"):
        run_rollouts(spec, unseen[2:4], tmp_path / "eval", "leak", show_progress=False)
    with pytest.raises(ConfigError, match="2 of the evaluated games"):
        run_rollouts(spec, unseen[:3], tmp_path / "eval", "leak", show_progress=False)
    assert not (tmp_path / "eval" / "episodes.jsonl").exists()


def test_empty_selection_is_refused(prepared: Path, tmp_path: Path):
    from duomem.envs.alfworld_data import load_tasks
    from duomem.eval.runner import run_rollouts, select_games

    with pytest.raises(ConfigError, match="at least 1"):
        select_games(load_tasks("valid_unseen"), 0)
    with pytest.raises(ConfigError, match="empty"):
        run_rollouts(RolloutSpec(policy="expert"), [], tmp_path, "none", show_progress=False)


def _duomem(*args: str) -> list[str]:
    return [sys.executable, "-m", "duomem.cli", *args]


def test_a_worker_that_cannot_load_its_model_stops_the_run_with_one_line(prepared: Path, smollm2: str,
                                                                         tmp_path: Path):
    """The model loads inside each worker process; a file llama.cpp cannot read as a LoRA adapter ends the run
    with the loader's one-line error (a worker whose start failed used to be restarted forever)."""
    bad = tmp_path / "adapter.gguf"
    bad.write_bytes(b"GGUF but not really" * 100)
    done = subprocess.run(_duomem("eval", "--model", smollm2, "--adapter", str(bad), "--split", "valid_seen",
                                  "--games", "2", "--workers", "2", "--out", str(tmp_path / "run"), "--no-progress"),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().count("\n") == 0 and "adapter" in done.stderr, done.stderr[-2000:]


def test_a_worker_that_dies_stops_the_run_with_one_line_and_keeps_the_records(prepared: Path, tmp_path: Path):
    """A worker killed in the middle of a run (a crash inside a library, the OOM killer) ends the run with one line
    instead of hanging it; the episodes that finished stay in episodes.jsonl for the next run to resume from."""
    import psutil

    out = tmp_path / "run"
    proc = subprocess.Popen(_duomem("eval", "--policy", "expert", "--split", "valid_seen", "--games", "12",
                                    "--workers", "2", "--out", str(out), "--no-progress"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out / "episodes.jsonl").is_file() or \
            not (out / "episodes.jsonl").read_text().strip():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "no episode finished in 300 s"
        time.sleep(0.5)
    workers = [p for p in psutil.Process(proc.pid).children() if "spawn_main" in " ".join(p.cmdline())]
    assert workers, "no worker process found"
    workers[0].kill()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err[-2000:]
    assert err.strip().count("\n") == 0 and "worker process died" in err, err[-2000:]
    kept = (out / "episodes.jsonl").read_text().splitlines()
    assert 1 <= len(kept) < 12 and all(json.loads(line)["won"] in (True, False) for line in kept)
