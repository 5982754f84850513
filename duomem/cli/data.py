"""``duomem data``: prepare the official task sets; generate new ones."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from duomem.envs.base import TASK_TYPES

app = typer.Typer(no_args_is_help=True)
console = Console()


@app.command("prepare")
def prepare_command(
    source: Annotated[Path | None, typer.Option(help="Folder with slim_<split>.tar.xz archives, or an ALFWORLD_DATA "
                                                     "folder holding json_2.1.1 (default: $DUOMEM_ALFWORLD_ARCHIVE, "
                                                     "then $ALFWORLD_DATA).")] = None,
    splits: Annotated[str, typer.Option(help="Comma-separated splits.")] = "train,valid_seen,valid_unseen",
    verify: Annotated[str, typer.Option(help="all: load every game once (cached); sample: 2 per type; none.")] = "all",
    workers: Annotated[int, typer.Option(help="Processes for verification.")] = 2,
) -> None:
    """Unpack ALFWorld task sets, build missing game files, check they load, and index them by split."""
    from rich.progress import Progress

    from duomem.envs.alfworld_data import prepare

    with Progress(console=console, transient=True) as progress:
        bars: dict[str, int] = {}

        def on_progress(what: str, done: int, total: int) -> None:
            if what not in bars:
                bars[what] = progress.add_task(what, total=total)
            progress.update(bars[what], completed=done)

        report = prepare(source, splits=[s.strip() for s in splits.split(",") if s.strip()], verify=verify,
                         workers=workers, on_progress=on_progress)
    table = Table(title=f"ALFWorld task sets in {report.root}")
    table.add_column("split")
    table.add_column("games", justify="right")
    for t in TASK_TYPES:
        table.add_column(t, justify="right")
    for split, n in report.counts.items():
        table.add_row(split, str(n), *[str(report.per_type[split].get(t, 0)) for t in TASK_TYPES])
    console.print(table)
    console.print(f"built {report.built} game files, verified {report.verified} games (cached results reused)")
