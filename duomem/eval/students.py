"""Shipped students: distilled adapters (and the memory bank they read) that come with duomem, each described by a
manifest, so a distilled agent can be played without collecting or training anything.

A student lives in ``<adapters>/<name>/`` (``duomem.settings.adapters_dir``): ``student.json`` (the manifest),
the GGUF LoRA it names and, for a memory row, the bank folder it names. ``duomem models list`` shows them and
``duomem eval --student NAME`` plays one exactly as its committed result was played.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from duomem import settings
from duomem.errors import ConfigError, ModelError
from duomem.eval.spec import RolloutSpec
from duomem.jsonl import atomic_write_json
from duomem.llm.registry import file_sha256

MANIFEST = "student.json"


PLAY_FIELDS = ("top_k", "shots", "fewshot", "retrieval", "memory_format", "action_selection", "max_steps", "note")
"""The run-spec settings a student's manifest records: those of the row that produced its committed result."""
StudentPlay = create_model(
    "StudentPlay", __config__=ConfigDict(extra="forbid"),
    **{name: (RolloutSpec.model_fields[name].annotation, RolloutSpec.model_fields[name]) for name in PLAY_FIELDS})
"""The settings the student is played with: the run spec's own fields (types, defaults and checks defined there)."""


class StudentResult(BaseModel):
    """The committed figure this adapter produced."""

    model_config = ConfigDict(extra="forbid")

    report: str
    """Path of the committed report (relative to the checkout)."""
    row: str
    split: str
    games: int
    won: int
    success_pct: float
    command: str


class Student(BaseModel):
    """One shipped student, as its ``student.json`` says."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str
    base_model: str
    """A packaged model name (``duomem models list``)."""
    base_sha256: str
    adapter: str
    """The GGUF LoRA file, relative to the student's folder."""
    adapter_sha256: str
    adapter_bytes: int
    bank: str | None = None
    """The memory bank folder, relative to the student's folder (None: a row without memory)."""
    bank_sha256: str | None = None
    """sha256 over the bank's files (see :func:`folder_sha256`)."""
    play: StudentPlay = Field(default_factory=StudentPlay)
    training: dict
    """Teacher, demonstrations, memory setting, LoRA config and GPU time."""
    train_floor_plans: list[int] = Field(default_factory=list)
    """Floor plans of the games the student learned from (the demo plays on others)."""
    result: StudentResult
    folder: Path = Field(Path("."), exclude=True)

    @property
    def adapter_path(self) -> Path:
        return self.folder / self.adapter

    @property
    def bank_path(self) -> Path | None:
        return self.folder / self.bank if self.bank else None

    def spec_fields(self) -> dict:
        """The ``RolloutSpec`` fields that play this student (model, adapter, bank and its play settings)."""
        fields = {"policy": "llm", "model": self.base_model, "adapter": str(self.adapter_path),
                  **self.play.model_dump()}
        if self.bank_path is not None:
            fields["memory"] = str(self.bank_path)
        else:
            fields.pop("top_k")
            fields.pop("retrieval")
            fields.pop("memory_format")
        return fields

    def verify(self) -> None:
        """Check the adapter (and bank) against the manifest's hashes; a mismatch is a one-line error."""
        if not self.adapter_path.is_file():
            raise ModelError(f"student {self.name}: adapter {self.adapter_path} is missing; restore it with git "
                             "(git checkout -- adapters/)")
        got = file_sha256(self.adapter_path)
        if got != self.adapter_sha256:
            raise ModelError(f"student {self.name}: {self.adapter_path} has sha256 {got[:12]}..., the manifest "
                             f"says {self.adapter_sha256[:12]}...; restore it with git (git checkout -- adapters/)")
        if self.bank_path is not None:
            if not self.bank_path.is_dir():
                raise ModelError(f"student {self.name}: memory bank {self.bank_path} is missing")
            if self.bank_sha256 and folder_sha256(self.bank_path) != self.bank_sha256:
                raise ModelError(f"student {self.name}: memory bank {self.bank_path} does not match its manifest "
                                 "hash; restore it with git (git checkout -- adapters/)")


def folder_sha256(folder: Path) -> str:
    """sha256 over a folder's files (names and contents, sorted by name)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + file_sha256(path).encode())
    return digest.hexdigest()


def read_student(folder: Path) -> Student:
    path = Path(folder) / MANIFEST
    try:
        data = json.loads(path.read_text())
        return Student.model_validate({**data, "folder": Path(folder)})
    except (OSError, json.JSONDecodeError, ValidationError) as exc:
        raise ConfigError(f"{path} is not a valid student manifest: {str(exc).splitlines()[0]}") from exc


@cache
def _students(root: Path) -> dict[str, Student]:
    if not root.is_dir():
        return {}
    found = [read_student(p.parent) for p in sorted(root.glob(f"*/{MANIFEST}"))]
    return {s.name: s for s in found}


def record_bank_change(folder: Path) -> Student:
    """After a student's bank changed (``duomem memory add``), write the bank's new hash into its manifest, so the
    student plays again (a bank that differs from its manifest is refused)."""
    folder = Path(folder)
    data = json.loads((folder / MANIFEST).read_text())
    if not data.get("bank"):
        raise ConfigError(f"student {data.get('name')} reads no memory bank")
    data["bank_sha256"] = folder_sha256(folder / data["bank"])
    atomic_write_json(folder / MANIFEST, data)
    _students.cache_clear()
    return read_student(folder)


def shipped_students() -> dict[str, Student]:
    """The students in the adapters folder, by name."""
    return _students(settings.adapters_dir())


def get_student(name: str) -> Student:
    """The shipped student ``name``, its files checked against its manifest."""
    students = shipped_students()
    if name not in students:
        known = ", ".join(students) or f"none in {settings.adapters_dir()}"
        raise ModelError(f"unknown student {name!r}; shipped students: {known} (duomem models list)")
    student = students[name]
    student.verify()
    return student
