"""Durable files: append-only JSONL that survives a kill, and atomic whole-file writes.

A finished JSONL file may be stored packed, gzipped beside its name (``episodes.jsonl.gz``; :func:`pack_jsonl`):
that is how run records are committed (they compress about 25x). Every reader here takes either form, and
appending to a packed file (resuming a committed run) unpacks it first, so a folder never holds both.
"""

from __future__ import annotations

import gzip
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


PACKED = ".gz"


def packed_path(path: Path) -> Path:
    """Where ``path`` is stored packed: ``episodes.jsonl`` -> ``episodes.jsonl.gz``."""
    path = Path(path)
    return path.with_name(path.name + PACKED)


def jsonl_exists(path: Path) -> bool:
    """Whether the JSONL file ``path`` exists, plain or packed."""
    return Path(path).is_file() or packed_path(path).is_file()


def _stored(path: Path) -> Path | None:
    """The file holding ``path``'s rows: the plain file, the packed one or None; both at once is an error."""
    plain, gz = Path(path), packed_path(path)
    if plain.is_file() and gz.is_file():
        raise DataError(f"{plain} and {gz.name} both exist; keep one (the packed one if the run is finished)")
    return plain if plain.is_file() else gz if gz.is_file() else None


def read_jsonl(path: Path, repair: bool = False) -> list[dict]:
    """Rows of a JSONL file, plain or packed (``path`` + ``.gz``). A last line cut short by a kill is dropped (and
    cut from a plain file if ``repair``); a broken line elsewhere is an error."""
    stored = _stored(path)
    if stored is None:
        return []
    if stored != Path(path):
        try:
            raw = gzip.decompress(stored.read_bytes())
        except (OSError, EOFError) as exc:
            raise DataError(f"{stored} is not a readable gzip file ({exc}); restore or delete it") from exc
        return _parse(raw, stored)
    return _parse(stored.read_bytes(), stored, repair)


def _parse(raw: bytes, path: Path, repair: bool = False) -> list[dict]:
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
        unpack_jsonl(self.path)
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


def pack_jsonl(path: Path) -> Path:
    """Replace the plain JSONL file ``path`` with its packed form (gzip, no timestamp: the same rows give the same
    bytes); returns the packed path. Nothing to do when it is packed already."""
    plain, gz = Path(path), packed_path(path)
    if not plain.is_file():
        if gz.is_file():
            return gz
        raise DataError(f"{plain} does not exist")
    read_jsonl(plain)  # refuse to pack a broken file
    data = gzip.compress(plain.read_bytes(), compresslevel=9, mtime=0)
    tmp = gz.with_name(f".{gz.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, gz)
    plain.unlink()
    return gz


def unpack_jsonl(path: Path) -> None:
    """Turn a packed ``path`` back into the plain file (to append to it); nothing to do when it is plain."""
    plain, gz = Path(path), packed_path(path)
    if _stored(plain) == gz:
        atomic_write_text(plain, gzip.decompress(gz.read_bytes()).decode())
        gz.unlink()
