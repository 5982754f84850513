"""Paths and defaults read from the environment, in one place."""

from __future__ import annotations

import os
from pathlib import Path


def duomem_home() -> Path:
    """Where prepared data, assembled models and caches live (``DUOMEM_HOME``, default ``~/.cache/duomem``)."""
    return Path(os.environ.get("DUOMEM_HOME", Path.home() / ".cache" / "duomem")).expanduser()


def data_root() -> Path:
    """Where ``duomem data prepare`` writes the playable task sets and their index."""
    return Path(os.environ.get("DUOMEM_DATA", duomem_home() / "data")).expanduser()


def alfworld_archive_dir() -> Path | None:
    """Folder holding the slim ALFWorld archives (``DUOMEM_ALFWORLD_ARCHIVE``), if set."""
    value = os.environ.get("DUOMEM_ALFWORLD_ARCHIVE")
    return Path(value).expanduser() if value else None


def official_alfworld_dir() -> Path | None:
    """An official ALFWorld data folder (``ALFWORLD_DATA``) if it holds ``json_2.1.1``."""
    value = os.environ.get("ALFWORLD_DATA")
    if value and (Path(value) / "json_2.1.1").is_dir():
        return Path(value)
    return None


def ensure_alfworld_cache_env() -> None:
    """Importing ``alfworld.info`` creates ``~/.cache/alfworld`` unless ALFWORLD_DATA is set: point it at our cache."""
    if "ALFWORLD_DATA" not in os.environ:
        path = duomem_home() / "alfworld-cache"
        path.mkdir(parents=True, exist_ok=True)
        os.environ["ALFWORLD_DATA"] = str(path)
