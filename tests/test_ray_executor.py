"""Rollouts as Ray actors on a local Ray instance: the local executor's records, resume and errors."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from duomem.errors import ModelError

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray(prepared: Path) -> Iterator[str]:
    """A local Ray instance (started after the data fixtures set DUOMEM_HOME, so its workers see it)."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _actions(records) -> dict[str, list[tuple[str, str]]]:
    return {r.game_id: [(s.kind, s.text) for s in r.trajectory.steps] for r in records}


def _drop_line(path: Path, index: int) -> str:
    lines = path.read_text().splitlines()
    dropped = json.loads(lines.pop(index))["game_id"]
    path.write_text("".join(line + "\n" for line in lines))
    return dropped


def _compare_and_resume(spec, tasks, tmp_path: Path) -> None:
    from duomem.eval.runner import EPISODES, run_rollouts

    on_ray = run_rollouts(spec, tasks, tmp_path / "ray", name="ray", workers=2, executor="ray",
                          show_progress=False)
    local = run_rollouts(spec, tasks, tmp_path / "local", name="local", workers=1, show_progress=False)
    assert on_ray.played == local.played == len(tasks)
    assert _actions(on_ray.records) == _actions(local.records)
    assert [(r.game_id, r.won, r.steps, r.seed) for r in on_ray.records] == \
        [(r.game_id, r.won, r.steps, r.seed) for r in local.records]
    assert on_ray.summary["n_episodes"] == len(tasks) and on_ray.summary["complete"]

    episodes = tmp_path / "ray" / EPISODES
    dropped = _drop_line(episodes, 1)
    replayed: list[str] = []
    again = run_rollouts(spec, tasks, tmp_path / "ray", name="ray", workers=2, executor="ray",
                         show_progress=False, on_record=lambda r: replayed.append(r.game_id))
    assert again.played == 1 and replayed == [dropped]
    assert len(episodes.read_text().splitlines()) == len(tasks)
    assert _actions(again.records) == _actions(local.records)


def test_expert_on_ray_matches_local_and_resumes(local_ray: str, tmp_path: Path):
    from duomem.envs.alfworld_data import load_tasks
    from duomem.eval.spec import RolloutSpec

    tasks = load_tasks("valid_unseen")[:3]
    _compare_and_resume(RolloutSpec(policy="expert", max_steps=50), tasks, tmp_path)


def test_llm_on_ray_matches_local_and_resumes(local_ray: str, smollm2: str, tmp_path: Path):
    from duomem.envs.alfworld_data import load_tasks
    from duomem.eval.spec import RolloutSpec

    tasks = load_tasks("valid_unseen")[:2]
    spec = RolloutSpec(policy="llm", model=smollm2, max_steps=4, threads=1)
    _compare_and_resume(spec, tasks, tmp_path)
    assert (tmp_path / "ray" / "speed.json").is_file()


def test_model_errors_come_back_as_one_line(local_ray: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import socket

    from duomem.envs.alfworld_data import load_tasks
    from duomem.eval.runner import run_rollouts
    from duomem.eval.spec import RolloutSpec

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("DUOMEM_OPENAI_RETRIES", "1")  # passed on to the actors
    spec = RolloutSpec(policy="llm", model=f"openai:teacher@http://127.0.0.1:{port}/v1", max_steps=2)
    with pytest.raises(ModelError, match="cannot reach the model server") as err:
        run_rollouts(spec, load_tasks("valid_unseen")[:1], tmp_path / "run", name="x", executor="ray",
                     show_progress=False)
    assert "\n" not in str(err.value) and type(err.value) is ModelError


def test_cli_collect_joins_the_cluster_at_ray_address(local_ray: str, tmp_path: Path):
    out = tmp_path / "collect"
    env = {**os.environ, "RAY_ADDRESS": local_ray}
    args = ["collect", "--policy", "expert", "--split", "valid_unseen", "--games", "2", "--executor", "ray",
            "--workers", "2", "--out", str(out), "--no-progress"]
    cli = subprocess.run([sys.executable, "-m", "duomem.cli", *args], env=env, capture_output=True, text=True,
                         timeout=170)
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert len((out / "trajectories.jsonl").read_text().splitlines()) == 2
    assert "collected 2 episodes" in cli.stdout
