"""Shipped students (issue 19): the adapters in adapters/ load, match their manifests and win real games."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from duomem.errors import ModelError
from duomem.eval.students import get_student, read_student, shipped_students
from duomem.jsonl import read_jsonl
from duomem.llm.registry import file_sha256

REPO = Path(__file__).resolve().parents[1]


def _students() -> list[str]:
    return list(shipped_students())


def test_students_are_shipped_and_match_their_manifests():
    names = _students()
    assert names, "adapters/ holds no student"
    for name in names:
        s = get_student(name)  # checks the adapter's and the bank's hashes
        assert s.adapter_path.stat().st_size == s.adapter_bytes <= 25_000_000
        assert (REPO / s.result.report).is_file()
        published = json.loads((REPO / s.result.report).read_text())["configs"][s.result.row]
        assert (published["n_won"], published["n_episodes"]) == (s.result.won, s.result.games)
        assert set(s.train_floor_plans).isdisjoint({10, 219, 308, 424})  # valid_unseen's floor plans


def test_a_changed_adapter_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    name = _students()[0]
    copy = tmp_path / name
    shutil.copytree(get_student(name).folder, copy)
    student = read_student(copy)
    data = bytearray(student.adapter_path.read_bytes())
    data[-1] ^= 1
    student.adapter_path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        student.verify()


def test_student_options_clash_is_one_line(tmp_path: Path):
    name = _students()[0]
    cmd = [sys.executable, "-m", "duomem.cli", "eval", "--student", name, "--adapter", "x.gguf", "--games", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=os.environ)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--adapter" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "duomem.cli", "eval", "--student", "nobody"], capture_output=True,
                          text=True, cwd=tmp_path, env=os.environ)
    assert proc.returncode == 2 and "unknown student 'nobody'" in proc.stderr


def test_models_list_shows_the_students():
    proc = subprocess.run([sys.executable, "-m", "duomem.cli", "models", "list"], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "250"})
    assert proc.returncode == 0
    for name in _students():
        assert name in proc.stdout


def test_shipped_student_wins_a_game_it_won_in_its_committed_run(prepared: Path, smollm2: str, tmp_path: Path):
    """The student replays a valid_unseen game from its committed records: the same commands, and it wins."""
    from duomem.envs.alfworld_data import load_tasks
    from duomem.eval.runner import run_rollouts
    from duomem.eval.spec import RolloutSpec

    student = get_student(_students()[0])
    assert file_sha256(student.adapter_path) == student.adapter_sha256
    records = REPO / "benchmarks" / "runs" / Path(student.result.report).parent.name
    run = next(records.glob(f"eval_{student.result.row}-*"))
    won = read_jsonl(run / "episodes.jsonl")
    won = sorted((r for r in won if r["won"]), key=lambda r: r["steps"])[0]
    task = next(t for t in load_tasks(student.result.split) if t.game_id == won["game_id"])
    spec = RolloutSpec(**student.spec_fields(), threads=2)
    result = run_rollouts(spec, [task], tmp_path / "run", name="student", show_progress=False)
    record = result.records[0]
    assert record.won
    played = [s.text for s in record.trajectory.steps]
    assert played == [s["text"] for s in won["trajectory"]["steps"]]


@pytest.mark.slow
def test_demo_plays_the_student_and_its_base_on_unseen_floor_plans(duomem_home: Path, smollm2: str, tmp_path: Path):
    """`duomem demo --games 2`: new games on floor plans the student never trained on, both rows played on the
    same games and compared; a rerun plays nothing again."""
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "duomem.cli", "demo", "--games", "2", "--out", str(out), "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=os.environ)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "demo.json").read_text())
    student = get_student(report["student"])
    assert report["games"] == 2 and set(report["floor_plans"]).isdisjoint(student.train_floor_plans)
    assert {r["n_episodes"] for r in report["rows"].values()} == {2}
    assert all(0 <= r["ended_in_loop"] <= 2 for r in report["rows"].values())
    assert report["paired"]["n_games"] == 2
    assert (out / "demo.md").is_file() and "student - base" in done.stdout
    assert "Warning" not in done.stderr, done.stderr[-2000:]  # a clean terminal (no leaked-semaphore warnings)
    size = (out / "student" / "episodes.jsonl").stat().st_size
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=os.environ)
    assert again.returncode == 0 and (out / "student" / "episodes.jsonl").stat().st_size == size
