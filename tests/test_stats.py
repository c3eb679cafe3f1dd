"""The statistics of pipeline/stats.py, each held to an implementation that does not share its code: the
Wilson interval to scipy's and to its defining score equation, the exact McNemar p-value to an
enumeration of the binomial in exact fractions, Newcombe's paired interval to a published example and to
its coverage on simulated test sets, Holm's adjustment to the step-down procedure, the bootstrap to the
normal approximation of a mean. Edge cases: no discordant pairs, every image right, a single image."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy.stats import binomtest, norm

from pipeline.metrics import calibration_bins, expected_calibration_error
from pipeline.stats import (Interval, Paired, bootstrap_loss_ece, compare, holm, mcnemar_exact, newcombe_paired,
                            verdict, wilson)

Z = norm.ppf(0.975)
CASES = [(k, n) for n in (1, 2, 7, 100, 1000, 10000) for k in sorted({0, 1, n // 2, n - 1, n}) if 0 <= k <= n]


@pytest.mark.parametrize(("k", "n"), CASES)
def test_wilson_matches_scipy_and_score_equation(k: int, n: int) -> None:
    found = wilson(k, n)
    scipy_ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert found.estimate == k / n
    assert found.low == pytest.approx(scipy_ci.low, abs=1e-12) and found.high == pytest.approx(scipy_ci.high, abs=1e-12)
    for bound in (found.low, found.high):  # each bound p solves |k/n - p| = z sqrt(p (1 - p) / n) ...
        if 0 < bound < 1:
            assert abs(k / n - bound) == pytest.approx(Z * math.sqrt(bound * (1 - bound) / n), rel=1e-9)
    if k == n:  # ... except at the edge: every image right pins the top at 1, the bottom stays below
        assert found.high == 1.0 and found.low < 1


def test_wilson_one_image_and_none() -> None:
    assert wilson(1, 1).low == pytest.approx(1 / (1 + Z**2))  # the closed form at n = k = 1: 0.2065
    assert wilson(0, 1).high == pytest.approx(Z**2 / (1 + Z**2))
    with pytest.raises(ValueError, match="0 trials"):
        wilson(0, 0)


def mcnemar_by_enumeration(b: int, c: int) -> float:
    """Exact two-sided McNemar p: twice the smaller binomial(b + c, 1/2) tail, as a fraction, capped at 1."""
    n = b + c
    tail = sum(Fraction(math.comb(n, i), 2**n) for i in range(min(b, c) + 1))
    return float(min(Fraction(1), 2 * tail))


@pytest.mark.parametrize(("b", "c"), [(0, 0), (0, 1), (1, 0), (1, 1), (0, 5), (5, 0), (3, 9), (6, 16), (10, 10),
                                      (25, 40), (120, 80), (0, 300), (499, 501)])
def test_mcnemar_matches_enumeration(b: int, c: int) -> None:
    assert mcnemar_exact(b, c) == pytest.approx(mcnemar_by_enumeration(b, c), rel=1e-9, abs=1e-300)


def test_mcnemar_random_tables() -> None:
    rng = np.random.default_rng(0)
    for b, c in rng.integers(0, 60, size=(40, 2)):
        assert mcnemar_exact(int(b), int(c)) == pytest.approx(mcnemar_by_enumeration(int(b), int(c)), rel=1e-9)


def test_no_discordant_pairs() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    table = Paired(both=900, first_only=0, second_only=0, neither=100)
    interval = newcombe_paired(table)
    assert interval.estimate == 0 and interval.low < 0 < interval.high  # not the empty [0, 0] of a bootstrap
    assert interval.low == pytest.approx(-interval.high)
    assert verdict(interval.estimate, 1.0) == "no detectable difference at 5%"


def test_newcombe_published_example() -> None:
    """Fagerland, Lydersen & Laake, Statistical Analysis of Contingency Tables (2017), chapter 8: complete
    response before and after consolidation therapy (Cavo et al. 2012), table [[59, 6], [16, 80]]; the
    Newcombe square-and-add interval is -0.0621 (-0.1186 to -0.0046)."""
    found = newcombe_paired(Paired(59, 6, 16, 80))
    assert (round(found.estimate, 4), round(found.low, 4), round(found.high, 4)) == (-0.0621, -0.1186, -0.0046)


def test_newcombe_symmetry_and_range() -> None:
    rng = np.random.default_rng(1)
    for counts in rng.integers(0, 40, size=(60, 4)):
        a, b, c, d = map(int, counts)
        if a + b + c + d == 0:
            continue
        forward, backward = newcombe_paired(Paired(a, b, c, d)), newcombe_paired(Paired(a, c, b, d))
        assert forward.low == pytest.approx(-backward.high) and forward.high == pytest.approx(-backward.low)
        assert -1 - 1e-12 <= forward.low <= forward.estimate <= forward.high <= 1 + 1e-12


@pytest.mark.parametrize(("table", "difference"), [
    (Paired(1, 0, 0, 0), 0.0), (Paired(0, 1, 0, 0), 1.0), (Paired(0, 0, 1, 0), -1.0), (Paired(0, 0, 0, 1), 0.0)])
def test_one_image(table: Paired, difference: float) -> None:
    interval = newcombe_paired(table)
    assert interval.estimate == difference and -1 <= interval.low <= difference <= interval.high <= 1
    assert interval.high - interval.low > 0.5  # one image says little
    assert mcnemar_exact(table.first_only, table.second_only) == 1.0  # one discordant image: p = 2 * 1/2


def test_every_image_right_by_both() -> None:
    right = np.ones(500, bool)
    found = compare(right, right)
    assert found.a.estimate == found.b.estimate == 1.0 and found.a.high == pytest.approx(1.0)
    assert found.p == 1.0 and found.verdict == "no detectable difference at 5%"
    assert found.difference.low < 0 < found.difference.high


@pytest.mark.parametrize(("n", "both", "first_only", "second_only", "most"), [
    (1000, 0.94, 0.03, 0.01, 0.975),  # two good models, a real 2-point gap
    (1000, 0.95, 0.02, 0.02, 0.975),  # equally good
    (200, 0.70, 0.10, 0.05, 0.975),
    (500, 0.97, 0.005, 0.0, 1.0),  # near the ceiling, one model never beats the other: conservative there
])
def test_newcombe_coverage(n: int, both: float, first_only: float, second_only: float, most: float) -> None:
    """Over 2,000 simulated test sets the 95% interval holds the true difference about 95% of the time, and
    misses it about equally often on each side (a wrong sign of phi or a swapped bound breaks both)."""
    rng = np.random.default_rng(2)
    probabilities = [both, first_only, second_only, 1 - both - first_only - second_only]
    truth = first_only - second_only
    intervals = [newcombe_paired(Paired(*map(int, t))) for t in rng.multinomial(n, probabilities, size=2000)]
    covered = np.mean([i.low <= truth <= i.high for i in intervals])
    assert 0.935 <= covered <= most, covered
    assert max(np.mean([i.low > truth for i in intervals]), np.mean([i.high < truth for i in intervals])) < 0.04


def holm_step_down(pvalues: list[float], alpha: float) -> set[int]:
    """Holm (1979): reject the k-th smallest p while p_(k) <= alpha / (m - k + 1); stop at the first that fails."""
    rejected = set()
    for rank, index in enumerate(sorted(range(len(pvalues)), key=lambda i: pvalues[i])):
        if pvalues[index] > alpha / (len(pvalues) - rank):
            break
        rejected.add(index)
    return rejected


def test_holm_matches_step_down() -> None:
    rng = np.random.default_rng(3)
    for size in (1, 2, 3, 6, 10):
        for _ in range(50):
            pvalues = (rng.random(size) ** 3).tolist()
            adjusted = holm(pvalues)
            for alpha in (0.01, 0.05, 0.1, 0.3):
                assert {i for i, p in enumerate(adjusted) if p <= alpha} == holm_step_down(pvalues, alpha)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_bootstrap_of_a_mean_matches_the_normal_interval() -> None:
    rng = np.random.default_rng(4)
    losses = rng.exponential(0.2, 4000).astype(np.float32)
    confidence, correct = rng.uniform(0.5, 1.0, 4000), rng.random(4000) < 0.9
    (low, high), (ece_low, ece_high) = bootstrap_loss_ece(losses, confidence, correct, bins=15)
    half = Z * losses.std(ddof=1) / math.sqrt(len(losses))
    assert low == pytest.approx(losses.mean() - half, abs=0.15 * half)
    assert high == pytest.approx(losses.mean() + half, abs=0.15 * half)
    assert bootstrap_loss_ece(losses, confidence, correct, bins=15) == ((low, high), (ece_low, ece_high))  # seeded
    ece = expected_calibration_error(calibration_bins(confidence, correct, 15))
    assert ece_low < ece < ece_high


def test_bootstrap_of_a_constant() -> None:
    losses = np.full(50, 0.25, np.float32)
    confidence, correct = np.full(50, 0.8), np.ones(50, bool)
    (low, high), (ece_low, ece_high) = bootstrap_loss_ece(losses, confidence, correct, bins=10)
    assert low == high == pytest.approx(0.25) and ece_low == ece_high == pytest.approx(0.2)


def test_compare_counts_and_verdicts() -> None:
    rng = np.random.default_rng(5)
    a = rng.random(1000) < 0.90
    b = a.copy()
    b[np.flatnonzero(~a)[:40]] = True  # B also gets 40 of A's mistakes right
    found = compare(a, b)
    assert (found.table.first_only, found.table.second_only) == (40, 0)  # first: B
    assert found.difference.estimate == pytest.approx(0.04) and found.verdict == "better"
    assert compare(b, a).verdict == "worse" and compare(b, a).difference.low == pytest.approx(-found.difference.high)
    assert found.p == pytest.approx(mcnemar_by_enumeration(40, 0))
    assert Interval(0.5, 0.25, 0.75).format(2, sign=True) == "+0.50 [+0.25, +0.75]"
