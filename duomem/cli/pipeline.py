"""``duomem run``, ``duomem demo-pipeline`` (the whole DuoMem pipeline, resumable, ending in its report) and
``duomem demo`` (a shipped student against its base model)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from duomem.cli.report import print_report
from duomem.pipeline.run import Phase

console = Console()


def run_command(
    config: Annotated[Path, typer.Argument(help="YAML config (see configs/ and duomem/pipeline/configs/).")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a setting: section.field=value "
                                                                 "(repeatable), e.g. --set eval.workers=4.")] = None,
    until: Annotated[Phase | None, typer.Option(help="Stop after a phase: collect, memory, tune, sft, lora or eval (to "
                                                   "run later phases elsewhere, e.g. on a GPU machine).")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    report_only: Annotated[bool, typer.Option(help="Run nothing: write the report from the evaluations finished "
                                                   "so far (unfinished ones as partial rows), e.g. while a long "
                                                   "run is going or after it was interrupted.")] = False,
) -> None:
    """Run the pipeline: collect -> memories -> k -> SFT -> LoRA -> ablation matrix -> report. Finished stages
    are skipped; an interrupted run resumes; a changed setting reruns only what depends on it."""
    from duomem.pipeline.config import load_config
    from duomem.pipeline.run import run_pipeline

    cfg = load_config(config, set_ or [])
    report, executed = run_pipeline(cfg, console, show_progress=progress, until=until, report_only=report_only)
    if report:
        console.print(f"{len(executed)} stages did work")
        print_report(console, report)


def demo_pipeline_command(
    out: Annotated[Path | None, typer.Option(help="Output folder (default runs/demo-pipeline).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a setting of the demo config.")] = None,
    ci: Annotated[bool, typer.Option(help="The even smaller configuration CI runs.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Every stage of DuoMem at toy scale on generated games with packaged models, offline (about 6 minutes on
    2 CPU cores): collect, memories, SFT, LoRA, the matrix, the report."""
    from duomem.pipeline.config import load_config
    from duomem.pipeline.run import run_pipeline

    name = "ci.yaml" if ci else "demo.yaml"
    overrides = list(set_ or [])
    if out:
        overrides.append(f"output={out}")
    with resources.as_file(resources.files("duomem.pipeline").joinpath("configs", name)) as path:
        cfg = load_config(path, overrides)
    report, _ = run_pipeline(cfg, console, show_progress=progress)
    if report:
        print_report(console, report)


def demo_command(
    student: Annotated[str | None, typer.Option(help="A shipped student (duomem models list; default: the "
                                                     "DuoMem one).")] = None,
    games: Annotated[int, typer.Option(help="New games to generate and play.")] = 16,
    workers: Annotated[int, typer.Option(help="Parallel episode processes (1 thread each).")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the generated games and of play.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Output folder (default runs/demo/<student>).")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """The embedded default: a distilled student that ships with duomem against its base model, side by side on
    freshly generated games on floor plans it never saw, with intervals (offline; resumable)."""
    from duomem import settings
    from duomem.errors import ModelError
    from duomem.eval.students import get_student, shipped_students
    from duomem.pipeline.showcase import print_showcase, run_showcase

    if student is None:
        shipped = list(shipped_students().values())
        if not shipped:
            raise ModelError(f"no shipped students in {settings.adapters_dir()}; run duomem demo-pipeline to see "
                             "every stage instead")
        student = next((s for s in shipped if s.result.row == "duomem"), shipped[0]).name
    chosen = get_student(student)
    out = out or Path("runs") / "demo" / chosen.name
    report = run_showcase(chosen, out, games, workers=workers, seed=seed, console=console, show_progress=progress)
    print_showcase(console, report, out)
