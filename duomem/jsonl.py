"""Durable files: append-only JSONL that survives a kill, and atomic whole-file writes.

A finished JSONL file may be stored packed beside its name: xz (``episodes.jsonl.xz``, what :func:`pack_jsonl`
writes: run records compress about 40x) or gzip (``episodes.jsonl.gz``, how records were packed before and the
shipped bank's memories still are). Every reader here takes each form, and appending to a packed file (resuming a
committed run) unpacks it first, so a folder never holds two.
"""

from __future__ import annotations

import gzip
import json
import lzma
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


PACKED = ".xz"
"""The suffix :func:`pack_jsonl` writes."""
_UNPACK = {".xz": lzma.decompress, ".gz": gzip.decompress}
"""Every packed form that is read, by suffix."""


def packed_names(name: str) -> tuple[str, ...]:
    """The names a JSONL file ``name`` may have packed: ``episodes.jsonl.xz``, ``episodes.jsonl.gz``."""
    return tuple(name + suffix for suffix in _UNPACK)


def packed_path(path: Path) -> Path:
    """Where ``path`` is stored packed: the packed file that exists, else where :func:`pack_jsonl` would write it
    (``episodes.jsonl`` -> ``episodes.jsonl.xz``)."""
    path = Path(path)
    found = [path.with_name(name) for name in packed_names(path.name) if path.with_name(name).is_file()]
    return found[0] if found else path.with_name(path.name + PACKED)


def jsonl_exists(path: Path) -> bool:
    """Whether the JSONL file ``path`` exists, plain or packed."""
    return _stored(path) is not None


def _stored(path: Path) -> Path | None:
    """The file holding ``path``'s rows: the plain file, a packed one or None; two at once is an error."""
    plain = Path(path)
    found = [f for f in (plain, *(plain.with_name(n) for n in packed_names(plain.name))) if f.is_file()]
    if len(found) > 1:
        raise DataError(f"{' and '.join(f.name for f in found)} both exist in {plain.parent}; keep one (the packed "
                        "one if the run is finished)")
    return found[0] if found else None


def _unpacked(stored: Path) -> bytes:
    try:
        return _UNPACK[stored.suffix](stored.read_bytes())
    except (OSError, EOFError, lzma.LZMAError) as exc:
        kind = "xz" if stored.suffix == ".xz" else "gzip"
        raise DataError(f"{stored} is not a readable {kind} file ({exc}); restore or delete it") from exc


def read_jsonl(path: Path, repair: bool = False) -> list[dict]:
    """Rows of a JSONL file, plain or packed (``path`` + ``.gz``). A last line cut short by a kill is dropped (and
    cut from a plain file if ``repair``); a broken line elsewhere is an error."""
    stored = _stored(path)
    if stored is None:
        return []
    if stored != Path(path):
        return _parse(_unpacked(stored), stored)
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
    """Replace the plain JSONL file ``path`` with its packed form (xz at its strongest preset; nothing in the format
    depends on the time, so the same rows give the same bytes); returns the packed path. Nothing to do when it is
    packed already (in either form)."""
    plain = Path(path)
    stored = _stored(plain)
    if stored is None:
        raise DataError(f"{plain} does not exist")
    if stored != plain:
        return stored
    read_jsonl(plain)  # refuse to pack a broken file
    out = plain.with_name(plain.name + PACKED)
    data = lzma.compress(plain.read_bytes(), format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out)
    plain.unlink()
    return out


def unpack_jsonl(path: Path) -> None:
    """Turn a packed ``path`` back into the plain file (to append to it); nothing to do when it is plain."""
    plain = Path(path)
    stored = _stored(plain)
    if stored is not None and stored != plain:
        atomic_write_text(plain, _unpacked(stored).decode())
        stored.unlink()
