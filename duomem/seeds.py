"""Seeds derived from a run's seed: one per episode, one per turn. Sequential and batched play use the same."""

from __future__ import annotations

import zlib


def episode_seed(seed: int, game_id: str, sample: int) -> int:
    """A per-episode seed derived from the run's seed, the game and the sample index."""
    return zlib.crc32(f"{seed}:{game_id}:{sample}".encode()) & 0x7FFFFFFF


def step_seed(episode: int, turn: int) -> int:
    """The sampling seed of turn ``turn`` (0-based, thoughts included) of the episode seeded ``episode``."""
    return episode + turn
