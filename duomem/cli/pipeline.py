"""``duomem run`` and ``duomem demo``: the whole DuoMem pipeline, resumable, ending in its report."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from duomem.cli.report import print_report

console = Console()


def run_command(
    config: Annotated[Path, typer.Argument(help="YAML config (see configs/ and duomem/pipeline/configs/).")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a setting: section.field=value "
                                                                 "(repeatable), e.g. --set eval.workers=4.")] = None,
    until: Annotated[str | None, typer.Option(help="Stop after a phase: collect, memory, tune, lora or eval (to "
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


def demo_command(
    out: Annotated[Path | None, typer.Option(help="Output folder (default runs/demo).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a setting of the demo config.")] = None,
    ci: Annotated[bool, typer.Option(help="The even smaller configuration CI runs.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """The embedded default: DuoMem end to end on generated games with packaged models, offline (about 6
    minutes on 2 CPU cores). Prints the report's tables and where it is."""
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
