"""The LLM agent on real games, the evaluation runner's records, resume and summaries."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from duomem.errors import ConfigError
from duomem.eval.spec import RolloutSpec


def test_llm_agent_plays_a_short_episode(prepared: Path, smollm2_model):
    from duomem.agent.react import ReActAgent
    from duomem.envs.alfworld_data import load_tasks
    from duomem.eval.player import play

    task = load_tasks("valid_unseen")[0]
    spec = RolloutSpec(policy="llm", model="smollm2-135m", shots=1, max_steps=6)
    (record,) = play(spec, [(task, 0)], policy=ReActAgent(smollm2_model, shots=1))
    assert record.steps == 6 and record.env_steps + record.thinks == 6
    assert record.completion_tokens > 0 and record.llm_s > 0 and record.prompt_tokens > 0
    assert all(s.text for s in record.trajectory.steps if s.kind == "action")
    assert all(s.raw is not None for s in record.trajectory.steps)
    # thoughts are never two in a row (the second is read as a command)
    kinds = [s.kind for s in record.trajectory.steps]
    assert ("think", "think") not in itertools.pairwise(kinds)
    (again,) = play(spec, [(task, 0)], policy=ReActAgent(smollm2_model, shots=1))
    assert [s.text for s in again.trajectory.steps] == [s.text for s in record.trajectory.steps]  # greedy


def test_summary_numbers():
    from duomem.agent.trajectory import Trajectory
    from duomem.eval.records import EpisodeRecord
    from duomem.eval.summary import summarize

    def rec(game, t, won, steps, thinks, invalid, wall):
        traj = Trajectory(game_id=game, split="s", task_type=t, goal="g", initial_observation="o", policy="llm")
        return EpisodeRecord(game_id=game, task_type=t, split="s", seed=0, policy="llm", won=won, steps=steps,
                             env_steps=steps - thinks, thinks=thinks, invalid_actions=invalid, wall_s=wall,
                             peak_rss_mb=100 + steps, trajectory=traj)

    records = [rec("a", "pick", True, 10, 2, 1, 4.0), rec("b", "pick", False, 50, 0, 10, 8.0),
               rec("c", "heat", True, 20, 5, 0, 6.0)]
    s = summarize(records, "x", "llm", "m", "s")
    assert s["n_episodes"] == 3 and s["success_rate"] == pytest.approx(2 / 3)
    assert s["per_type"]["pick"] == {"n": 2, "n_won": 1, "success_rate": 0.5,
                                     "success_ci95": pytest.approx([0.0945, 0.9055], abs=1e-4)}
    assert s["per_type"]["heat"]["success_rate"] == 1.0 and s["per_type"]["heat"]["success_ci95"][1] == 1.0
    assert s["success_ci95"] == pytest.approx([0.2077, 0.9385], abs=1e-4)  # Wilson, 2 of 3
    assert s["outcomes"] == {"a": True, "b": False, "c": True}
    assert s["mean_steps"] == pytest.approx(80 / 3)
    assert s["invalid_action_rate"] == pytest.approx(11 / (8 + 50 + 15))
    assert s["wall_s_per_episode"] == pytest.approx(6.0) and s["peak_rss_mb"] == 150


def test_select_games_is_seeded_and_balanced(prepared: Path):
    from duomem.envs.alfworld_data import load_tasks
    from duomem.eval.runner import select_games

    tasks = load_tasks("valid_unseen")
    a, b = select_games(tasks, 12, seed=3), select_games(tasks, 12, seed=3)
    assert [t.game_id for t in a] == [t.game_id for t in b]
    assert {t.task_type for t in a} == {"pick", "clean", "heat", "cool", "examine", "pick_two"}
    assert [t.game_id for t in select_games(tasks, 12, seed=4)] != [t.game_id for t in a]
    assert len(select_games(tasks, None)) == 134


def test_eval_plays_the_task_types_asked_for(prepared: Path, tmp_path: Path):
    """New kinds of task are measured on their own games: ``--task-types`` selects them; an unknown type is one
    line."""
    out = tmp_path / "heat"
    proc = _cli("eval", "--policy", "expert", "--split", "valid_unseen", "--task-types", "heat", "--games", "2",
                "--max-steps", "3", "--out", str(out), "--no-progress", env=dict(os.environ))
    _stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    rows = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and {r["task_type"] for r in rows} == {"heat"}
    bad = _cli("eval", "--policy", "expert", "--task-types", "heat,bake", "--out", str(tmp_path / "bad"),
               env=dict(os.environ))
    _stdout, stderr = bad.communicate(timeout=120)
    assert bad.returncode == 2 and stderr.strip().count("\n") == 0 and "bake not among" in stderr


def _cli(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "duomem.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_eval_resume_after_kill(prepared: Path, tmp_path: Path):
    """Kill an expert evaluation mid-run, rerun: every game once, none lost, a cut last line repaired."""
    out = tmp_path / "run"
    env = dict(os.environ)
    args = ("eval", "--policy", "expert", "--split", "valid_unseen", "--games", "4", "--out", str(out),
            "--no-progress")
    proc = _cli(*args, env=env)
    episodes = out / "episodes.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not episodes.is_file() or not episodes.read_text().strip()):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with episodes.open("a") as fh:
        fh.write('{"game_id": "half a line')  # what a kill in the middle of a write leaves
    done_before = len(episodes.read_text().splitlines()) - 1
    assert 1 <= done_before < 4
    finished = _cli(*args, env=env)
    _stdout, stderr = finished.communicate(timeout=300)
    assert finished.returncode == 0, stderr
    rows = [json.loads(line) for line in episodes.read_text().splitlines()]
    assert len(rows) == 4 and len({r["game_id"] for r in rows}) == 4
    summary = json.loads((out / "summary.json").read_text())
    for key in ("name", "policy", "model", "split", "n_episodes", "success_rate", "per_type", "mean_steps",
                "invalid_action_rate", "wall_s_per_episode", "peak_rss_mb"):
        assert key in summary
    assert summary["n_episodes"] == 4 and summary["complete"]
    assert (out / "summary.md").read_text().startswith("# ")


def test_a_killed_drivers_workers_end(prepared: Path, tmp_path: Path):
    """SIGKILL the driver of a 2-worker evaluation: its worker processes (and their game processes) end within
    seconds instead of playing on as orphans."""
    import psutil

    out = tmp_path / "run"
    proc = _cli("eval", "--policy", "expert", "--split", "valid_unseen", "--games", "12", "--workers", "2", "--out",
                str(out), "--no-progress", env=dict(os.environ))
    episodes = out / "episodes.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and (not episodes.is_file() or not episodes.read_text().strip()):
        time.sleep(0.2)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert len(children) >= 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _gone, alive = psutil.wait_procs(children, timeout=20)
    assert not alive, [c.cmdline()[-1:] for c in alive]


def test_resume_with_other_settings_is_refused(prepared: Path, tmp_path: Path):
    from duomem.envs.alfworld_data import load_tasks
    from duomem.eval.runner import run_rollouts

    tasks = load_tasks("valid_unseen")[:1]
    run_rollouts(RolloutSpec(policy="expert", max_steps=3), tasks, tmp_path, "a", show_progress=False)
    with pytest.raises(ConfigError, match="max_steps"):
        run_rollouts(RolloutSpec(policy="expert", max_steps=4), tasks, tmp_path, "a", show_progress=False)


def test_spec_validation():
    with pytest.raises(ConfigError, match="needs a model"):
        RolloutSpec(policy="llm")
    with pytest.raises(ConfigError, match="expert"):
        RolloutSpec(policy="expert", model="smollm2-135m")


def test_spec_keys_are_stable_and_complete():
    """A run's key holds every setting that changes play and its key version, with no default restated: machine
    settings and settings that cannot matter leave it unchanged, every other change changes it."""
    from duomem.eval.spec import KEY_VERSION

    base = RolloutSpec(policy="llm", model="smollm2-135m", memory="bank")
    key = base.key_fields()
    assert key["key_version"] == KEY_VERSION and key["retrieval"] == "similarity" and key["note"] is False
    assert base.fingerprint() == RolloutSpec(policy="llm", model="smollm2-135m", memory="bank", threads=1,
                                             device="cuda", step_timeout=5).fingerprint()
    played = set(RolloutSpec.model_fields) - {"threads", "device", "step_timeout", "score_norm", "batch",
                                               "batch_tokens", "request_timeout", "request_retries",
                                               "request_concurrency", "unseen_types", "examples", "loop_limit"}
    assert set(key) == played | {"key_version"}  # unseen types, bank examples, loop limit: in a key only when set
    for update in ({"retrieval": "same_type"}, {"top_k": 4}, {"note": True}, {"memory_format": "typed"},
                   {"action_selection": "score"}, {"unseen_types": ["heat"]}, {"examples": "bank"},
                   {"loop_limit": 4}):
        assert base.model_copy(update=update).fingerprint() != base.fingerprint(), update
    # the score norm enters a key only for scored play, whichever it is
    assert base.model_copy(update={"score_norm": "sum"}).fingerprint() == base.fingerprint()
    scored = base.model_copy(update={"action_selection": "score"})
    assert scored.key_fields()["score_norm"] == "mean"
    assert scored.model_copy(update={"score_norm": "sum"}).fingerprint() != scored.fingerprint()
