"""``duomem memory``: build, inspect and query procedural-memory banks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True)
console = Console()


@app.command("build")
def build_command(
    trajectories: Annotated[Path, typer.Option(help="trajectories.jsonl or demonstrations.jsonl from `duomem collect`.")],
    out: Annotated[Path, typer.Option(help="Bank folder to write.")],
    writer: Annotated[str | None, typer.Option(help="Writer model (teacher: qwen2.5-coder-1.5b; own memory: the "
                                                    "student). Not needed for --format trajectory.")] = None,
    format: Annotated[str, typer.Option("--format", help="script, trajectory or both.")] = "both",
    include_failures: Annotated[bool, typer.Option(help="Write memories of lost episodes too (self-memory baseline).")] = False,
    per_game: Annotated[int, typer.Option(help="Memories per game at most.")] = 1,
    max_entries: Annotated[int | None, typer.Option(help="Stop after N memories.")] = None,
    embedder: Annotated[str, typer.Option(help="minilm (packaged all-MiniLM-L6-v2), hf:ORG/NAME or bm25.")] = "minilm",
    threads: Annotated[int | None, typer.Option(help="CPU threads for the writer.")] = None,
) -> None:
    """Write one memory per (selected) trajectory with an LLM writer; resumable; dedupes; embeds for retrieval."""
    from rich.progress import Progress

    from duomem.errors import ConfigError
    from duomem.llm import load_chat_model
    from duomem.memory.build import build_bank

    if format not in ("script", "trajectory", "both"):
        raise ConfigError(f"--format must be script, trajectory or both, not {format!r}")
    if format != "trajectory" and not writer:
        raise ConfigError("--writer is required unless --format trajectory")
    model = load_chat_model(writer, threads=threads) if writer and format != "trajectory" else None
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task("writing memories", total=None)
        bank = build_bank(trajectories, out, model, fmt=format, include_failures=include_failures,  # type: ignore[arg-type]
                          per_game=per_game, max_entries=max_entries, embedder=embedder,
                          on_progress=lambda done, total: progress.update(bar, completed=done, total=total))
    m = bank.manifest
    console.print(f"bank {out}: {m['n_entries']} memories, {m['size_bytes'] / 1e6:.2f} MB, retrieval "
                  f"{m['retrieval']} ({m['embedder'] or 'bm25'}), per type {m['per_type']}")


@app.command("search")
def search_command(
    bank: Annotated[Path, typer.Argument(help="Bank folder.")],
    query: Annotated[str, typer.Argument(help="A task description.")],
    k: Annotated[int, typer.Option("-k", help="How many.")] = 4,
    task_type: Annotated[str | None, typer.Option(help="Only memories of this task type (same_type retrieval).")]
    = None,
) -> None:
    """Print what the agent would retrieve for a task description."""
    from duomem.memory.bank import MemoryBank

    b = MemoryBank.load(bank)
    fmt = b.manifest.get("memory_format", "both")
    for rank, (entry, score) in enumerate(b.search(query, k, task_type=task_type), start=1):
        console.rule(f"{rank}. {entry.id}  {entry.task_type}  score {score:.3f}")
        console.print(entry.text(fmt), highlight=False)


@app.command("info")
def info_command(bank: Annotated[Path, typer.Argument(help="Bank folder.")]) -> None:
    """Size, entries and provenance of a bank."""
    import json

    from duomem.memory.bank import MemoryBank

    console.print_json(json.dumps(MemoryBank.load(bank).manifest))
