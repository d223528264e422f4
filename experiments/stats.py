"""Seed-noise statistics for comparing configurations (top-1 over seeds).

- `mean_ci`: mean and the half-width of a Student-t confidence interval over seeds (n - 1 degrees of freedom).
- `welch_diff`: difference of two means with a Welch (unequal variances, Welch-Satterthwaite df) t interval.
- `paired_diff`: the mean of per-seed differences with a paired t interval. Valid when the two arms share their
  seeds, which in this runner means they share the data order and the initial weights of every module whose name
  and shape agree (`experiments.runner.engine.build_parts`): the seed's luck then cancels in the difference.
- `compare`: all of these, and a verdict named by the rule that decided it (`VERDICT_RULES`): the two 95 % CIs
  apart (the strictest), else the paired interval excluding 0, else the largest difference the 90 % paired (or
  Welch) interval leaves possible (two one-sided tests at 5 %): "equivalent" when that bound lies within the
  equivalence margin (`EQUIVALENCE_MARGIN`), "unresolved" when it does not. An unresolved comparison also says
  how many seeds per arm would resolve it at the noise it measured (`seeds_to_resolve`).
- `repeated_looks_error`: the chance that a difference of 0 is called real at one look or another when seeds are
  added after a look (`ablate.py --resume CALL --seeds N`) and the paired test is applied after each.
- `min_detectable_difference`: the smallest true difference that k seeds per arm detect with a two-sided 5 % test
  at 80 % power, from a measured seed standard deviation (unpaired) or per-seed difference sd (paired); exact,
  from the noncentral t distribution.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as _st
from scipy.optimize import brentq


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


# Top-1 points within which two configurations count as equivalent: the default benchmark's precision target
# (reference seed sd <= 2 points, issue 19), about what 3 paired seeds resolve there (docs/results.md).
EQUIVALENCE_MARGIN = 2.0
SEEDS_LIMIT = 50  # seeds_to_resolve looks no further

# How `compare` decides, strictest first; the verdict names the rule that decided it.
VERDICT_RULES = {
    "separated": "the two 95 % CIs over seeds do not overlap",
    "paired": "the paired 95 % interval of per-seed differences excludes 0 (the CIs overlap)",
    "welch": "Welch's 95 % interval excludes 0 (the CIs overlap; the arms do not share seeds)",
    "equivalent": (f"no rule separates them and the 90 % interval lies within ±{EQUIVALENCE_MARGIN:g} points "
                   "(two one-sided tests at 5 %)"),
    "unresolved": (f"no rule separates them and the 90 % interval reaches beyond ±{EQUIVALENCE_MARGIN:g} points: "
                   "neither an effect nor an equivalence; more seeds needed"),
    "undetermined": "fewer than two seeds per arm: no interval",
}


@dataclass
class Difference:
    diff: float  # mean(a) - mean(b)
    low: float  # Welch 95 % interval
    high: float
    df: float
    ci_a: tuple[float, float]  # (mean, half-width)
    ci_b: tuple[float, float]
    welch_excludes_zero: bool | None
    cis_overlap: bool | None
    paired: tuple[float, float, float] | None = None  # (mean difference, low, high) over shared seeds, 95 %
    paired_seeds: int = 0
    verdict: str = "undetermined"  # a key of VERDICT_RULES
    bound: float = float("nan")  # with verdict "equivalent" or "unresolved": no difference larger than this (points)
    seeds_needed: int | None = None  # with verdict "unresolved": seeds per arm that would resolve it (None: > limit)

    @property
    def exceeds_noise(self) -> bool | None:
        """The strictest criterion: non-overlapping 95 % CIs (None when a CI is undefined)."""
        return None if self.cis_overlap is None else not self.cis_overlap

    @property
    def paired_excludes_zero(self) -> bool | None:
        if self.paired is None or math.isnan(self.paired[1]):
            return None
        return bool(self.paired[1] > 0 or self.paired[2] < 0)


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


def paired_diff(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean of a_i - b_i, low, high): a paired t interval over matched pairs (NaN bounds for fewer than 2)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    mean, half = mean_ci(d, confidence)
    return mean, mean - half, mean + half


def min_detectable_difference(sd: float, seeds: int, paired: bool = False, alpha: float = 0.05,
                              power: float = 0.8) -> float:
    """The smallest true difference a two-sided t test at level `alpha` detects with probability `power`.

    Unpaired: two arms of `seeds` runs each with seed standard deviation `sd` (df = 2 seeds - 2).
    Paired: `sd` is the standard deviation of per-seed differences (df = seeds - 1).
    Solved exactly on the noncentral t distribution; inf for fewer than 2 seeds.
    """
    if seeds < 2 or not sd >= 0:
        return float("inf") if seeds < 2 else float("nan")
    if sd == 0:
        return 0.0
    df = seeds - 1 if paired else 2 * seeds - 2
    se = sd / math.sqrt(seeds) if paired else sd * math.sqrt(2.0 / seeds)
    crit = float(_st.t.ppf(1 - alpha / 2, df))

    def shortfall(ncp: float) -> float:  # power at this noncentrality minus the target
        reach = float(_st.nct.sf(crit, df, ncp) + _st.nct.cdf(-crit, df, ncp))
        return (1.0 if math.isnan(reach) else reach) - power  # scipy's nct gives NaN far in the tail

    high = crit + 2.0
    while shortfall(high) < 0:
        high += 2.0
    return float(brentq(shortfall, 0.0, high, xtol=1e-10)) * se


def seeds_to_resolve(diff: float, sd: float, paired: bool, margin: float = EQUIVALENCE_MARGIN,
                     limit: int = SEEDS_LIMIT, more_than: int = 1) -> int | None:
    """Seeds per arm at which a comparison with this observed difference and noise would be resolved: the true
    difference `diff` detected (two-sided 5 %, power 0.8: `min_detectable_difference`), or, where |diff| is
    inside the margin, the expected 90 % interval |diff| + t * se within ±margin (equivalence). `sd`: the seed sd
    (unpaired, pooled degrees of freedom) or the sd of per-seed differences (paired). `more_than`: the seeds the
    comparison already has (an unresolved comparison needs more, whatever the approximation says). None when
    `limit` seeds would not do."""
    if not sd >= 0:
        return None
    for seeds in range(max(2, more_than + 1), limit + 1):
        if abs(diff) > 0 and min_detectable_difference(sd, seeds, paired=paired) <= abs(diff):
            return seeds
        df = seeds - 1 if paired else 2 * seeds - 2
        se = sd / math.sqrt(seeds) if paired else sd * math.sqrt(2.0 / seeds)
        if abs(diff) + float(_st.t.ppf(0.95, df)) * se <= margin:
            return seeds
    return None


def repeated_looks_error(seed_counts: Sequence[int], alpha: float = 0.05, simulations: int = 200_000,
                         seed: int = 0) -> float:
    """The overall false-positive rate of the paired t test at `alpha` applied once per entry of `seed_counts` to
    the first n seeds of one growing sample (a call looked at after 3 seeds, extended and looked at again after 6:
    [3, 6]), when the true difference is 0 and per-seed differences are normal: Monte Carlo with a fixed seed, so
    the figure is reproducible (its standard error is below 0.1 point at the default 200000 draws). One look gives
    `alpha`; each further look adds to it, which is why seeds chosen after seeing an unresolved result need this
    figure beside the intervals (Armitage, McPherson and Rowe, 1969, for the z test)."""
    looks = sorted({int(n) for n in seed_counts if n >= 2})
    if not looks:
        return float("nan")
    rng = np.random.default_rng(seed)
    total, squares, drawn = np.zeros(simulations), np.zeros(simulations), 0  # running sums: memory ~ one look's draws
    called = np.zeros(simulations, dtype=bool)
    for n in looks:
        more = rng.standard_normal((simulations, n - drawn))
        total += more.sum(axis=1)
        squares += (more ** 2).sum(axis=1)
        drawn = n
        mean = total / n
        sd = np.sqrt(np.maximum(squares - n * mean ** 2, 0.0) / (n - 1))
        called |= np.abs(mean) / (sd / math.sqrt(n)) > _st.t.ppf(1 - alpha / 2, n - 1)
    return float(called.mean())


def intervals_overlap(ci_a: tuple[float, float], ci_b: tuple[float, float]) -> bool | None:
    (ma, ha), (mb, hb) = ci_a, ci_b
    if math.isnan(ha) or math.isnan(hb):
        return None
    return max(ma - ha, mb - hb) <= min(ma + ha, mb + hb)


def compare(a: Sequence[float], b: Sequence[float], confidence: float = 0.95,
            seeds_a: Sequence[int] | None = None, seeds_b: Sequence[int] | None = None,
            margin: float = EQUIVALENCE_MARGIN) -> Difference:
    """Configuration `a` against reference `b` (per-seed top-1 values), with the verdict of `VERDICT_RULES`.

    seeds_a / seeds_b: the seed of each value; values of the seeds both arms share are paired.
    margin: the equivalence margin in points (an interval within ±margin is "equivalent", a wider one "unresolved").
    """
    diff, low, high, df = welch_diff(a, b, confidence)
    ci_a, ci_b = mean_ci(a, confidence), mean_ci(b, confidence)
    excludes = None if math.isnan(low) else bool(low > 0 or high < 0)
    result = Difference(diff, low, high, df, ci_a, ci_b, excludes, intervals_overlap(ci_a, ci_b))
    shared = sorted(set(seeds_a) & set(seeds_b)) if seeds_a is not None and seeds_b is not None else []
    if shared:
        by_a, by_b = dict(zip(seeds_a, a)), dict(zip(seeds_b, b))
        pa, pb = [by_a[s] for s in shared], [by_b[s] for s in shared]
        result.paired, result.paired_seeds = paired_diff(pa, pb, confidence), len(shared)
    if result.cis_overlap is None:
        return result
    if result.exceeds_noise:
        result.verdict = "separated"
    elif result.paired_excludes_zero:
        result.verdict = "paired"
    elif result.paired_seeds < 2 and excludes:  # fewer than two shared seeds: nothing to pair
        result.verdict = "welch"
    else:
        level = 1 - 2 * (1 - confidence)  # 95 % two-sided -> 90 %: two one-sided tests at 5 %
        if result.paired_seeds >= 2:
            _, lo, hi = paired_diff(pa, pb, level)
            noise, paired, have = float(np.std(np.subtract(pa, pb), ddof=1)), True, result.paired_seeds
        else:
            _, lo, hi, _ = welch_diff(a, b, level)
            noise, paired = math.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / 2), False
            have = min(len(a), len(b))
        result.bound = float(max(abs(lo), abs(hi)))
        result.verdict = "equivalent" if result.bound <= margin else "unresolved"
        if result.verdict == "unresolved":  # the difference over the seeds whose noise is `noise`
            observed = result.paired[0] if paired else result.diff
            result.seeds_needed = seeds_to_resolve(observed, noise, paired, margin, more_than=have)
    return result


def verdict_text(verdict: str, bound: float, seeds_needed: int | None) -> str:
    """The verdict as a table cell: 'equivalent (±1.2)', 'unresolved (±6.5; ~9 seeds)', or the bare name."""
    if verdict == "equivalent":
        return f"equivalent (±{bound:.1f})"
    if verdict == "unresolved":
        seeds = f"~{seeds_needed} seeds" if seeds_needed is not None else f"> {SEEDS_LIMIT} seeds"
        return f"unresolved (±{bound:.1f}; {seeds})"
    return verdict


def chance_interval(num_classes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """(low, high) top-1 in percent that guessing one of `num_classes` classes reaches on `n` images with probability
    `confidence` (central binomial interval of Binomial(n, 1/num_classes))."""
    low, high = _st.binom.interval(confidence, n, 1.0 / num_classes)
    return 100.0 * low / n, 100.0 * high / n


@dataclass
class ImageNoise:
    """What the draw of n validation images adds to a comparison of two configurations scored on the same images,
    in top-1 points (`image_noise`)."""

    per_seed: float  # sd it adds to each seed's difference: in the intervals over seeds, and shrinks with more images
    shared: float  # the part every seed shares (the images' own lean): outside the intervals; NaN for one seed
    images: int
    seeds: int


def image_noise(correct_a, correct_b) -> ImageNoise:
    """How much the choice of validation images moves the difference between configurations `a` and `b`.

    correct_a, correct_b: per-image correctness, one row per shared seed (seeds x images; a 1-D vector is one
    seed), rows in the same seed order. Each image's difference d[s, i] = a - b is -1, 0 or +1. Read as a two-way
    layout, seeds x images, one value per cell:
    - per seed: the sampling sd of a seed's mean difference over n images drawn from the same population,
      sqrt(mean over seeds of var_i(d) / n). It varies from seed to seed, so the paired interval over seeds
      already contains it; more images shrink it.
    - shared: images on which one configuration is systematically better lean every seed's difference the same
      way: an error of the call's mean difference that no interval over seeds contains and more seeds do not shrink.
      Its variance is the image effect's variance over n: (MS_images - MS_residual) / seeds / n, from the two-way
      mean squares (clipped at 0; it needs two seeds).
    """
    a, b = np.atleast_2d(np.asarray(correct_a, dtype=float)), np.atleast_2d(np.asarray(correct_b, dtype=float))
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] < 2:
        raise ValueError(f"two correctness arrays of equal shape (seeds x images, at least 2 images) expected, got "
                         f"{a.shape} and {b.shape}")
    d = a - b
    seeds, n = d.shape
    per_seed = math.sqrt(float(d.var(axis=1, ddof=1).mean()) / n)
    shared = math.nan
    if seeds >= 2:
        by_image, by_seed = d.mean(axis=0), d.mean(axis=1)
        ms_images = seeds * float(by_image.var(ddof=1))
        residual = d - by_image[None, :] - by_seed[:, None] + d.mean()
        ms_residual = float((residual ** 2).sum()) / ((n - 1) * (seeds - 1))
        shared = math.sqrt(max(0.0, ms_images - ms_residual) / seeds / n)
    return ImageNoise(100.0 * per_seed, 100.0 * shared, n, seeds)
