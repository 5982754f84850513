"""Intervals and tests behind every success rate and comparison: Wilson, exact McNemar, paired bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from duomem.eval.stats import compare, gap_closed, mcnemar_exact, paired_bootstrap, wilson

pytestmark = pytest.mark.fast


@pytest.mark.parametrize(("won", "n", "low", "high"), [
    (31, 134, 0.16804, 0.30962),  # plain LoRA on valid_unseen: 23.1 [16.8, 31.0]
    (81, 263, 0.25529, 0.36621),  # Newcombe (1998), Stat Med 17:857, table I, method 3
    (15, 148, 0.06239, 0.16049),  # idem
    (1, 29, 0.00611, 0.17176),    # idem
    (0, 20, 0.0, 0.16113),        # idem: no success still has an upper bound
    (132, 134, 0.94722, 0.99590),
])
def test_wilson_interval_known_values(won: int, n: int, low: float, high: float):
    assert wilson(won, n) == pytest.approx((low, high), abs=5e-6)


def test_wilson_ends_and_nothing_played():
    assert wilson(0, 134)[0] == 0.0 and wilson(134, 134)[1] == 1.0
    assert wilson(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(("a_only", "b_only", "p"), [
    (6, 21, 0.0059246),   # DuoMem against plain LoRA on valid_unseen: 2 * P(X <= 6), X ~ Bin(27, 1/2)
    (21, 6, 0.0059246),   # two-sided: symmetric
    (9, 14, 0.4048729),   # LoRA + own memory against plain LoRA
    (16, 0, 2 / 2**16),
    (0, 5, 0.0625),
    (3, 3, 1.0),
    (0, 0, 1.0),
])
def test_exact_mcnemar_known_values(a_only: int, b_only: int, p: float):
    assert mcnemar_exact(a_only, b_only) == pytest.approx(p, rel=1e-5)


def test_bootstrap_percentile_interval():
    # two games, one won: a resampled mean is 0, 1/2 or 1 with chances 1/4, 1/2, 1/4, so the 95% interval is [0, 1]
    assert paired_bootstrap([[1, 0]], lambda m: m[0]) == (0.0, 1.0)
    # a large sample: close to the normal approximation of 31/134 (sd 0.0364), and the same for the same seed
    won = [1.0] * 31 + [0.0] * 103
    low, high = paired_bootstrap([won], lambda m: m[0], seed=3)
    assert low == pytest.approx(0.2313 - 1.96 * 0.0364, abs=0.01) and high == pytest.approx(0.2313 + 1.96 * 0.0364,
                                                                                             abs=0.01)
    assert paired_bootstrap([won], lambda m: m[0], seed=3) == (low, high)
    assert paired_bootstrap([[]], lambda m: m[0]) is None


def test_bootstrap_is_paired():
    # two rows that win the same games: every resample gives them the same mean, so the difference is exactly 0
    same = [1, 0, 1, 1, 0, 0, 1, 0]
    assert paired_bootstrap([same, same], lambda m: m[0] - m[1]) == (0.0, 0.0)
    # A wins every game B wins plus two more: the difference is never negative
    a, b = [1, 1, 1, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0]
    low, high = paired_bootstrap([a, b], lambda m: m[0] - m[1])
    assert 0.0 <= low < 0.25 < high <= 1.0


def test_gap_closed_statistic_and_undefined_resamples():
    means = np.array([[0.5, 0.2], [0.0, 0.2], [1.0, 0.2]])  # row, base, top for two resamples
    out = gap_closed(means)
    assert out[0] == 0.5 and np.isnan(out[1])
    # DuoMem 16, no memory 0, teacher 132 of 134: 12.1% with resamples where teacher = no memory dropped
    duo, base, top = [1.0] * 16 + [0.0] * 118, [0.0] * 134, [1.0] * 132 + [0.0] * 2
    low, high = paired_bootstrap([duo, base, top], gap_closed)
    assert low < 16 / 132 < high and high - low < 0.15


def test_compare_counts_discordant_games_on_shared_games_only():
    a = {"g1": True, "g2": True, "g3": False, "g4": False, "only_a": True}
    b = {"g1": True, "g2": False, "g3": True, "g4": False, "only_b": False}
    c = compare(a, b)
    assert (c["n_games"], c["won_a"], c["won_b"], c["a_only"], c["b_only"]) == (4, 2, 2, 1, 1)
    assert c["p_value"] == 1.0 and c["difference"] == 0.0
    low, high = c["difference_ci95"]
    assert -0.75 <= low < 0 < high <= 0.75
