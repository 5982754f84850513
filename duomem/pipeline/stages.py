"""Content-keyed, resumable stages: a stage's folder is named by a hash of everything it depends on.

A finished stage holds ``DONE.json`` and is skipped on the next run; an unfinished one is entered again and its
work resumes (rollouts, memory writing and training all resume from what is on disk). Changing a setting changes
the keys of the stages that depend on it, and only those run again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from duomem.errors import ConfigError
from duomem.jsonl import atomic_write_json

DONE = "DONE.json"


def stage_key(data: object) -> str:
    """A short, stable hash of a JSON-able description of a stage's inputs."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass
class StageResult:
    name: str
    key: str
    path: Path
    info: dict
    cached: bool
    finished: bool = True
    """False only in a dry run, for a stage that has not finished (nothing was run)."""


class StageRunner:
    """Runs stages under ``<root>/stages`` and reports each on one console line. A ``dry`` runner runs nothing: an
    unfinished stage is an error, or, where the caller accepts partial work, comes back with ``finished=False``."""

    def __init__(self, root: Path, console: Console | None = None, dry: bool = False) -> None:
        self.root = Path(root)
        self.dry = dry
        self.console = console or Console()
        self.results: dict[str, StageResult] = {}
        self.executed: list[str] = []

    def run(self, name: str, inputs: dict, fn: Callable[[Path], dict], partial_ok: bool = False) -> StageResult:
        key = stage_key(inputs)
        path = self.root / "stages" / f"{name}-{key}"
        done = path / DONE
        if done.is_file():
            info = json.loads(done.read_text())["info"]
            self.console.print(f"[dim]- {name}: cached ({path})[/dim]")
            result = StageResult(name, key, path, info, cached=True)
        elif self.dry:
            if not partial_ok:
                raise ConfigError(f"stage {name} has not finished ({path}); run the pipeline without --report-only "
                                  "first")
            self.console.print(f"[dim]- {name}: not finished ({path})[/dim]")
            return StageResult(name, key, path, {}, cached=False, finished=False)
        else:
            resumed = path.is_dir()
            self.console.print(f"[bold]- {name}[/bold]{' (resuming)' if resumed else ''} -> {path}")
            path.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path / "inputs.json", inputs)
            start = time.perf_counter()
            info = fn(path)
            atomic_write_json(done, {"inputs": inputs, "info": info, "seconds": time.perf_counter() - start})
            self.executed.append(name)
            result = StageResult(name, key, path, info, cached=False)
        self.results[name] = result
        return result
