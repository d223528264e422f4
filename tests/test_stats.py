"""Seed-noise statistics against scipy's own implementations."""
import math

import numpy as np
import pytest
from scipy import stats

from experiments.stats import (EQUIVALENCE_MARGIN, compare, intervals_overlap, mean_ci, min_detectable_difference,
                               repeated_looks_error,
                               paired_diff, seeds_to_resolve, verdict_text, welch_diff)


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


def test_paired_interval_matches_scipy():
    a, b = [71.0, 73.5, 72.25, 70.0], [65.0, 69.0, 66.5, 67.75]
    diff, low, high = paired_diff(a, b)
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert diff == pytest.approx(np.mean(np.subtract(a, b)))
    assert (low, high) == pytest.approx((ci.low, ci.high))


def test_compare_pairs_only_the_shared_seeds():
    d = compare([70.0, 72.0, 71.0, 99.0], [60.0, 61.0, 62.5], seeds_a=[0, 1, 2, 7], seeds_b=[0, 1, 2])
    assert d.paired_seeds == 3
    ci = stats.ttest_rel([70.0, 72.0, 71.0], [60.0, 61.0, 62.5]).confidence_interval(0.95)
    assert d.paired[1:] == pytest.approx((ci.low, ci.high))


@pytest.mark.parametrize("paired", [False, True])
@pytest.mark.parametrize("seeds", [3, 5])
def test_min_detectable_difference_has_the_stated_power(paired, seeds):
    sd = 2.0
    delta = min_detectable_difference(sd, seeds, paired=paired)
    df = seeds - 1 if paired else 2 * seeds - 2
    se = sd / np.sqrt(seeds) if paired else sd * np.sqrt(2 / seeds)
    crit = stats.t.ppf(0.975, df)
    power = stats.nct.sf(crit, df, delta / se) + stats.nct.cdf(-crit, df, delta / se)
    assert power == pytest.approx(0.8, abs=1e-6)
    # and by simulation: t tests on normal samples with that true difference reject about 80 % of the time
    # (paired: `sd` is that of the per-seed differences, which are what the test sees)
    rng = np.random.default_rng(0)
    a = rng.normal(delta, sd, size=(20000, seeds))
    if paired:
        p = stats.ttest_1samp(a, 0.0, axis=1).pvalue
    else:
        p = stats.ttest_ind(a, rng.normal(0.0, sd, size=(20000, seeds)), axis=1).pvalue
    assert (p < 0.05).mean() == pytest.approx(0.8, abs=0.015)


def test_min_detectable_difference_edges():
    assert min_detectable_difference(2.0, 1) == float("inf")
    assert min_detectable_difference(0.0, 3) == 0.0
    assert min_detectable_difference(1.0, 10) < min_detectable_difference(1.0, 3)


def test_equivalence_bound_is_the_90_percent_interval():
    a, b = [80.5, 79.0, 81.2], [80.0, 79.4, 81.0]
    d = compare(a, b, seeds_a=[0, 1, 2], seeds_b=[0, 1, 2])
    ci = stats.ttest_rel(a, b).confidence_interval(0.90)
    assert d.verdict == "equivalent" and d.bound == pytest.approx(max(abs(ci.low), abs(ci.high)))


def test_a_wide_bound_is_unresolved_never_equivalent():
    # the stored no-dssa row (docs/results.md, 2026-12-06): a 28-point mean loss, one seed on the counting plateau
    a, b = [80.8, 47.3, 80.1], [97.4, 97.8, 98.2]
    d = compare(a, b, seeds_a=[0, 1, 2], seeds_b=[0, 1, 2])
    ci = stats.ttest_rel(a, b).confidence_interval(0.90)
    assert d.verdict == "unresolved" and d.bound == pytest.approx(max(abs(ci.low), abs(ci.high)))
    assert d.bound > EQUIVALENCE_MARGIN and d.seeds_needed is not None
    assert verdict_text(d.verdict, d.bound, d.seeds_needed) == f"unresolved (±{d.bound:.1f}; ~{d.seeds_needed} seeds)"


def test_the_margin_decides_between_equivalent_and_unresolved():
    a, b = [80.5, 79.0, 81.2], [80.0, 79.4, 81.0]
    d = compare(a, b, seeds_a=[0, 1, 2], seeds_b=[0, 1, 2])
    assert compare(a, b, seeds_a=[0, 1, 2], seeds_b=[0, 1, 2], margin=d.bound * 0.99).verdict == "unresolved"
    assert compare(a, b, seeds_a=[0, 1, 2], seeds_b=[0, 1, 2], margin=d.bound).verdict == "equivalent"


def test_seeds_to_resolve_detects_the_difference_with_the_stated_power():
    # a 5-point paired difference with per-seed difference sd 6: the first seed count whose detectable difference is
    # at most 5, checked by simulation against scipy's paired t test
    seeds = seeds_to_resolve(5.0, 6.0, paired=True, margin=0.5)
    assert min_detectable_difference(6.0, seeds, paired=True) <= 5.0 < min_detectable_difference(6.0, seeds - 1,
                                                                                                   paired=True)
    rng = np.random.default_rng(3)
    d = rng.normal(5.0, 6.0, size=(20000, seeds))
    power = (stats.ttest_1samp(d, 0.0, axis=1).pvalue < 0.05).mean()
    assert power >= 0.78


def test_seeds_to_resolve_an_equivalence_inside_the_margin():
    # no difference, sd 1 (paired): resolved when the expected 90 % half-width t(0.95, n-1) / sqrt(n) fits 2 points
    seeds = seeds_to_resolve(0.0, 1.0, paired=True, margin=2.0)
    half = lambda n: stats.t.ppf(0.95, n - 1) / math.sqrt(n)  # noqa: E731
    assert half(seeds) <= 2.0 < half(seeds - 1)
    assert seeds_to_resolve(0.0, 100.0, paired=True, margin=0.1) is None  # beyond the limit: said, not guessed


def test_an_unresolved_comparison_always_asks_for_more_seeds_than_it_has():
    # unpaired: the pooled approximation alone would say 3 seeds, which the call already has
    d = compare([10.0, 10.0, 10.0], [8.75, 10.0, 11.25])
    assert d.verdict == "unresolved" and d.seeds_needed is not None and d.seeds_needed > 3


def test_one_shared_seed_is_not_a_pairing_and_welch_decides():
    a, b = [10.0, 11.0, 12.0], [14.0, 14.5, 15.0]
    unpaired = compare(a, b)
    one_shared = compare(a, b, seeds_a=[0, 1, 2], seeds_b=[0, 5, 6])
    assert unpaired.verdict == one_shared.verdict == "welch" and one_shared.paired_seeds == 1


def test_a_partial_call_asks_for_the_seeds_its_paired_difference_needs_not_the_unpaired_means():
    """The reference's seed 2 failed: the arms' means compare different seeds (-8.3 points), the shared seeds agree
    on average (0.0). The paired noise decides the verdict, so the seeds asked for follow the paired difference."""
    d = compare([93.0, 97.0, 70.0], [95.0, 95.0], seeds_a=[0, 1, 2], seeds_b=[0, 1])
    assert d.paired_seeds == 2 and d.paired[0] == pytest.approx(0.0) and d.diff == pytest.approx(-8.33, abs=0.01)
    assert d.verdict == "unresolved"
    noise = float(np.std([93.0 - 95.0, 97.0 - 95.0], ddof=1))
    assert d.seeds_needed == seeds_to_resolve(0.0, noise, paired=True, more_than=2) == 8
    assert seeds_to_resolve(d.diff, noise, paired=True, more_than=2) == 4  # what the unpaired means would have asked


def test_repeated_looks_error_is_alpha_for_one_look_and_armitage_s_figure_for_two_equal_looks():
    """One look at the paired t test has its nominal 5 %; two looks at n and 2n seeds (large n: the t test is the z
    test) give Armitage, McPherson and Rowe's 8.3 %; every further look adds to it; one seed is no look."""
    assert repeated_looks_error([3]) == pytest.approx(0.05, abs=0.002)
    assert repeated_looks_error([60, 120]) == pytest.approx(0.083, abs=0.003)
    two, three = repeated_looks_error([3, 6]), repeated_looks_error([3, 6, 9])
    assert 0.05 + 0.01 < two < three < 0.2
    assert repeated_looks_error([1, 3]) == repeated_looks_error([3])
    assert math.isnan(repeated_looks_error([1]))


def test_the_looks_figures_quoted_in_the_docs_are_the_functions():
    """docs/ablations.md and docs/search.md quote the false-positive rate of 3 then 6 (and 3, 6, 9) seeds: it must
    be this code's."""
    from pathlib import Path

    docs = Path(__file__).resolve().parents[1] / "docs"
    text = (docs / "ablations.md").read_text()
    assert f"up to {100 * repeated_looks_error([3, 6]):.1f} % for 3 then 6 seeds" in text
    assert f"({100 * repeated_looks_error([3, 6, 9]):.1f} % for 3, 6, 9)" in text
    # and docs/search.md, for a confirmation extended from 3 to 6 seeds
    assert f"up to {100 * repeated_looks_error([3, 6]):.1f} % for 3 → 6 seeds" in (docs / "search.md").read_text()


def test_the_looks_sentence_is_said_only_after_two_looks_and_gives_the_computed_rate():
    from experiments.report import looks_sentence

    assert looks_sentence(None, 3) is None and looks_sentence([3], 3) is None
    assert looks_sentence([1, 3], 3) is None  # a one-seed report resolves nothing: it was no look
    sentence = looks_sentence([3, 6], 6)
    assert "3 → 6 seeds" in sentence and "2 looks" in sentence and "`--seed 6 --seeds 6`" in sentence
    assert f"up to {100 * repeated_looks_error([3, 6]):.1f} %" in sentence
