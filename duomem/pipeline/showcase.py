"""``duomem demo``: a shipped distilled student against its base model on freshly generated games whose floor plans
the student never saw, paired, with intervals. Resumable like every run: games, then each side's episodes."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from duomem.errors import ConfigError
from duomem.eval.spec import RolloutSpec
from duomem.eval.students import Student
from duomem.jsonl import atomic_write_json, atomic_write_text
from duomem.pipeline.stages import StageRunner

DEMO_TURN_TOKENS = 48
"""What one turn may generate in the demo, for both rows: above the longest turn the shipped students write (at
most 45 tokens and the end of turn in the 9,935 turns of their committed valid_seen and valid_unseen rows), below
the 64 of evaluations, so the base model's rambling turns cost less and the students play as in those rows."""


DEMO_LOOP_LIMIT = 4
"""Both rows' episodes end, lost, once the agent plays one cycle of turns four times over word for word (see
``RolloutSpec.loop_limit``): the base model loops from its first turns, and no won episode of the committed runs
ever did this, so the comparison is the same at a fraction of the base row's time."""


def unseen_floor_plans(student: Student) -> list[int]:
    """Floor plans with a layout that none of the student's training games used."""
    from duomem.envs.generate import all_scenes

    seen = set(student.train_floor_plans)
    return [s for s in all_scenes() if s not in seen]


def base_spec(student: Student, seed: int = 0) -> RolloutSpec:
    """The base model as the student is played, without adapter or memory."""
    play = student.play
    return RolloutSpec(policy="llm", model=student.base_model, shots=play.shots, fewshot=play.fewshot,
                       max_steps=play.max_steps, action_selection=play.action_selection, seed=seed)


def run_showcase(student: Student, out: Path, games: int, workers: int = 2, seed: int = 0,
                 console: Console | None = None, show_progress: bool = True) -> dict:
    """Generate ``games`` test games on floor plans the student never saw, play the base model and the student
    on them, write ``demo.json`` and ``demo.md`` under ``out`` and return the comparison."""
    from duomem.envs.alfworld_data import load_tasks
    from duomem.envs.generate import generate_tasks
    from duomem.eval.runner import run_rollouts
    from duomem.eval.stats import compare
    from duomem.eval.summary import outcomes

    console = console or Console()
    if games < 1:
        raise ConfigError(f"--games must be at least 1, not {games}")
    scenes = unseen_floor_plans(student)
    if not scenes:
        raise ConfigError(f"student {student.name} was trained on every floor plan: no unseen one to play on")
    out = Path(out)
    stages = StageRunner(out, console)
    inputs = {"test_n": games, "seed": seed, "test_scenes": scenes, "v": 1}
    generated = stages.run("generate", inputs, lambda d: generate_tasks(
        d, n=1, test_n=games, seed=seed, test_scenes=scenes, workers=workers, show_progress=show_progress))
    tasks = load_tasks("test", generated.path)
    cap = {"max_new_tokens": DEMO_TURN_TOKENS, "loop_limit": DEMO_LOOP_LIMIT}
    rows = {"base": base_spec(student, seed).model_copy(update=cap),
            "student": RolloutSpec(**student.spec_fields(), seed=seed, **cap)}
    summaries, results, looped = {}, {}, {}
    for row, spec in rows.items():
        console.print(f"- {row}: {spec.model}" + (" + LoRA" if spec.adapter else "")
                      + (f" + memories (top {spec.top_k})" if spec.memory else ""))
        result = run_rollouts(spec, tasks, out / row, name=f"demo-{row}", workers=workers,
                              show_progress=show_progress, measure_speed=False)
        summaries[row], results[row] = result.summary, outcomes(result.records)
        looped[row] = sum(r.loop_period is not None for r in result.records)
    paired = compare(results["student"], results["base"], seed=seed)
    report = {"student": student.name, "base_model": student.base_model, "games": len(tasks),
              "floor_plans": scenes, "generated": str(generated.path),
              "rows": {row: {k: s[k] for k in ("n_episodes", "n_won", "success_rate", "success_ci95",
                                               "mean_steps", "wall_s_per_episode", "peak_rss_mb")}
                       | {"ended_in_loop": looped[row]} for row, s in summaries.items()},
              "paired": paired, "committed_result": student.result.model_dump()}
    atomic_write_json(out / "demo.json", report)
    atomic_write_text(out / "demo.md", showcase_markdown(report))
    return report


COLUMNS = ("row", "won", "success (95% interval)", "turns/episode", "ended in a loop", "s/episode")


def _cells(row: dict) -> tuple[str, ...]:
    low, high = row["success_ci95"]
    return (f"{row['n_won']}/{row['n_episodes']}", f"{100 * row['success_rate']:.0f}% [{100 * low:.0f}, "
            f"{100 * high:.0f}]", f"{row['mean_steps']:.1f}", str(row.get("ended_in_loop", 0)),
            f"{row['wall_s_per_episode']:.1f}")


def _paired_line(report: dict) -> str:
    p = report["paired"]
    diff, ci = p["difference"], p["difference_ci95"]
    span = f" [{100 * ci[0]:+.0f}, {100 * ci[1]:+.0f}]" if ci else ""
    return (f"student - base: {100 * diff:+.0f} points{span} (95% paired bootstrap); games won by the student only: "
            f"{p['a_only']}, by the base only: {p['b_only']}; exact McNemar p = {p['p_value']:.3g}")


def showcase_markdown(report: dict) -> str:
    lines = [f"# duomem demo: {report['student']} against {report['base_model']}", "",
             f"{report['games']} generated games on floor plans the student never saw "
             f"({', '.join(map(str, report['floor_plans']))}).", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row, cells in report["rows"].items():
        lines.append(f"| {row} | " + " | ".join(_cells(cells)) + " |")
    r = report["committed_result"]
    lines += ["", _paired_line(report), "", f"An episode ends, lost, at {DEMO_LOOP_LIMIT} rounds of one cycle of "
              "turns played word for word (none of the 2,746 won episodes of the committed runs did this).", "",
              f"Committed result of this student: {r['won']}/{r['games']} ({r['success_pct']:.1f}%) on {r['split']}, "
              f"`{r['command']}`."]
    return "\n".join(lines) + "\n"


def print_showcase(console: Console, report: dict, out: Path) -> None:
    table = Table(title=f"{report['games']} new games on unseen floor plans")
    for col in COLUMNS:
        table.add_column(col)
    for row, cells in report["rows"].items():
        table.add_row(row, *_cells(cells))
    console.print(table)
    console.print(_paired_line(report))
    console.print(f"records and tables in {out} (demo.md)")
