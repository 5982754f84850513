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


def _positive(name: str, default: float, kind: type = float) -> float:
    """A positive number from ``name``, or ``default`` when unset; a bad value is a one-line error."""
    from duomem.errors import ConfigError

    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        number = kind(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a number") from None
    if number <= 0:
        raise ConfigError(f"{name} must be positive, not {value}")
    return number


def batch_tokens() -> int:
    """Default token budget of one padded batched forward pass (``DUOMEM_BATCH_TOKENS``, 393216: about 20 GB of
    activations for a 135M model); lower it when several processes share a GPU."""
    return int(_positive("DUOMEM_BATCH_TOKENS", 393216, int))


def dequantised_cache(device: str) -> bool:
    """Whether a GGUF model loaded with transformers keeps its dequantised weights on disk
    (``DUOMEM_DEQUANTISED_CACHE``: ``1`` always, ``0`` never; unset: on CUDA only, where each further process then
    loads in seconds instead of minutes; on a CPU the float32 copy would take 4-8x the GGUF's disk)."""
    from duomem.errors import ConfigError

    value = os.environ.get("DUOMEM_DEQUANTISED_CACHE", "")
    if value not in ("", "0", "1"):
        raise ConfigError(f"DUOMEM_DEQUANTISED_CACHE={value!r}: use 1 (keep), 0 (never) or leave it unset")
    return value == "1" or (value == "" and device.startswith("cuda"))


def openai_key_env() -> str:
    """The name of the variable holding the OpenAI-compatible server's key (``DUOMEM_OPENAI_KEY_ENV``)."""
    return os.environ.get("DUOMEM_OPENAI_KEY_ENV") or "OPENAI_API_KEY"


def openai_api_key() -> str | None:
    """The key in the variable named by :func:`openai_key_env`, if set."""
    return os.environ.get(openai_key_env()) or None


def openai_timeout() -> float:
    """Default seconds per request to an OpenAI-compatible server (``DUOMEM_OPENAI_TIMEOUT``, 120)."""
    return _positive("DUOMEM_OPENAI_TIMEOUT", 120.0)


def openai_retries() -> int:
    """Default tries per request (``DUOMEM_OPENAI_RETRIES``, 5)."""
    return int(_positive("DUOMEM_OPENAI_RETRIES", 5, int))


def openai_backoff() -> float:
    """First retry delay in seconds, doubled per retry (``DUOMEM_OPENAI_BACKOFF``, 1.0)."""
    return _positive("DUOMEM_OPENAI_BACKOFF", 1.0)


def openai_concurrency() -> int:
    """Default requests in flight per model (``DUOMEM_OPENAI_CONCURRENCY``, 8)."""
    return int(_positive("DUOMEM_OPENAI_CONCURRENCY", 8, int))


def ray_address() -> str | None:
    """The Ray cluster to join (``RAY_ADDRESS``); None starts a local Ray instance."""
    return os.environ.get("RAY_ADDRESS") or None


def passed_to_workers() -> dict[str, str]:
    """The variables remote workers need: ``DUOMEM_*``, ``ALFWORLD_*`` and the OpenAI key variable."""
    key_var = openai_key_env()
    return {k: v for k, v in os.environ.items() if k.startswith(("DUOMEM_", "ALFWORLD_")) or k == key_var}


def distributed_rank() -> tuple[int, int]:
    """``(LOCAL_RANK, WORLD_SIZE)`` as torchrun sets them ((0, 1) outside torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def environment() -> dict[str, str]:
    """A copy of the environment, for launching child programs (torchrun)."""
    return dict(os.environ)


def quiet_hub() -> None:
    """Hide Hugging Face hub progress bars (an environment default for the hub library, set once)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


SHIPPED_STUDENTS = "adapters"
"""The folder of the shipped students: at the top of a checkout, and inside the package once installed (``setup.py``
copies the checkout's into every build)."""


def adapters_dir() -> Path:
    """Where the shipped students live: ``DUOMEM_ADAPTERS``, else the ``adapters/`` folder of this checkout, else
    the copy inside the installed package."""
    value = os.environ.get("DUOMEM_ADAPTERS")
    if value:
        return Path(value).expanduser()
    package = Path(__file__).resolve().parent
    checkout = package.parent / SHIPPED_STUDENTS
    return checkout if checkout.is_dir() else package / SHIPPED_STUDENTS
