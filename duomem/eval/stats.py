"""Uncertainty of success rates: Wilson intervals, exact McNemar tests and a paired bootstrap over games.

Every evaluation row plays the same games, so two rows are compared game by game: McNemar's test uses only the
games one row wins and the other loses, and the bootstrap resamples whole games (all rows together)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

Z95 = 1.959963984540054
"""The standard normal quantile of a two-sided 95% interval."""


def wilson(won: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a success rate ``won / n`` (95% by default); (0, 1) when nothing was played."""
    if n <= 0:
        return 0.0, 1.0
    p = won / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    low = 0.0 if won == 0 else max(0.0, centre - half)  # exact ends where rounding would leave a hair off
    high = 1.0 if won == n else min(1.0, centre + half)
    return low, high


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: the binomial test of the discordant games (``a_only`` won only by A,
    ``b_only`` only by B) against an even split. 1.0 when there are no discordant games."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(a_only, b_only) + 1))
    return min(1.0, 2 * tail / 2**n)


def paired_bootstrap(columns: Sequence[Sequence[float]], statistic: Callable[[np.ndarray], np.ndarray],
                     n_resamples: int = 10_000, seed: int = 0, level: float = 0.95) -> tuple[float, float] | None:
    """Percentile interval of ``statistic`` under resampling of games with replacement.

    ``columns`` holds one outcome per game for each row, all rows over the same games in the same order; a
    resample draws games, so every row keeps its outcome on each drawn game (paired). ``statistic`` maps the
    rows' mean outcomes, an array of shape (rows, resamples), to one value per resample (NaN where it is
    undefined; those resamples are dropped). None when no resample gives a value."""
    data = np.asarray(columns, dtype=float)
    n = data.shape[1]
    if n == 0:
        return None
    games = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    means = data[:, games].mean(axis=2)
    values = np.asarray(statistic(means), dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def gap_closed(means: np.ndarray) -> np.ndarray:
    """(row - base) / (top - base) for rows of means ``[row, base, top]``; NaN where top equals base."""
    row, base, top = means
    span = top - base
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(span != 0, (row - base) / np.where(span != 0, span, 1), np.nan)


def compare(a: Mapping[str, bool], b: Mapping[str, bool], seed: int = 0, n_resamples: int = 10_000) -> dict:
    """Row A against row B on the games both played (keys: game ids): wins of each, the games won by one side
    only, the exact McNemar p-value and the difference in success (A - B) with a paired bootstrap interval."""
    games = sorted(a.keys() & b.keys())
    won_a = [float(a[g]) for g in games]
    won_b = [float(b[g]) for g in games]
    a_only = sum(x > y for x, y in zip(won_a, won_b, strict=True))
    b_only = sum(y > x for x, y in zip(won_a, won_b, strict=True))
    n = len(games)
    ci = paired_bootstrap([won_a, won_b], lambda m: m[0] - m[1], n_resamples, seed)
    return {
        "n_games": n,
        "won_a": int(sum(won_a)),
        "won_b": int(sum(won_b)),
        "a_only": a_only,
        "b_only": b_only,
        "p_value": mcnemar_exact(a_only, b_only),
        "difference": (sum(won_a) - sum(won_b)) / n if n else None,
        "difference_ci95": list(ci) if ci else None,
    }
