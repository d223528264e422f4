"""Seed-noise statistics for comparing configurations (top-1 over seeds).

- `mean_ci`: mean and the half-width of a Student-t confidence interval over seeds (n - 1 degrees of freedom).
- `welch_diff`: difference of two means with a Welch (unequal variances, Welch-Satterthwaite df) t interval.
- `compare`: both, plus the issue's criterion for "exceeds seed noise": the two 95 % CIs do not overlap
  (stricter than the Welch interval excluding 0). Both are reported; neither is defined for one seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as _st


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """(mean, half-width); half-width is NaN for fewer than two values."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return float("nan"), float("nan")
    mean = float(x.mean())
    if x.size < 2:
        return mean, float("nan")
    sem = float(x.std(ddof=1)) / math.sqrt(x.size)
    return mean, float(_st.t.ppf(0.5 + confidence / 2, x.size - 1)) * sem


@dataclass
class Difference:
    diff: float  # mean(a) - mean(b)
    low: float
    high: float
    df: float
    ci_a: tuple[float, float]  # (mean, half-width)
    ci_b: tuple[float, float]
    welch_excludes_zero: bool | None
    cis_overlap: bool | None

    @property
    def exceeds_noise(self) -> bool | None:
        """The issue's criterion: non-overlapping 95 % CIs (None when a CI is undefined)."""
        return None if self.cis_overlap is None else not self.cis_overlap


def welch_diff(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, float]:
    """(diff, low, high, df) of mean(a) - mean(b) with Welch's t interval; NaN bounds if a side has < 2 values."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return diff, float("nan"), float("nan"), float("nan")
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0.0:  # identical seeds on both sides: no noise to speak of
        return diff, diff, diff, float("inf")
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    half = float(_st.t.ppf(0.5 + confidence / 2, df)) * se
    return diff, diff - half, diff + half, float(df)


def intervals_overlap(ci_a: tuple[float, float], ci_b: tuple[float, float]) -> bool | None:
    (ma, ha), (mb, hb) = ci_a, ci_b
    if math.isnan(ha) or math.isnan(hb):
        return None
    return max(ma - ha, mb - hb) <= min(ma + ha, mb + hb)


def compare(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Difference:
    """Configuration `a` against reference `b` (per-seed top-1 values)."""
    diff, low, high, df = welch_diff(a, b, confidence)
    ci_a, ci_b = mean_ci(a, confidence), mean_ci(b, confidence)
    excludes = None if math.isnan(low) else bool(low > 0 or high < 0)
    return Difference(diff, low, high, df, ci_a, ci_b, excludes, intervals_overlap(ci_a, ci_b))


def chance_interval(num_classes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """(low, high) top-1 in percent that guessing one of `num_classes` classes reaches on `n` images with probability
    `confidence` (central binomial interval of Binomial(n, 1/num_classes))."""
    low, high = _st.binom.interval(confidence, n, 1.0 / num_classes)
    return 100.0 * low / n, 100.0 * high / n
