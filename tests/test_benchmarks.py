"""Committed benchmark figures are what their commands compute from the committed records."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"


@pytest.fixture(scope="module", autouse=True)
def _benchmarks_importable():
    sys.path.insert(0, str(BENCH))
    yield
    sys.path.remove(str(BENCH))


def test_gpu_rows_are_recomputed_from_their_records():
    import gpu_throughput

    published = json.loads((BENCH / "results" / "gpu-throughput.json").read_text())["records"]
    assert published, "no GPU row read off records"
    for key, row in published.items():
        folder = REPO / key.removeprefix("records ")
        against = REPO / row["figures"]["vs"] if "vs" in row["figures"] else None
        again = gpu_throughput.from_records(folder, against, row["device"]["name"])
        assert again["key"] == key and again["figures"] == row["figures"]


def test_student_sizes_report_pairs_rows_of_one_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import students

    monkeypatch.setattr(students, "RESULTS", tmp_path)
    students.report()
    rows = json.loads((tmp_path / "students.json").read_text())["rows"]
    by = {(r["student"], r["row"], r["actions"], r["backend"]): r for r in rows}
    gpu = by[("qwen2.5-coder-0.5b", "duomem", "free", "transformers")]
    assert gpu["complete"] and gpu["paired"]["against"] == "lora" and gpu["paired"]["n_games"] == 134
    cpu = by[("smollm2-135m", "duomem", "free", "llamacpp")]
    assert (cpu["paired"]["a_only"], cpu["paired"]["b_only"]) == (9, 10)
    committed = json.loads((BENCH / "results" / "students.json").read_text())["rows"]
    for r in committed:
        if r["complete"]:
            assert by[(r["student"], r["row"], r["actions"], r["backend"])]["summary"]["n_won"] == r["summary"]["n_won"]


def test_new_task_choices_on_valid_seen_are_what_their_records_give(prepared: Path):
    """The valid_seen choices of benchmarks/README section 16 (heat: the two episodes with the memories beside them
    against one episode, or no memories) are recomputed from the committed records."""
    import new_task_types

    published = json.loads((BENCH / "results" / "new-task-types.json").read_text())["valid_seen"]
    again, lines = new_task_types.tuning_table(list(published))
    assert again == published and published["heat"].keys() == new_task_types.TUNE.keys()
    assert all(v["complete"] for v in published["heat"].values())
    assert any(line.startswith("| heat | g-k0 |") for line in lines)
