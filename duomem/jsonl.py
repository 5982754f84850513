"""Durable files: append-only JSONL that survives a kill, and atomic whole-file writes."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from duomem.errors import DataError


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename, so readers never see half a file. The
    temporary file's name is unique, so processes writing the same file at once (e.g. training ranks) cannot
    rename each other's away."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_jsonl(path: Path, repair: bool = False) -> list[dict]:
    """Rows of a JSONL file. A last line cut short by a kill is dropped (and cut from the file if ``repair``);
    a broken line elsewhere is an error."""
    path = Path(path)
    if not path.is_file():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    rows: list[dict] = []
    good_bytes = 0
    for i, line in enumerate(lines):
        if not line.strip():
            good_bytes += len(line) + 1
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if i >= len(lines) - 2 and not raw.endswith(b"\n"):  # the unfinished last line
                if repair:
                    with path.open("r+b") as fh:
                        fh.truncate(good_bytes)
                break
            raise DataError(f"{path}:{i + 1} is not valid JSON ({exc.msg}); fix or delete that line") from exc
        good_bytes += len(line) + 1
    return rows


class JsonlAppender:
    """Appends one JSON object per line and flushes it to disk at once."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        read_jsonl(self.path, repair=True)
        self._fh = self.path.open("a")

    def append(self, row: dict | str) -> None:
        line = row if isinstance(row, str) else json.dumps(row)
        self._fh.write(line.rstrip("\n") + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
