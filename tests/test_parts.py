"""scripts/parts.py: a model moved in parts to a machine without network, checked on arrival."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "parts.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def test_split_and_join_give_back_the_same_bytes_and_catch_a_damaged_part(tmp_path: Path):
    model = tmp_path / "model.gguf"
    model.write_bytes(os.urandom(3 * 1024 * 1024 + 123))
    assert _run("split", str(model), "--out", str(tmp_path / "parts"), "--size", "1M").returncode == 0
    parts = sorted((tmp_path / "parts").glob("model.gguf.part[0-9]*"))
    assert [p.stat().st_size for p in parts] == [2**20] * 3 + [123]
    joined = _run("join", str(tmp_path / "parts"), "--out", str(tmp_path / "new" / "back.gguf"))  # folder made
    assert joined.returncode == 0 and (tmp_path / "new" / "back.gguf").read_bytes() == model.read_bytes()
    data = bytearray(parts[1].read_bytes())
    data[7] ^= 1
    parts[1].write_bytes(bytes(data))
    broken = _run("join", str(tmp_path / "parts"), "--out", str(tmp_path / "again.gguf"))
    assert broken.returncode != 0 and "part001 is damaged" in broken.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "again.gguf").exists()
    parts[1].write_bytes(model.read_bytes()[2**20:2**21])
    parts[2].unlink()
    assert "part002 is missing" in _run("join", str(tmp_path / "parts")).stderr


def test_parts_of_several_files_in_one_folder_join_by_their_manifest(tmp_path: Path):
    """Results come back from the GPU machine as the parts of several adapters in one folder."""
    files = {name: os.urandom(2 * 1024 * 1024 + 7) for name in ("lora.gguf", "duomem.gguf")}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        assert _run("split", str(tmp_path / name), "--out", str(tmp_path / "out"), "--size", "1M").returncode == 0
    ambiguous = _run("join", str(tmp_path / "out"))
    assert ambiguous.returncode != 0 and "2 manifests" in ambiguous.stderr and "name the manifest" in ambiguous.stderr
    for name, data in files.items():
        back = _run("join", str(tmp_path / "out" / f"{name}.parts.json"), "--out", str(tmp_path / "back" / name))
        assert back.returncode == 0 and (tmp_path / "back" / name).read_bytes() == data
