"""How far a test-set number can be trusted (NumPy + scipy): 95% intervals of accuracy (Wilson), of loss and
ECE (seeded bootstrap), and the paired comparison of two models on the same test images: the accuracy
difference with Newcombe's interval, the exact McNemar test, Holm's adjustment over several pairs, a verdict.

Why these methods (see docs/comparing.md):
- Wilson's score interval for an accuracy: near-nominal coverage even close to 100% accuracy and for small
  test sets, where the textbook Wald interval undercovers and collapses to [1, 1] when every image is right;
  Clopper-Pearson is wider than it needs to be (Brown, Cai & DasGupta 2001). It is closed-form, so the
  same counts give the same bytes on any machine.
- Newcombe's square-and-add interval for the paired difference (Newcombe 1998, paired method 10, as in
  Fagerland, Lydersen & Laake 2014): Wilson intervals of both accuracies combined with the correlation of
  the pairs; closed-form, inside [-1, 1], and not empty when no image differs (a paired bootstrap then
  collapses to [0, 0]).
- The exact McNemar test (Dietterich 1998): only the images exactly one model gets right carry
  information; under "equally good" each is the first model's with probability 1/2, a binomial test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import binomtest, norm

from pipeline.metrics import calibration_bins, expected_calibration_error

CONFIDENCE = 0.95  # of every interval
ALPHA = 0.05  # a difference is detectable when the test's p-value is below this
BOOTSTRAP_ROUNDS = 1000  # resamples of the test set for the loss and ECE intervals
BOOTSTRAP_SEED = 0  # fixed, so the same predictions give the same interval bytes on a rerun


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    def as_dict(self, method: str) -> dict[str, float | str]:
        return {**asdict(self), "method": method}

    def format(self, digits: int = 4, sign: bool = False) -> str:
        """'0.9680 [0.9558, 0.9770]' (sign: '+0.0150 [-0.0012, +0.0313]')."""
        spec = f"{'+' if sign else ''}.{digits}f"
        return f"{self.estimate:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"


def wilson(successes: int, trials: int, confidence: float = CONFIDENCE) -> Interval:
    """successes / trials with Wilson's score interval (trials >= 1): the p whose score test
    |successes/trials - p| / sqrt(p (1 - p) / trials) stays within z, in closed form."""
    if trials < 1:
        raise ValueError(f"a proportion of {trials} trials has no interval")
    p, z2 = successes / trials, float(norm.ppf((1 + confidence) / 2)) ** 2
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = np.sqrt(z2 * p * (1 - p) / trials + z2 * z2 / (4 * trials * trials)) / (1 + z2 / trials)
    return Interval(p, max(0.0, float(centre - half)), min(1.0, float(centre + half)))


def bootstrap_loss_ece(losses: np.ndarray, confidence: np.ndarray, correct: np.ndarray, bins: int, *,
                       rounds: int = BOOTSTRAP_ROUNDS, seed: int = BOOTSTRAP_SEED,
                       level: float = CONFIDENCE) -> tuple[tuple[float, float], tuple[float, float]]:
    """Percentile-bootstrap (low, high) of the mean loss and of the ECE, resampling the N test images.

    losses: float (N,) per-image cross-entropy; confidence: (N,) top probability; correct: bool (N,).
    ECE is biased upward on small samples, so its resamples sit above the test set's own ECE and the
    interval may lie mostly above it: a known property of the statistic, said in docs/comparing.md.
    """
    n = len(losses)
    rng = np.random.default_rng(seed)
    loss_draws, ece_draws = np.empty(rounds), np.empty(rounds)
    for r in range(rounds):
        rows = rng.integers(0, n, n)  # (N,) one resample, with replacement
        loss_draws[r] = losses[rows].mean(dtype=np.float64)
        ece_draws[r] = expected_calibration_error(calibration_bins(confidence[rows], correct[rows], bins))
    tails = [(1 - level) / 2, (1 + level) / 2]
    loss_low, loss_high = np.quantile(loss_draws, tails)
    ece_low, ece_high = np.quantile(ece_draws, tails)
    return (float(loss_low), float(loss_high)), (float(ece_low), float(ece_high))


@dataclass(frozen=True)
class Paired:
    """Two models' outcomes on the same N test images: a 2 x 2 table of counts."""

    both: int  # images both got right
    first_only: int  # right by the first model only
    second_only: int  # right by the second model only
    neither: int

    @classmethod
    def of(cls, first: np.ndarray, second: np.ndarray) -> Paired:
        """From bool (N,) arrays: which images each model got right, in the same order."""
        if first.shape != second.shape:
            raise ValueError(f"paired outcomes of {first.shape} and {second.shape} images")
        return cls(int(np.sum(first & second)), int(np.sum(first & ~second)), int(np.sum(~first & second)),
                   int(np.sum(~first & ~second)))

    @property
    def n(self) -> int:
        return self.both + self.first_only + self.second_only + self.neither


def newcombe_paired(table: Paired, confidence: float = CONFIDENCE) -> Interval:
    """accuracy(first) - accuracy(second) with Newcombe's square-and-add interval for paired data."""
    n, a, b, c, d = table.n, table.both, table.first_only, table.second_only, table.neither
    p1, p2 = (a + b) / n, (a + c) / n
    w1, w2 = wilson(a + b, n, confidence), wilson(a + c, n, confidence)
    # phi: the correlation of the two outcomes, shrunk towards 0 as Newcombe's method 10 prescribes
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    cross = a * d - b * c
    phi = 0.0 if margins == 0 else (cross - n / 2 if cross > n / 2 else min(cross, 0)) / np.sqrt(float(margins))
    below = np.sqrt(max((p1 - w1.low) ** 2 - 2 * phi * (p1 - w1.low) * (w2.high - p2) + (w2.high - p2) ** 2, 0.0))
    above = np.sqrt(max((p2 - w2.low) ** 2 - 2 * phi * (p2 - w2.low) * (w1.high - p1) + (w1.high - p1) ** 2, 0.0))
    return Interval(p1 - p2, float(p1 - p2 - below), float(p1 - p2 + above))


def mcnemar_exact(first_only: int, second_only: int) -> float:
    """Two-sided exact McNemar p-value: under "equally good" the discordant images split as Binomial(b + c,
    1/2); 1.0 when there are none."""
    discordant = first_only + second_only
    return 1.0 if discordant == 0 else float(binomtest(first_only, discordant, 0.5).pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: family-wise error at most ALPHA over all the pairs tested together."""
    order = np.argsort(pvalues, kind="stable")
    adjusted, running = np.empty(len(pvalues)), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[index]))
        adjusted[index] = running
    return adjusted.tolist()


def verdict(difference: float, p: float, alpha: float = ALPHA) -> str:
    """Words for "is the second model better than the first?", from the difference and its test."""
    if p >= alpha or difference == 0:
        return f"no detectable difference at {alpha:.0%}"
    return "better" if difference > 0 else "worse"


@dataclass(frozen=True)
class Comparison:
    """Model B against model A on the same test images: B - A, with its interval and test."""

    a: Interval  # accuracy of A, Wilson interval
    b: Interval
    difference: Interval  # accuracy(B) - accuracy(A), Newcombe's paired interval
    table: Paired  # first: B, second: A
    p: float  # exact McNemar

    @property
    def verdict(self) -> str:
        return verdict(self.difference.estimate, self.p)


def compare(correct_a: np.ndarray, correct_b: np.ndarray) -> Comparison:
    """B against A from bool (N,) arrays of which test images each got right (the same images, in order)."""
    table = Paired.of(correct_b, correct_a)
    n = table.n
    return Comparison(a=wilson(table.both + table.second_only, n), b=wilson(table.both + table.first_only, n),
                      difference=newcombe_paired(table), table=table,
                      p=mcnemar_exact(table.first_only, table.second_only))
