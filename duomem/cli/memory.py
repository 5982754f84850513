"""``duomem memory``: build, inspect and query procedural-memory banks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from duomem.cli import comma_list
from duomem.errors import ConfigError
from duomem.memory.build import CopyPolicy
from duomem.memory.entry import MemoryFormat

app = typer.Typer(no_args_is_help=True)
TRANSCRIPTS_HELP = ("Keep each won episode itself beside its memory, for `duomem eval --examples bank` (the student's "
                    "solved examples taken from the bank: how a new kind of task reaches a small student).")
console = Console()


@app.command("build")
def build_command(
    trajectories: Annotated[Path, typer.Option(help="trajectories.jsonl or demonstrations.jsonl from `duomem collect`.")],
    out: Annotated[Path, typer.Option(help="Bank folder to write.")],
    writer: Annotated[str | None, typer.Option(help="Writer model (teacher: qwen2.5-coder-1.5b; own memory: the "
                                                    "student), or `plan`: the expert's own plan as the script, "
                                                    "no model (an upper bound). Not needed for --format "
                                                    "trajectory.")] = None,
    format: Annotated[MemoryFormat, typer.Option("--format", help="How memories are shown by default: script, "
                                                                  "trajectory, both (script + reference actions), "
                                                                  "abstract (both, abstracted from the room: no "
                                                                  "instance numbers, places named by role) or "
                                                                  "typed (place types kept).")] = "both",
    include_failures: Annotated[bool, typer.Option(help="Write memories of lost episodes too (self-memory baseline).")] = False,
    per_game: Annotated[int, typer.Option(help="Memories per game at most.")] = 1,
    max_entries: Annotated[int | None, typer.Option(help="Stop after N memories.")] = None,
    embedder: Annotated[str, typer.Option(help="minilm (packaged all-MiniLM-L6-v2), hf:ORG/NAME or bm25.")] = "minilm",
    threads: Annotated[int | None, typer.Option(help="CPU threads for the writer.")] = None,
    copy_policy: Annotated[CopyPolicy, typer.Option(help="Memories whose script copies the writer prompt: strip (drop "
                                                  "the copied lines) or reject (leave the memory out).")] = "strip",
    transcripts: Annotated[bool, typer.Option(help=TRANSCRIPTS_HELP)] = False,
) -> None:
    """Write one memory per (selected) trajectory with an LLM or the plan writer; resumable; dedupes; embeds."""
    from rich.progress import Progress

    from duomem.llm import load_chat_model
    from duomem.memory.build import build_bank
    from duomem.memory.writer import PLAN_WRITER

    if format != "trajectory" and not writer:
        raise ConfigError(f"--writer is required unless --format trajectory (a model, or {PLAN_WRITER})")
    if writer == PLAN_WRITER:
        model = PLAN_WRITER
    else:
        model = load_chat_model(writer, threads=threads) if writer and format != "trajectory" else None
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task("writing memories", total=None)
        bank = build_bank(trajectories, out, model, fmt=format, include_failures=include_failures,  # type: ignore[arg-type]
                          per_game=per_game, max_entries=max_entries, embedder=embedder, copy_policy=copy_policy,
                          transcripts=transcripts,
                          on_progress=lambda done, total: progress.update(bar, completed=done, total=total))
    m = bank.manifest
    copies = m.get("writer_copies", {})
    console.print(f"bank {out}: {m['n_entries']} memories, {m['size_bytes'] / 1e6:.2f} MB, retrieval "
                  f"{m['retrieval']} ({m['embedder'] or 'bm25'}), per type {m['per_type']}, "
                  f"{len(m['source_floor_plans'])} floor plans; {copies.get('memories', 0)} copied the writer "
                  f"prompt ({copies.get('rejected', 0)} rejected)")


@app.command("add")
def add_command(
    bank: Annotated[Path, typer.Argument(help="Bank folder to add to (a shipped student's, e.g. "
                                              "adapters/smollm2-135m-duomem/bank, or any other).")],
    trajectories: Annotated[Path, typer.Option(help="demonstrations.jsonl (or trajectories.jsonl) from `duomem "
                                                    "collect` with the new kind of task.")],
    writer: Annotated[str | None, typer.Option(help="Writer model, or `plan` (the teacher's own plan, no model). "
                                                    "Not needed for a bank of --format trajectory.")] = None,
    task_types: Annotated[str | None, typer.Option(help="Comma-separated: only memories of these task types "
                                                        "(default: every trajectory's).")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads for the writer.")] = None,
    copy_policy: Annotated[CopyPolicy, typer.Option(help="As for `duomem memory build`.")] = "strip",
    transcripts: Annotated[bool, typer.Option(help=TRANSCRIPTS_HELP)] = False,
) -> None:
    """Add memories of new tasks to a bank, in its own format and retrieval; a shipped student's manifest gets the
    bank's new hash (no retraining: the student reads the new memories at once)."""
    from duomem.eval.students import MANIFEST, record_bank_change
    from duomem.llm import load_chat_model
    from duomem.memory.bank import MemoryBank
    from duomem.memory.build import add_memories
    from duomem.memory.writer import PLAN_WRITER

    fmt = MemoryBank.load(bank).manifest.get("memory_format", "both")
    if fmt != "trajectory" and not writer:
        raise ConfigError(f"--writer is required: bank {bank} shows {fmt} memories (a model, or {PLAN_WRITER})")
    model = PLAN_WRITER if writer == PLAN_WRITER else \
        (load_chat_model(writer, threads=threads) if writer and fmt != "trajectory" else None)
    types = comma_list(task_types) if task_types else None
    update = add_memories(bank, trajectories, model, task_types=types, copy_policy=copy_policy,
                          transcripts=transcripts)
    console.print(f"bank {bank}: {update['memories_added']} memories added ({update['per_type']}), "
                  f"{update['bytes_added'] / 1e3:+.1f} kB")
    student = Path(bank).resolve().parent
    if (student / MANIFEST).is_file() and json.loads((student / MANIFEST).read_text()).get("bank") == Path(bank).name:
        s = record_bank_change(student)
        console.print(f"student {s.name}: manifest updated with the bank's new hash")


@app.command("search")
def search_command(
    bank: Annotated[Path, typer.Argument(help="Bank folder.")],
    query: Annotated[str, typer.Argument(help="A task description.")],
    k: Annotated[int, typer.Option("-k", help="How many.")] = 4,
    task_type: Annotated[str | None, typer.Option(help="Only memories of this task type (same_type retrieval).")]
    = None,
    format: Annotated[MemoryFormat | None, typer.Option("--format", help="How memories are shown (default: the "
                                                                         "bank's).")] = None,
) -> None:
    """Print what the agent would retrieve for a task description."""
    from duomem.memory.bank import MemoryBank

    b = MemoryBank.load(bank)
    fmt = format or b.manifest.get("memory_format", "both")
    for rank, (entry, score) in enumerate(b.search(query, k, task_type=task_type), start=1):
        console.rule(f"{rank}. {entry.id}  {entry.task_type}  score {score:.3f}")
        console.print(entry.text(fmt), highlight=False)


@app.command("overlap")
def overlap_command(
    bank: Annotated[Path, typer.Argument(help="Bank folder.")],
    split: Annotated[str, typer.Option(help="Split of the tasks to compare with.")] = "valid_unseen",
    tasks: Annotated[Path | None, typer.Option(help="Task set folder (default: the prepared ALFWorld sets).")] = None,
) -> None:
    """Games, task folders and floor plans that the bank's memories share with a split (leakage check)."""
    from duomem.envs.alfworld_data import load_tasks
    from duomem.memory.bank import bank_overlap

    console.print_json(json.dumps(bank_overlap(bank, load_tasks(split, tasks))))


@app.command("info")
def info_command(bank: Annotated[Path, typer.Argument(help="Bank folder.")]) -> None:
    """Size, entries and provenance of a bank."""
    from duomem.memory.bank import MemoryBank

    console.print_json(json.dumps(MemoryBank.load(bank).manifest))
