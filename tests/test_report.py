"""The DuoMem report: numbers, intervals, paired comparisons, plots, the terminal, and the committed report rebuilt
from its published records."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from rich.console import Console

from duomem.agent.trajectory import Trajectory
from duomem.eval.records import EpisodeRecord
from duomem.eval.runner import load_records
from duomem.eval.summary import summarize
from duomem.pipeline.report import (
    INPUTS,
    build_report,
    report_from_records,
    report_markdown,
    write_report_files,
)

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "benchmarks" / "runs" / "duomem-valid_unseen"
RESULTS = REPO / "benchmarks" / "results" / "duomem-valid_unseen"
EVAL = {"split": "valid_unseen", "n_games": 10, "max_steps": 50, "backend": "llamacpp"}


def _summary(name, rate, per_type, wall, steps=20.0):
    return {"name": name, "policy": "llm", "model": "m", "split": "valid_unseen", "n_episodes": 10,
            "success_rate": rate, "per_type": per_type, "mean_steps": steps, "invalid_action_rate": 0.1,
            "wall_s_per_episode": wall, "peak_rss_mb": 500.0}


def test_report_numbers(tmp_path: Path):
    """Summaries without per-game outcomes (as older duomem wrote them): intervals from the counts, no pairs."""
    from duomem.pipeline.report import plot

    summaries = {
        "nomem": _summary("nomem", 0.1, {"pick": {"n": 5, "success_rate": 0.2}, "heat": {"n": 5, "success_rate": 0.0}}, 40.0),
        "duomem": _summary("duomem", 0.55, {"pick": {"n": 5, "success_rate": 0.8}, "heat": {"n": 5, "success_rate": 0.3}}, 20.0),
        "teacher": _summary("teacher", 0.85, {"pick": {"n": 5, "success_rate": 1.0}, "heat": {"n": 5, "success_rate": 0.7}}, 5.0),
    }
    report = build_report("t", "s", "expert", summaries, {1: {"success_rate": 0.3, "n_episodes": 4}}, 1,
                          {"loras": {}}, EVAL, {"split": "valid_seen", "n_games": 4})
    assert report["derived"]["gap_closed"] == pytest.approx((0.55 - 0.1) / (0.85 - 0.1))
    assert report["derived"]["gap_closed_ci95"] is None and report["paired"] == []
    assert report["derived"]["speedup_vs_teacher"] == {"nomem": 0.125, "duomem": 0.25, "teacher": 1.0}
    assert report["configs"]["duomem"]["per_type"]["pick"]["success_ci95"] == pytest.approx([0.3755, 0.9638],
                                                                                             abs=1e-4)
    md = report_markdown(report)
    assert "| LoRA + teacher memory (DuoMem) | 10 | 55.0 [" in md and "| 80.0 [37.6, 96.4] |" in md
    assert "| no memory | 20.0 | 10.0 | 40.0 | - | 0.12x | 500 |" in md  # the cost table
    assert "LoRA + teacher memory (DuoMem) 60.0%" in md and "No paired comparison" in md
    assert "| 1 | 30.0 [" in md  # the k sweep, with its interval
    # throughput (episodes per hour) is the basis of the speed-up where both runs report it: batched episodes
    # share their batch's time, so seconds per episode would understate a batched run.
    summaries["nomem"]["episodes_per_hour"], summaries["teacher"]["episodes_per_hour"] = 900.0, 600.0
    again = build_report("t", "s", "expert", summaries, {}, 1, {"loras": {}}, {**EVAL, "backend": "transformers"},
                         {"split": "valid_seen", "n_games": 4})
    assert again["derived"]["speedup_vs_teacher"]["nomem"] == pytest.approx(1.5)
    assert again["derived"]["speedup_basis"] == {"nomem": "episodes per hour", "duomem": "seconds per episode",
                                                 "teacher": "episodes per hour"}
    assert "| 900 | 1.50x |" in report_markdown(again)
    # a partial row (report-only while a run goes on) is marked, a config not started is named, no gap is claimed
    summaries["duomem"].update(complete=False, n_episodes=4, n_planned=10)
    partial = build_report("t", "s", "expert", summaries, {}, 1, {"loras": {}}, EVAL,
                           {"split": "valid_seen", "n_games": 0}, planned=["nomem", "own_memory", "duomem", "teacher"])
    assert not partial["complete"] and partial["derived"]["gap_closed"] is None
    md = report_markdown(partial)
    assert md.startswith("# DuoMem partial report") and "| LoRA + teacher memory (DuoMem)* | 4 | 55.0 [" in md
    assert "DuoMem): 4 of 10 games so far; own memory (MemP baseline): not started" in md
    assert "Gap closed" not in md
    plot(report, tmp_path)
    assert (tmp_path / "success_per_type.png").stat().st_size > 1000
    assert (tmp_path / "success_vs_time.png").stat().st_size > 1000


def _record(game: str, task_type: str, won: bool, wall: float = 30.0) -> EpisodeRecord:
    traj = Trajectory(game_id=game, split="valid_unseen", task_type=task_type, goal="g", initial_observation="o",
                      policy="llm", won=won)
    return EpisodeRecord(game_id=game, task_type=task_type, split="valid_unseen", seed=0, policy="llm", won=won,
                         steps=10, env_steps=10, thinks=0, invalid_actions=1, wall_s=wall, trajectory=traj)


# Games won per row over 40 games (g00..g39, alternately pick and heat); lora and duomem differ on 12 games,
# 10 to lora and 2 to duomem.
WINS = {"nomem": set(), "teacher_memory": {0}, "lora": set(range(14)), "duomem": {*range(4), 14, 15},
        "teacher": set(range(38))}


def _publish(folder: Path) -> None:
    """A records folder as benchmarks/publish.py writes it."""
    for i, (row, wins) in enumerate(WINS.items()):
        stage = folder / f"eval_{row}-{i:012x}"
        stage.mkdir(parents=True)
        records = [_record(f"g{g:02d}", ("pick", "heat")[g % 2], g in wins, 10.0 + 20 * i) for g in range(40)]
        (stage / "episodes.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in records))
        summary = summarize(records, row, "llm", "m", "valid_unseen", {"complete": True})
        del summary["outcomes"], summary["success_ci95"]  # as a summary written before intervals existed
        (stage / "summary.json").write_text(json.dumps(summary))
    tune = folder / "eval_tune_teacher_memory_k2-00000000000a"
    tune.mkdir()
    records = [_record(f"s{g}", "pick", g < 3) for g in range(8)]
    (tune / "episodes.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in records))
    (tune / "summary.json").write_text(json.dumps(summarize(records, "tune_teacher_memory_k2", "llm", "m", "vs")))
    inputs = {"name": "toy", "student": "m", "teacher": "expert", "eval": {**EVAL, "n_games": 40},
              "tune": {"split": "valid_seen", "n_games": 8}, "chosen_k": 2,
              "artifacts": {"loras": {}, "own_bank": None, "teacher_bank": None}, "planned": list(WINS)}
    (folder / INPUTS).write_text(json.dumps(inputs))


def test_report_from_published_records(tmp_path: Path):
    _publish(tmp_path / "runs")
    report = report_from_records(tmp_path / "runs")
    assert list(report["configs"]) == list(WINS) and report["k_sweep"]["2"]["success_rate"] == 3 / 8
    assert report["configs"]["lora"]["success_ci95"] == pytest.approx([0.2213, 0.5049], abs=1e-4)  # 14 of 40
    assert "outcomes" not in report["configs"]["lora"]
    pairs = {(p["a"], p["b"]): p for p in report["paired"]}
    assert set(pairs) == {("teacher_memory", "nomem"), ("duomem", "lora"), ("duomem", "teacher_memory")}
    duo = pairs[("duomem", "lora")]
    assert (duo["n_games"], duo["won_a"], duo["won_b"], duo["a_only"], duo["b_only"]) == (40, 6, 14, 2, 10)
    assert duo["p_value"] == pytest.approx(0.0385742, rel=1e-5)  # 2 * P(X <= 2), X ~ Bin(12, 1/2)
    assert duo["difference"] == pytest.approx(-0.2) and duo["difference_ci95"][1] < 0
    gap = report["derived"]["gap_closed_by"]["duomem"]
    assert gap["value"] == pytest.approx(6 / 38) and gap["ci95"][0] < 6 / 38 < gap["ci95"][1]
    md = report_markdown(report)
    assert "| LoRA + teacher memory (DuoMem) | LoRA only | 40 | 6 | 14 | 2 | 10 | -20.0 [" in md
    assert "| 0.039 |" in md and "| LoRA only | 40 | 35.0 [22.1, 50.5] |" in md
    assert report_from_records(tmp_path / "runs") == report  # seeded: the same report every time
    (tmp_path / "runs" / "eval_lora-00000000000f").mkdir()
    (tmp_path / "runs" / "eval_lora-00000000000f" / "summary.json").write_text("{}")
    from duomem.errors import DataError

    with pytest.raises(DataError, match="two record folders for row lora"):
        report_from_records(tmp_path / "runs")


def test_report_files_and_terminal_tables(tmp_path: Path):
    from duomem.cli.report import print_report

    _publish(tmp_path / "runs")
    md = write_report_files(report_from_records(tmp_path / "runs"), tmp_path / "out")
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"report.json", "report.md", "success_per_type.png",
                                                              "success_vs_time.png"}
    console = Console(record=True, width=80)
    print_report(console, md)
    text = console.export_text()
    assert re.search(r"LoRA only\s+40\s+35.0\s+22.1-50.5", text) and "0.039" in text
    assert re.search(r"DuoMem\s+LoRA only\s+2\s+10\s+-20.0", text)
    assert "…" not in text and "# " not in text  # tables that fit 80 columns, no raw Markdown
    assert max(len(line) for line in text.splitlines()) <= 80


def _main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    """The ``duomem`` entry point in this process: (exit code, stderr)."""
    from duomem.cli.main import main

    monkeypatch.setattr(sys, "argv", ["duomem", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def test_report_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    _publish(tmp_path / "runs")
    assert _main(monkeypatch, capsys, "report", str(tmp_path / "runs"), "--out", str(tmp_path / "cli"))[0] == 0
    assert (tmp_path / "cli" / "report.json").is_file() and (tmp_path / "cli" / "success_vs_time.png").is_file()
    code, err = _main(monkeypatch, capsys, "report", str(tmp_path))
    assert code == 2 and "not a published records folder" in err


@pytest.mark.parametrize("args", [("eval", "--policy", "expert", "--games", "0"), ("collect", "--games", "-1"),
                                  ("eval", "--policy", "expert", "--games", "2", "--samples", "0")])
def test_empty_selections_are_refused(args: tuple[str, ...], monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture):
    code, err = _main(monkeypatch, capsys, *args)
    assert code == 2 and err.startswith("error: ") and "must be at least 1" in err and len(err.splitlines()) == 1


def test_time_plot_labels_neither_collide_nor_leave_the_axes(tmp_path: Path):
    """Three rows at 0% within 60% of each other in time (the committed report's memory rows) and long labels."""
    from duomem.pipeline.report import plot_success_vs_time

    rows = {"nomem": (0.0, 53.9), "own_memory": (0.0, 85.4), "teacher_memory": (0.0, 81.9), "lora": (0.231, 62.7),
            "lora_own_memory": (0.194, 82.3), "duomem": (0.119, 55.1), "teacher": (0.985, 3.7)}
    summaries = {n: {**_summary(n, rate, {}, wall), "n_episodes": 134} for n, (rate, wall) in rows.items()}
    report = build_report("t", "s", "expert", summaries, {}, 2, {"loras": {}}, EVAL, {"split": "x", "n_games": 0})
    boxes, axes = plot_success_vs_time(report, tmp_path / "t.png")
    assert len(boxes) == 7
    for i, box in enumerate(boxes):
        assert axes.x0 <= box.x0 and box.x1 <= axes.x1 and axes.y0 <= box.y0 and box.y1 <= axes.y1
        assert not any(box.overlaps(other) for other in boxes[i + 1:])


def test_committed_report_is_rebuilt_from_its_records():
    """benchmarks/results/duomem-valid_unseen is `duomem report` of benchmarks/runs/duomem-valid_unseen, and says
    what was counted by hand on those records."""
    report = report_from_records(PUBLISHED)
    committed = json.loads((RESULTS / "report.json").read_text())
    assert json.loads(json.dumps(report)) == committed
    pairs = {(p["a"], p["b"]): p for p in committed["paired"]}
    duo = pairs[("duomem", "lora")]
    assert (duo["a_only"], duo["b_only"]) == (6, 21) and duo["p_value"] == pytest.approx(0.0059, abs=1e-4)
    own = pairs[("lora_own_memory", "lora")]
    assert (own["a_only"], own["b_only"]) == (9, 14) and own["p_value"] == pytest.approx(0.40, abs=0.01)
    assert committed["configs"]["lora"]["success_ci95"] == pytest.approx([0.168, 0.310], abs=1e-3)
    assert (RESULTS / "report.md").read_text() == report_markdown(report)


def test_full_scale_report_is_rebuilt_from_its_records():
    """benchmarks/results/smollm2-135m-valid_unseen is `duomem report` of its published records, the
    teacher-memory row (played by `duomem eval` with the pipeline's settings) included."""
    folder = REPO / "benchmarks" / "runs" / "smollm2-135m-valid_unseen"
    results = REPO / "benchmarks" / "results" / "smollm2-135m-valid_unseen"
    report = report_from_records(folder)
    assert json.loads(json.dumps(report)) == json.loads((results / "report.json").read_text())
    assert (results / "report.md").read_text() == report_markdown(report)
    rows = report["configs"]
    assert [rows[n]["n_won"] for n in ("lora", "duomem", "teacher_memory")] == [110, 109, 0]


def test_pipeline_report_has_the_paired_section(tmp_path: Path):
    """The pipeline's summaries carry each game's outcome, so its report has what a rebuilt one has."""
    from duomem.pipeline.config import load_config
    from duomem.pipeline.report import summary_from_records, write_report

    _publish(tmp_path / "runs")
    rows = {n: summary_from_records(p) for n in WINS for p in (tmp_path / "runs").glob(f"eval_{n}-*")}
    (tmp_path / "c.yaml").write_text("name: toy\nstudent: {model: smollm2-135m}\nteacher: {policy: expert}\n")
    md = write_report(tmp_path / "out", load_config(tmp_path / "c.yaml", []), rows, {}, 2, {"loras": {}},
                      eval_games=40)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    rebuilt = report_from_records(tmp_path / "runs")
    assert report["paired"] == rebuilt["paired"] and report["derived"] == rebuilt["derived"]
    assert "| LoRA + teacher memory (DuoMem) | LoRA only | 40 | 6 | 14 | 2 | 10 |" in md.read_text()


def test_summary_compares_model_time_with_the_raw_probe():
    """With a raw speed probe, the summary says how the loop's model time compares with what the probe's prefill and
    decode rates predict for the same uncached prompt and completion tokens."""
    folder = Path(__file__).resolve().parents[1] / "benchmarks" / "runs" / "smollm2-135m-valid_unseen"
    records = load_records(next(folder.glob("eval_lora-*")))
    speed = {"prompt_tokens": 1000, "prompt_tokens_per_s": 200.0, "decode_tokens_per_s": 50.0}
    s = summarize(records, "lora", "llm", "smollm2-135m", "valid_unseen", extra={"speed": speed})
    uncached = sum(r.prompt_tokens - r.cached_prompt_tokens for r in records)
    predicted = uncached / 200.0 + sum(r.completion_tokens for r in records) / 50.0
    assert s["model_time_vs_raw"]["predicted_llm_s"] == pytest.approx(predicted)
    assert s["model_time_vs_raw"]["ratio"] == pytest.approx(sum(r.llm_s for r in records) / predicted)
    from duomem.eval.summary import summary_markdown

    assert "what the probe's rates predict" in summary_markdown(s)


def test_summaries_name_their_machine():
    """A summary records the machine it was made on: the CPU model (this machine's, read from /proc/cpuinfo on
    Linux) and the CPU count, so a figure names its hardware."""
    import os

    from duomem.eval.summary import host

    machine = host()
    assert machine["cpus"] == os.cpu_count() and machine["processor"]
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file() and "model name" in cpuinfo.read_text():
        names = {line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")}
        assert machine["processor"] in names
    assert summarize([], "r", "expert", None, "valid_seen")["host"] == machine
