"""The repository stays small: its whole tracked tree travels to the GPU machine (64 MiB a transfer) beside the
models, so run records are committed packed and the tree has a hard budget."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUDGET_MIB = 24
PLAIN_JSONL_LIMIT = 64 * 1024


def _tracked() -> list[tuple[int, str]]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    names = [n for n in out.decode().split("\0") if n]
    return sorted(((REPO / n).stat().st_size, n) for n in names if (REPO / n).is_file())


def test_the_tracked_tree_fits_its_budget():
    files = _tracked()
    total = sum(size for size, _ in files)
    largest = ", ".join(f"{name} ({size / 2**20:.1f} MiB)" for size, name in files[::-1][:5])
    assert total <= BUDGET_MIB * 2**20, (f"the tracked tree is {total / 2**20:.1f} MiB, over its {BUDGET_MIB} MiB "
                                         f"budget; largest: {largest}")


def test_run_records_are_committed_packed():
    plain = [n for size, n in _tracked() if n.endswith(".jsonl") and size > PLAIN_JSONL_LIMIT]
    assert not plain, (f"{len(plain)} large plain JSONL files are tracked (first: {plain[0]}); pack them with "
                       "`python benchmarks/publish.py --pack-only`")
