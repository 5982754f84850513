"""Durable files: atomic writes from several processes at once, and JSONL that survives a kill."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from duomem.errors import DataError
from duomem.jsonl import JsonlAppender, atomic_write_json, read_jsonl

pytestmark = pytest.mark.fast


def _write_many(path: str, who: int) -> None:
    for i in range(2000):
        atomic_write_json(Path(path), {"writer": who, "i": i, "pad": "x" * 2000})


def test_processes_writing_one_file_at_once_never_fail(tmp_path: Path):
    """Two training ranks write the same ``train_config.json``: neither may rename the other's temporary file
    away (the CI failure of 2026-11-25), and a reader only ever sees a whole file."""
    path = tmp_path / "train_config.json"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(str(path), who)) for who in range(2)]
    for p in procs:
        p.start()
    seen = 0
    while any(p.is_alive() for p in procs):
        if path.is_file():
            assert json.loads(path.read_text())["pad"] == "x" * 2000
            seen += 1
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0, 0]
    assert json.loads(path.read_text())["i"] == 1999
    assert not list(tmp_path.glob(".*.tmp")), "temporary files left behind"


def test_a_cut_last_line_is_dropped_and_repaired(tmp_path: Path):
    path = tmp_path / "episodes.jsonl"
    with JsonlAppender(path) as out:
        out.append({"a": 1})
        out.append({"a": 2})
    with path.open("a") as fh:
        fh.write('{"a": 3, "cut sh')  # a kill in the middle of a write
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    with JsonlAppender(path) as out:  # reopening repairs the file, then appends after the last whole line
        out.append({"a": 3})
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}, {"a": 3}]


def test_a_broken_line_inside_the_file_is_an_error(tmp_path: Path):
    path = tmp_path / "episodes.jsonl"
    path.write_text('{"a": 1}\nnot json\n{"a": 2}\n')
    with pytest.raises(DataError, match=r"episodes.jsonl:2 is not valid JSON"):
        read_jsonl(path)


def test_packed_records_read_resume_and_pack_again(tmp_path: Path):
    """Committed records are packed (xz): read as they are, unpacked when a run resumes into them, packed again to
    the same bytes; two forms at once is refused."""
    from duomem.jsonl import jsonl_exists, pack_jsonl, packed_path

    path = tmp_path / "episodes.jsonl"
    with JsonlAppender(path) as out:
        out.append({"a": 1})
    first = pack_jsonl(path).read_bytes()
    assert packed_path(path).name == "episodes.jsonl.xz"
    assert not path.exists() and jsonl_exists(path) and read_jsonl(path) == [{"a": 1}]
    with JsonlAppender(path) as out:  # a resumed run appends to the plain file
        out.append({"a": 2})
    assert path.is_file() and not packed_path(path).exists()
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    pack_jsonl(path)
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    path.write_text('{"a": 1}\n')
    with pytest.raises(DataError, match="both exist"):
        read_jsonl(path)
    path.unlink()
    assert pack_jsonl(path) == packed_path(path)  # packed already: nothing to do
    path.write_text('{"a": 1}\n')
    packed_path(path).unlink()
    assert pack_jsonl(path).read_bytes() == first  # deterministic: no timestamp inside


def test_records_packed_with_gzip_are_read_resumed_and_stay_as_they_are(tmp_path: Path):
    """Records packed before xz (gzip, ``episodes.jsonl.gz``) read and resume as they did; packing leaves them be,
    and a resumed run's records are packed as xz."""
    import gzip

    from duomem.jsonl import jsonl_exists, pack_jsonl, packed_path

    path = tmp_path / "episodes.jsonl"
    old = path.with_name("episodes.jsonl.gz")
    old.write_bytes(gzip.compress(b'{"a": 1}\n', mtime=0))
    assert jsonl_exists(path) and packed_path(path) == old and read_jsonl(path) == [{"a": 1}]
    assert pack_jsonl(path) == old and old.is_file()
    with JsonlAppender(path) as out:
        out.append({"a": 2})
    assert not old.exists() and pack_jsonl(path).name == "episodes.jsonl.xz"
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    old.write_bytes(b"")
    with pytest.raises(DataError, match=r"episodes\.jsonl\.xz and episodes\.jsonl\.gz both exist"):
        read_jsonl(path)


@pytest.mark.parametrize("suffix", [".xz", ".gz"])
def test_a_damaged_packed_file_is_one_clear_error(tmp_path: Path, suffix: str):
    path = tmp_path / "episodes.jsonl"
    path.with_name(path.name + suffix).write_bytes(b"not packed")
    kind = "xz" if suffix == ".xz" else "gzip"
    with pytest.raises(DataError, match=f"not a readable {kind} file"):
        read_jsonl(path)
