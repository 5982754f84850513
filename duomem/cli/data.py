"""``duomem data``: prepare the official task sets; generate new ones."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from duomem.cli import comma_list
from duomem.envs.alfworld_data import PrepareVerify
from duomem.envs.base import TASK_TYPES
from duomem.envs.generate import GenerateVerify
from duomem.errors import ConfigError

Benchmark = Literal["alfworld", "scienceworld"]

app = typer.Typer(no_args_is_help=True)
console = Console()


@app.command("prepare")
def prepare_command(
    env: Annotated[Benchmark, typer.Option(help="Which benchmark's task sets to prepare.")] = "alfworld",
    source: Annotated[Path | None, typer.Option(help="ALFWorld: folder with slim_<split>.tar.xz archives, or an "
                                                     "ALFWORLD_DATA folder holding json_2.1.1 (default: "
                                                     "$DUOMEM_ALFWORLD_ARCHIVE, then $ALFWORLD_DATA).")] = None,
    splits: Annotated[str | None, typer.Option(help="Comma-separated splits (default: train,valid_seen,valid_unseen; "
                                                    "ScienceWorld: train,dev,test).")] = None,
    verify: Annotated[PrepareVerify, typer.Option(help="ALFWorld: all: load every game once (cached); sample: 2 per "
                                                      "type; none.")] = "all",
    workers: Annotated[int, typer.Option(help="ALFWorld: processes for verification.")] = 2,
    per_task: Annotated[int | None, typer.Option(help="ScienceWorld: variations per task in each split, a seeded "
                                                      "sample (0: all; default: 10 for dev and test, the fixed "
                                                      "evaluation samples, all for train).")] = None,
    seed: Annotated[int, typer.Option(help="ScienceWorld: seed of the per-task samples.")] = 0,
    task_names: Annotated[str | None, typer.Option(help="ScienceWorld: comma-separated task names (default all "
                                                        "30, e.g. boil,find-animal).")] = None,
) -> None:
    """Prepare task sets and index them by split (index/<split>.jsonl). ALFWorld: unpack the sets, build missing
    game files, check they load (under the data root's alfworld/). ScienceWorld: sample each task's variations and
    read their goals (under the data root's scienceworld/; play with duomem eval --tasks <that folder>)."""
    if env == "scienceworld":
        _prepare_scienceworld(splits, per_task, seed, task_names)
        return
    if per_task is not None or task_names is not None:
        raise ConfigError("--per-task and --task-names are ScienceWorld's (--env scienceworld)")
    splits = splits or "train,valid_seen,valid_unseen"
    from rich.progress import Progress

    from duomem.envs.alfworld_data import prepare

    with Progress(console=console, transient=True) as progress:
        bars: dict[str, int] = {}

        def on_progress(what: str, done: int, total: int) -> None:
            if what not in bars:
                bars[what] = progress.add_task(what, total=total)
            progress.update(bars[what], completed=done)

        report = prepare(source, splits=comma_list(splits), verify=verify,
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


def _prepare_scienceworld(splits: str | None, per_task: int | None, seed: int, task_names: str | None) -> None:
    from duomem.envs.scienceworld_data import SPLITS, prepare

    chosen = comma_list(splits) if splits else list(SPLITS)
    names = comma_list(task_names) if task_names else None
    report = prepare(chosen, per_task=per_task, seed=seed, tasks=names)
    table = Table(title=f"ScienceWorld task sets in {report['root']}")
    for name in ("split", "games", "tasks", "per task", "seed"):
        table.add_column(name, justify="left" if name == "split" else "right")
    for split, info in report["splits"].items():
        table.add_row(split, str(info["games"]), str(info["tasks"]),
                      "all" if info["per_task"] is None else str(info["per_task"]), str(info["seed"]))
    console.print(table)
    console.print(f"play with: duomem eval --tasks {report['root']} --split {chosen[-1]} --policy expert",
                  highlight=False, soft_wrap=True)


def _ints(text: str | None, what: str) -> list[int] | None:
    """``"1,2,301"`` or ``"1-30,301"`` -> numbers."""
    if text is None or not text.strip():
        return None
    out: list[int] = []
    for part in comma_list(text):
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise ConfigError(f"--{what} takes numbers or ranges like 1,2,301 or 1-30, not {part!r}") from None
    return out


def _ranges(numbers: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"``."""
    parts: list[str] = []
    for x in sorted(numbers):
        if parts and x == int(parts[-1].rsplit("-", 1)[-1]) + 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{x}"
        else:
            parts.append(str(x))
    return ", ".join(parts)


@app.command("generate")
def generate_command(
    out: Annotated[Path, typer.Option(help="Folder for the new task set (json_2.1.1/, index/, generation.json).")],
    n: Annotated[int, typer.Option("--n", help="Train tasks to generate.")],
    seed: Annotated[int, typer.Option(help="Random seed: the same arguments give the same files.")] = 0,
    task_types: Annotated[str | None, typer.Option(help=f"Comma-separated, from {','.join(TASK_TYPES)} "
                                                        "(default all, taking turns).")] = None,
    scenes: Annotated[str | None, typer.Option(help="Floor plans, e.g. 1,2,301 or 1-30 (default all 120: kitchens "
                                                    "1-30, living rooms 201-230, bedrooms 301-330, bathrooms "
                                                    "401-430).")] = None,
    test_n: Annotated[int, typer.Option(help="Test tasks, on floor plans held out of training.")] = 0,
    test_scenes: Annotated[str | None, typer.Option(help="Floor plans for the test split (default: a seeded 20% "
                                                         "of each room type, removed from training).")] = None,
    verify: Annotated[GenerateVerify, typer.Option(help="expert: ALFWorld's handcoded expert must win within 50 steps; "
                                             "load: the game must load; none: no check.")] = "expert",
    workers: Annotated[int, typer.Option(help="Processes that build and check games.")] = 1,
) -> None:
    """Generate new ALFWorld-compatible tasks offline, from the floor plans shipped with the alfworld package."""
    from duomem.envs.generate import generate_tasks

    types = comma_list(task_types) if task_types else None
    report = generate_tasks(out, n=n, seed=seed, task_types=types, scenes=_ints(scenes, "scenes"), test_n=test_n,
                            test_scenes=_ints(test_scenes, "test-scenes"), verify=verify, workers=workers)
    table = Table(title=f"Generated tasks in {Path(out).expanduser().resolve()} (seed {seed}, verify {verify})")
    for name in ("split", "games", *report["task_types"], "rejected"):
        table.add_column(name, justify="left" if name == "split" else "right", min_width=len(name), no_wrap=True)
    for split, info in report["splits"].items():
        table.add_row(split, str(info["generated"]), *[str(info["per_type"].get(t, 0)) for t in report["task_types"]],
                      str(info["rejected"]))
    console.print(table)
    for split, info in report["splits"].items():
        console.print(f"{split} floor plans ({len(info['scenes'])}): {_ranges(info['scenes'])}", highlight=False)
    if report["rejected"]:
        for reason, count in report["rejections"].items():
            per_type = Counter()
            for info in report["splits"].values():
                for t, reasons in info["rejections_per_type"].items():
                    per_type[t] += reasons.get(reason, 0)
            detail = ", ".join(f"{t} {c}" for t, c in per_type.items() if c)
            example = report["rejection_examples"].get(reason, "")
            console.print(f"rejected {count}x: {reason} ({detail}; e.g. {example})", highlight=False)
    else:
        console.print("no sample was rejected")
    console.print(f"{report['seconds']}s; use the set with load_tasks(split, {str(out)!r}) or data.tasks in a "
                  "pipeline config", highlight=False)
