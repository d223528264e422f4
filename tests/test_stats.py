"""Seed-noise statistics against scipy's own implementations."""
import math

import numpy as np
import pytest
from scipy import stats

from experiments.stats import compare, intervals_overlap, mean_ci, welch_diff


def test_mean_ci_matches_scipy_t_interval():
    values = [61.0, 64.5, 59.25, 62.0]
    mean, half = mean_ci(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert mean == pytest.approx(np.mean(values))
    assert (mean - half, mean + half) == pytest.approx((low, high))


def test_mean_ci_undefined_for_one_seed():
    mean, half = mean_ci([70.0])
    assert mean == 70.0 and math.isnan(half)


def test_welch_interval_matches_scipy():
    a, b = [71.0, 73.5, 72.25], [65.0, 69.0, 66.5, 67.75]
    diff, low, high, df = welch_diff(a, b)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert diff == pytest.approx(np.mean(a) - np.mean(b))
    assert (low, high) == pytest.approx((ci.low, ci.high))
    assert df == pytest.approx(stats.ttest_ind(a, b, equal_var=False).df)


def test_compare_flags_noise_only_when_cis_separate():
    clear = compare([80.0, 81.0, 80.5], [60.0, 61.0, 60.5])
    assert clear.exceeds_noise and clear.welch_excludes_zero and not clear.cis_overlap
    noisy = compare([60.0, 70.0, 65.0], [62.0, 68.0, 64.0])
    assert noisy.exceeds_noise is False and noisy.welch_excludes_zero is False
    single = compare([80.0], [60.0])
    assert single.exceeds_noise is None and math.isnan(single.low)


def test_intervals_overlap_edges():
    assert intervals_overlap((0.0, 1.0), (2.0, 1.0))  # touching counts as overlap
    assert not intervals_overlap((0.0, 1.0), (2.5, 1.0))
    assert intervals_overlap((0.0, float("nan")), (1.0, 1.0)) is None
