"""Effective receptive field (analysis.erf, erf_tables, reach and the CLI analysis/receptive_field.py): the gradient
is the one claimed, the numbers are right on maps with known answers, and each unit's reach is what its attention
pattern allows."""
from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from analysis import erf, erf_tables, reach
from analysis import receptive_field as rf
from analysis.units import stage_units
from sepvit.config import SepViTConfig
from sepvit.model import make_block

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)

NANO = SepViTConfig.preset("sepvit_nano_32")
STAGE2 = 1  # zero-based: nano stage 2 is a 16x16 map of 4x4 windows (4 windows per side), dim 32


def _erf(unit: nn.Module, height: int, width: int, dim: int, inputs: int = 2, **kw) -> np.ndarray:
    torch.manual_seed(0)
    erf.initialise(unit).double()
    return erf.erf_map(unit, erf.random_inputs(inputs, height, width, dim, dtype=torch.float64), **kw).numpy()


# ------------------------------------------------------------------------------ the gradient itself
class ShiftMix(nn.Module):
    """y = a x + b roll(x, (1, 2)): y[i, j] = a x[i, j] + b x[i - 1, j - 2]; a known linear gradient."""

    def __init__(self, a: float, b: float):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x):
        return self.a * x + self.b * torch.roll(x, shifts=(1, 2), dims=(1, 2))


def test_gradient_is_taken_from_the_query_to_the_input_it_claims():
    x = torch.randn(3, 7, 9, 5, dtype=torch.float64)  # non-square, so a swapped axis would show
    query = (4, 6)
    mass = erf.erf_map(ShiftMix(1.0, 3.0), x, query).numpy()
    expected = np.zeros((7, 9))
    expected[4, 6], expected[3, 4] = 0.25, 0.75
    np.testing.assert_allclose(mass, expected, atol=1e-15)
    default = erf.erf_map(ShiftMix(1.0, 3.0), x).numpy()  # the centre (3, 4)
    assert default[3, 4] == pytest.approx(0.25) and default[2, 2] == pytest.approx(0.75)


def test_identity_false_drops_exactly_the_shortcut_path():
    x = torch.randn(2, 6, 6, 4, dtype=torch.float64)
    mass = erf.erf_map(ShiftMix(1.0, 3.0), x, (3, 3), identity=False).numpy()
    expected = np.zeros((6, 6))
    expected[2, 1] = 1.0
    np.testing.assert_allclose(mass, expected, atol=1e-15)


class Product(nn.Module):
    """y[i, j] = x[i, j] * x[i - 1, j]: the gradient depends on the input."""

    def forward(self, x):
        return x * torch.roll(x, shifts=1, dims=1)


def test_maps_are_averaged_over_inputs_before_normalising():
    x = torch.zeros(2, 5, 5, 3, dtype=torch.float64)
    q = (2, 2)
    x[0, 2, 2], x[0, 1, 2] = 3.0, 1.0  # |dy_q/dx_q| = |x[1,2]| = 1 per channel; |dy_q/dx[1,2]| = 3
    x[1, 2, 2], x[1, 1, 2] = 0.0, 2.0  # 2 and 0
    mass = erf.erf_map(Product(), x, q).numpy()
    assert mass[2, 2] == pytest.approx((1 + 2) / 6)
    assert mass[1, 2] == pytest.approx((3 + 0) / 6)
    assert mass.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(erf.erf_map(Product(), x, q, chunk=1), erf.erf_map(Product(), x, q, chunk=2))


def test_erf_map_refuses_bad_input():
    with pytest.raises(ValueError, match="channels-last"):
        erf.erf_map(Product(), torch.zeros(4, 4, 3))
    with pytest.raises(ValueError, match="outside"):
        erf.erf_map(Product(), torch.zeros(1, 4, 4, 3), (4, 0))
    with pytest.raises(ValueError, match="no finite gradient"):
        erf.erf_map(Product(), torch.zeros(1, 4, 4, 3))  # zero input: zero gradient


# ------------------------------------------------------------------------------ numbers per map
def test_radius_mean_distance_and_window_share_on_a_known_map():
    mass = np.zeros((8, 8))
    q = (4, 4)
    mass[4, 4], mass[4, 6], mass[1, 4] = 0.5, 0.3, 0.2  # Chebyshev distances 0, 2, 3
    stats = erf.erf_stats(mass, q, window=4)
    assert stats["radius_90"] == 3.0  # 0.8 within 2: not yet 90 %
    assert erf.radius(mass, q, 0.8) == 2.0
    assert stats["mean_distance"] == pytest.approx(0.3 * 2 + 0.2 * 3)
    assert stats["outside_window"] == pytest.approx(0.2)  # (1, 4) lies in the window above
    assert stats["self_share"] == pytest.approx(0.5)
    assert stats["reach"] == pytest.approx(3 / 64)
    euclid = erf.erf_stats(mass, q, window=4, metric="euclidean")
    assert euclid["radius_90"] == 3.0 and euclid["mean_distance"] == pytest.approx(0.6 + 0.6)
    mass[4, 4], mass[6, 6] = 0.3, 0.2  # (6, 6): Chebyshev 2, Euclidean 2.83
    assert erf.radius(mass, q, 0.8, "euclidean") == pytest.approx(math.sqrt(8))


def test_own_window_is_placed_like_the_models_windows():
    assert erf.own_window(10, 10, 4, (5, 5)) == (slice(4, 8), slice(4, 8))
    assert erf.own_window(10, 10, 4, (9, 2)) == (slice(8, 10), slice(0, 4))  # the padded last window, cropped
    assert erf.own_window(7, 7, 7, (3, 3)) == (slice(0, 7), slice(0, 7))
    assert erf.own_window(5, 6, 7, (2, 3)) == (slice(0, 5), slice(0, 6))  # smaller than a window: one window
    assert erf.centre(56, 56) == (28, 28) and erf.centre(7, 7) == (3, 3)


def test_depthwise_3x3_conv_stays_within_sqrt2():
    class DWConv(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(6, 6, 3, padding=1, groups=6)

        def forward(self, x):
            return self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    unit = DWConv().double()
    mass = erf.erf_map(unit, torch.randn(3, 9, 9, 6, dtype=torch.float64)).numpy()
    q = (4, 4)
    assert erf.erf_stats(mass, q, window=3, metric="euclidean")["radius_90"] <= math.sqrt(2) + 1e-12
    assert erf.erf_stats(mass, q, window=3)["radius_90"] <= 1
    assert mass[3:6, 3:6].sum() == pytest.approx(1.0, abs=1e-15)
    assert (mass[3:6, 3:6] > 0).all()


# ------------------------------------------------------------------------------ the compared units
def test_window_attention_alone_has_no_mass_outside_its_window():
    h = w = NANO.stage_resolution(STAGE2)
    dim = NANO.embed_dims[STAGE2]
    q = erf.centre(h, w)
    for unit in (make_block(NANO.replace(block_pattern="swin").block_spec(STAGE2, 0)),  # W-MSA, no shift
                 make_block(NANO.replace(dssa=False).block_spec(STAGE2, 0))):  # SepViT block, DSSA off
        stats = erf.erf_stats(_erf(unit, h, w, dim), q, NANO.window_size)
        assert stats["outside_window"] == 0.0
        assert stats["reach"] == pytest.approx(16 / 256)  # exactly its 4x4 window


@pytest.mark.parametrize("name", ["swin_pair", "ours_swin_pair"])
def test_swin_pair_reaches_the_shifted_window_and_no_further(name):
    h = w = NANO.stage_resolution(STAGE2)  # 16, window 4, shift 2; query (8, 8) opens window rows 8-11
    unit = stage_units(NANO, STAGE2, h, w)[name]
    mass = _erf(unit, h, w, NANO.embed_dims[STAGE2])
    reached = mass > erf.REACH_THRESHOLD * mass.max()
    expected = np.zeros((16, 16), bool)
    expected[4:12, 4:12] = True  # SW-MSA window rows 6-9 draw on W-MSA windows 4-7 and 8-11
    np.testing.assert_array_equal(reached, expected)
    assert erf.erf_stats(mass, (8, 8), 4)["outside_window"] > 1e-3


@pytest.mark.parametrize("name", ["msa_block", "ours_msa_block", "twins_pair"])
def test_global_units_put_mass_everywhere(name):
    h = w = NANO.stage_resolution(STAGE2)
    mass = _erf(stage_units(NANO, STAGE2, h, w)[name], h, w, NANO.embed_dims[STAGE2])
    assert (mass > 0).all()
    stats = erf.erf_stats(mass, erf.centre(h, w), NANO.window_size)
    assert stats["reach"] == 1.0 and stats["outside_window"] > 1e-3  # small beside the shortcut at init


def test_sepvit_block_reaches_every_window_at_the_same_relative_position_at_init():
    """PWA with zero-initialised window tokens mixes all windows uniformly, position by position."""
    h = w = NANO.stage_resolution(STAGE2)
    mass = _erf(stage_units(NANO, STAGE2, h, w)["sepvit_block"], h, w, NANO.embed_dims[STAGE2], inputs=3)
    q = erf.centre(h, w)  # (8, 8): the top-left pixel of window (2, 2)
    assert erf.erf_stats(mass, q, 4)["outside_window"] > 0.05
    for gi in range(4):
        for gj in range(4):
            window = mass[4 * gi:4 * gi + 4, 4 * gj:4 * gj + 4]
            assert (window > 0).all()
            if (gi, gj) != (2, 2):
                assert np.unravel_index(window.argmax(), window.shape) == (0, 0)  # the query's relative position
    local = _erf(make_block(NANO.replace(dssa=False).block_spec(STAGE2, 0)), h, w, NANO.embed_dims[STAGE2])
    assert erf.erf_stats(local, q, 4)["outside_window"] == 0.0


def test_float32_and_float64_agree():
    h = w = 8
    cfg = NANO
    unit = stage_units(cfg, 2, h, w)["sepvit_block"]
    erf.initialise(unit)
    x = erf.random_inputs(2, h, w, cfg.embed_dims[2])
    single = erf.erf_map(unit.float(), x.float()).numpy()
    double = erf.erf_map(unit.double(), x.double()).numpy()
    np.testing.assert_allclose(single, double, atol=1e-6)


# ------------------------------------------------------------------------------ tables
def test_unit_table_rows_carry_stats_and_analytic_macs():
    results = erf_tables.unit_erf_table("sepvit_nano_32", stages=[3, 4], inputs=2,
                                units=["sepvit_block", "swin_pair", "msa_block"])
    assert [(r.stage, r.unit) for r in results] == [(s, u) for s in (3, 4)
                                                     for u in ("sepvit_block", "swin_pair", "msa_block")]
    for r in results:
        assert r.mass.shape == (r.height, r.width) and r.mass.sum() == pytest.approx(1.0)
        assert set(erf.STAT_COLUMNS) <= set(r.stats) and r.macs > 0
    stage4 = {r.unit: r for r in results if r.stage == 4}
    assert all(r.stats["outside_window"] == 0.0 for r in stage4.values())  # a 4x4 map is one window


def test_trained_model_path_captures_the_real_block_inputs():
    from experiments.trained_reach import validation_images

    torch.manual_seed(0)
    model = NANO.build().eval()
    images = validation_images("synthetic", 3)
    captured = erf.capture_block_inputs(model, images, [(0, 0), (1, 1)])
    with torch.no_grad():
        stage1_in = model.stages[0].patch_embed(images)
        stage2 = model.stages[1]
        block1_in = stage2.cpe(stage2.blocks[0](stage2.patch_embed(model.stages[0](images))))
    torch.testing.assert_close(captured[(0, 0)], stage1_in)
    torch.testing.assert_close(captured[(1, 1)], block1_in)

    results = erf_tables.model_erf_table(model, images, stages=[2, 3])
    assert [(r.stage, r.unit, r.blocks) for r in results] == [
        (2, "sepvit_block", "0"), (2, "sepvit_gsa_block", "1"), (3, "sepvit_block", "0"), (3, "sepvit_gsa_block", "1")]
    swin = NANO.replace(block_pattern="swin").build().eval()
    names = [(r.stage, r.unit, r.blocks) for r in erf_tables.model_erf_table(swin, images, with_cpe=True)]
    assert names == [(1, "ours_swin_block0", "0"), (2, "ours_swin_pair", "0+1 (CPE after 0)"),
                     (3, "ours_swin_pair", "0+1 (CPE after 0)"), (4, "ours_swin_block0", "0")]


def test_plot_uses_one_colour_scale_with_a_colour_bar():
    import matplotlib

    matplotlib.use("Agg")
    results = erf_tables.unit_erf_table("sepvit_nano_32", stages=[3, 4], inputs=1, units=["sepvit_block", "msa_block"],
                                with_macs=False)
    fig = erf_tables.plot_erf(results, vmin=1e-5)
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len(images) == 4
    assert {(im.norm.vmin, im.norm.vmax) for im in images} == {(1e-5, 1.0)}
    assert len(fig.axes) == 5  # four panels and the colour bar


# ------------------------------------------------------------------------------ spatial reach (off-query mass)
def test_off_query_stats_leave_the_query_pixel_out():
    grad = np.zeros((8, 8))
    q = (4, 4)
    grad[4, 4], grad[4, 6], grad[1, 4], grad[4, 5] = 6.0, 1.0, 1.0, 2.0  # Chebyshev distances 0, 2, 3, 1
    stats = reach.off_query_stats(grad, q)
    assert stats["self_share"] == pytest.approx(0.6)
    assert stats["off_mean_distance"] == pytest.approx((2 * 1 + 1 * 2 + 1 * 3) / 4)
    assert stats["off_radius_50"] == 1.0 and stats["off_radius_90"] == 3.0  # 2/4 within 1, 3/4 within 2
    grad[4, 4] = 600.0  # more self share: the reach does not move
    assert reach.off_query_stats(grad, q)["off_mean_distance"] == pytest.approx(stats["off_mean_distance"])
    only_self = np.zeros((8, 8))
    only_self[q] = 1.0
    assert reach.off_query_stats(only_self, q) == dict(self_share=1.0, off_mean_distance=0.0, off_radius_50=0.0,
                                                    off_radius_90=0.0)
    with pytest.raises(ValueError, match="no finite gradient"):
        reach.off_query_stats(np.zeros((8, 8)), q)


def test_query_positions_take_every_place_inside_the_window():
    queries = reach.query_positions(10, 10, 4, per_phase=1, seed=3)  # windows of 4 on a 10x10 map (padded to 12)
    assert sorted((i % 4, j % 4) for i, j in queries) == [(a, b) for a in range(4) for b in range(4)]
    twice = reach.query_positions(10, 10, 4, per_phase=2, seed=3)
    assert len(twice) == 32 and len(set(twice)) == 32
    assert all(0 <= i < 10 and 0 <= j < 10 for i, j in twice)
    assert reach.query_positions(3, 3, 4) == [(i, j) for i in range(3) for j in range(3)]  # one window: every pixel
    assert len(reach.query_positions(6, 6, 4, per_phase=None)) == 36
    with pytest.raises(ValueError, match="per phase"):
        reach.query_positions(8, 8, 4, per_phase=0)


def test_gradient_maps_give_each_input_and_query_its_own_map():
    x = torch.randn(3, 7, 9, 5, dtype=torch.float64)
    maps = erf.gradient_maps(ShiftMix(1.0, 3.0), x, [(4, 6), (0, 0)], chunk=2)
    assert maps.shape == (3, 2, 7, 9)
    assert maps[:, 0, 4, 6].tolist() == [5.0] * 3 and maps[:, 0, 3, 4].tolist() == [15.0] * 3  # 5 channels
    assert maps[:, 1, 0, 0].tolist() == [5.0] * 3 and maps[:, 1, 6, 7].tolist() == [15.0] * 3  # rolled round
    assert maps.sum().item() == pytest.approx(3 * 2 * (5 + 15))  # nothing anywhere else
    for b in range(3):  # Product's gradient depends on the input: each sample keeps its own
        single = erf.gradient_maps(Product(), x[b:b + 1], [(3, 3)])
        torch.testing.assert_close(erf.gradient_maps(Product(), x, [(3, 3)], chunk=3)[b], single[0])


def _pattern_unit(pattern: str, blocks: int, stage: int = 0) -> nn.Module:
    """`blocks` blocks of `pattern` at `stage` of the nano preset, built by the backbone's block-pattern switch."""
    from analysis.units import StageBlocks

    depths = tuple(max(d, blocks) if s == stage else d for s, d in enumerate(NANO.depths))
    cfg = NANO.replace(block_pattern=pattern, depths=depths)
    return StageBlocks(*(make_block(spec) for spec in cfg.stage_spec(stage).blocks[:blocks]))


def _reach_of_patterns(init: str, patterns, stage: int = 0, per_phase: int = 4) -> dict[str, dict[str, np.ndarray]]:
    """The reach of each pattern's unit at one nano stage, seed 0, on the SAME 2 inputs and queries."""
    side, dim = NANO.stage_resolution(stage), NANO.embed_dims[stage]
    x = erf.random_inputs(2, side, side, dim)
    queries = reach.query_positions(side, side, NANO.window_size, per_phase)
    out = {}
    for name, (pattern, blocks) in patterns.items():
        torch.manual_seed(0)
        out[name] = reach.reach_values(erf.initialise(_pattern_unit(pattern, blocks, stage), init), x, queries)
    return out


ORDERED = {"global MSA": ("msa", 1), "SepViT block": ("sepvit", 1), "Twins pair": ("twins", 2),
           "Swin pair": ("swin", 2), "one window": ("local", 1)}


def test_reach_ranks_global_attention_widest_then_sepvit_and_twins_then_swin_then_one_window():
    """Nano stage 1 (32x32 map, windows of 4, 64 queries): global MSA > SepViT block, Twins pair > Swin pair >
    one window, each step with its 95 % paired interval above 1. PyTorch's default init ("as_built"), where the
    attention branches are of the order of the shortcut, so that a pair composes as it does after training (at
    the authors' init a Swin pair is two single windows side by side: see the next test)."""
    measured = {name: values["off_mean_distance"] for name, values in _reach_of_patterns("as_built", ORDERED).items()}
    steps = [("global MSA", "SepViT block"), ("global MSA", "Twins pair"), ("SepViT block", "Swin pair"),
             ("Twins pair", "Swin pair"), ("Swin pair", "one window")]
    for wider, narrower in steps:
        ratio, low, high = reach.reach_ratio(measured[wider], measured[narrower])
        assert low > 1.0, f"{wider} / {narrower}: {ratio:.3f} [{low:.3f}, {high:.3f}]"
    assert measured["SepViT block"].mean() > 2.5 * measured["Swin pair"].mean()


def test_at_the_authors_init_a_swin_pair_reaches_as_far_as_one_window_on_average_but_covers_more():
    measured = _reach_of_patterns("authors", {k: ORDERED[k] for k in ("Swin pair", "one window", "global MSA",
                                                                      "SepViT block")})
    ratio, _, _ = reach.reach_ratio(measured["Swin pair"]["off_mean_distance"],
                                    measured["one window"]["off_mean_distance"])
    assert 0.9 < ratio < 1.1  # the sum of an aligned and a shifted window, each as far away as one window
    assert measured["Swin pair"]["off_radius_90"].mean() > measured["one window"]["off_radius_90"].mean()
    assert measured["global MSA"]["off_mean_distance"].mean() > measured["SepViT block"]["off_mean_distance"].mean()


def test_the_self_share_no_longer_decides_the_ranking():
    """The issue's sanity check: the centre-query mean distance of ALL the mass ranks global MSA below SepViT
    (its shortcut keeps more at the query); the off-query reach ranks it above."""
    side, dim = NANO.stage_resolution(0), NANO.embed_dims[0]
    x = erf.random_inputs(2, side, side, dim)
    legacy, off = {}, {}
    for name in ("global MSA", "SepViT block"):
        torch.manual_seed(0)
        unit = erf.initialise(_pattern_unit(*ORDERED[name]))
        mass = erf.erf_map(unit, x).numpy()
        legacy[name] = erf.erf_stats(mass, erf.centre(side, side), NANO.window_size)
        off[name] = reach.off_query_stats(mass, erf.centre(side, side))
    assert legacy["global MSA"]["mean_distance"] < legacy["SepViT block"]["mean_distance"]
    assert legacy["global MSA"]["self_share"] > legacy["SepViT block"]["self_share"]
    assert off["global MSA"]["off_mean_distance"] > off["SepViT block"]["off_mean_distance"]


def test_bootstrap_intervals_cover_seeds_inputs_and_queries():
    constant = np.full((2, 3, 4), 5.0)
    assert reach.bootstrap_mean(constant) == (5.0, 5.0, 5.0)
    rng = np.random.default_rng(0)
    by_input = np.broadcast_to(rng.normal(10, 1, size=(1, 20, 1)), (1, 20, 6))
    mean, low, high = reach.bootstrap_mean(by_input)
    assert low < mean < high and high - low > 0.3  # about 2 x 1.96 / sqrt(20)
    by_seed = np.broadcast_to(np.array([9.0, 10.0, 11.0])[:, None, None], (3, 5, 5))
    assert reach.bootstrap_mean(by_seed)[2] > reach.bootstrap_mean(by_seed)[1]
    assert reach.bootstrap_mean(by_seed[:1]) == (9.0, 9.0, 9.0)
    assert reach.bootstrap_mean(by_input[0], resamples=50)[0] == pytest.approx(mean)  # (inputs, queries) accepted
    with pytest.raises(ValueError, match="seeds, inputs, queries"):
        reach.bootstrap_mean(np.zeros(4))


def test_reach_ratio_is_paired_over_inputs_and_queries():
    rng = np.random.default_rng(1)
    shared = rng.lognormal(0, 0.5, size=(1, 30, 8))  # large per-input/query variation, common to both units
    assert reach.reach_ratio(2 * shared, shared) == pytest.approx((2.0, 2.0, 2.0))
    noisy = shared * rng.normal(1.0, 0.02, size=shared.shape)
    ratio, low, high = reach.reach_ratio(noisy, shared)
    assert low < 1.0 < high and high - low < 0.03  # unpaired, the shared variation alone would give about 0.4
    seeds = np.concatenate([shared, 1.2 * shared, 0.8 * shared])
    ratio, low, high = reach.reach_ratio(seeds, shared)
    assert ratio == pytest.approx(1.0) and high - low > 0.1  # three different models: their spread counts
    with pytest.raises(ValueError, match="same inputs and queries"):
        reach.reach_ratio(shared[:, :10], shared)


@pytest.mark.parametrize("interval,comparable,at_least,direction,verdict", [
    ((0.95, 0.90, 1.02), True, True, "no detectable difference", "comparable"),
    ((0.88, 0.84, 0.93), True, True, "narrower", "comparable, though narrower"),
    ((0.70, 0.62, 0.78), False, False, "narrower", "NOT comparable: narrower"),
    ((0.90, 0.70, 1.15), False, False, "no detectable difference", "undecided"),
    ((1.60, 1.40, 1.80), False, True, "wider", "wider, beyond the band"),
    ((1.20, 1.10, 1.30), False, True, "wider", "wider, by an amount"),
])
def test_comparable_verdict_reads_the_interval(interval, comparable, at_least, direction, verdict):
    found = reach.comparable_verdict(*interval)
    assert (found["comparable"], found["at_least_comparable"], found["direction"]) == (comparable, at_least, direction)
    assert found["verdict"].startswith(verdict) and found["sentence"].endswith(found["verdict"])
    assert f"{interval[0]:.2f} (95 % interval {interval[1]:.2f}-{interval[2]:.2f}" in found["sentence"]
    with pytest.raises(ValueError, match="must hold 1"):
        reach.comparable_verdict(*interval, band=(1.1, 1.3))


def _reach_result(unit: str, values: np.ndarray, queries=((1, 1), (2, 2)), macs: int = 100) -> reach.ReachResult:
    return reach.ReachResult(2, unit, 16, 16, 4, list(queries), {s: values for s in reach.REACH_STATS}, macs)


def test_compare_reach_pairs_the_sepvit_block_with_each_pair_on_the_same_queries():
    base = np.ones((1, 3, 2))
    results = [_reach_result("sepvit_block", 0.5 * base, macs=50), _reach_result("ours_swin_pair", base),
               _reach_result("ours_twins_pair", 0.52 * base), _reach_result("msa_block", 9 * base),
               _reach_result("ours_swin_pair", base, queries=((0, 0), (3, 3)))]  # other queries: not paired
    rows = reach.compare_reach(results)
    assert [(r["pair"], r["ratio"], r["comparable"], r["direction"]) for r in rows] == [
        ("ours_swin_pair", 0.5, False, "narrower"), ("ours_twins_pair", pytest.approx(0.5 / 0.52), True, "narrower")]
    assert rows[0]["macs_ratio"] == 0.5 and rows[0]["verdict"] == "NOT comparable: narrower"
    text = reach.format_reach_comparison(rows).splitlines()
    assert len(text) == 2 and text[0].startswith("stage 2: SepViT block vs ours_swin_pair") and "narrower" in text[0]
    with pytest.raises(ValueError, match="unknown stat"):
        reach.compare_reach(results, stat="radius")


def test_verdict_summary_says_plainly_where_the_sepvit_block_is_narrower():
    base = np.ones((1, 3, 2))
    rows = reach.compare_reach([_reach_result("sepvit_block", 0.5 * base), _reach_result("ours_swin_pair", base),
                                _reach_result("ours_twins_pair", 0.52 * base), _reach_result("ours_x_pair", 0.25 * base),
                                _reach_result("ours_y_pair", 0.45 * base)])
    assert reach.verdict_summary(rows) == [
        "The SepViT block is narrower, and NOT comparable, than ours_swin_pair at stage 2 (ratio 0.50 [0.50, 0.50]).",
        "The SepViT block is narrower, though comparable (interval inside the band), than ours_twins_pair at stage 2 "
        "(ratio 0.96 [0.96, 0.96]).",
        "The SepViT block is wider, though comparable (interval inside the band), than ours_y_pair at stage 2 "
        "(ratio 1.11 [1.11, 1.11]).",
        "The SepViT block is wider than ours_x_pair at stage 2 (ratio 2.00 [2.00, 2.00])."]
    assert reach.verdict_summary([]) == [
        "No stage has both a SepViT block and a two-block pair measured on the same inputs."]


def test_stage_ranking_puts_the_widest_unit_first_and_knows_a_one_window_map():
    rng = np.random.default_rng(0)
    results = [_reach_result("ours_msa_block", 5 + 0.1 * rng.standard_normal((2, 3, 2))),
               _reach_result("sepvit_block", 3 + 0.1 * rng.standard_normal((2, 3, 2))),
               _reach_result("ours_swin_pair", 3.05 + 0.1 * rng.standard_normal((2, 3, 2)))]
    (stage,) = reach.stage_ranking(results, resamples=200)
    assert [u["unit"] for u in stage["ranked"]][0] == "ours_msa_block" and stage["clearly_widest"]
    assert stage["widest"] == "ours_msa_block" and not stage["one_window"]
    close = reach.stage_ranking(results[1:], resamples=200)[0]
    assert not close["clearly_widest"]  # 3.0 vs 3.05 with noise: the intervals overlap
    whole = reach.ReachResult(4, "sepvit_block", 4, 4, 4, [(1, 1)], {s: np.ones((1, 2, 1)) for s in reach.REACH_STATS})
    assert reach.stage_ranking([whole])[0]["one_window"]


def test_model_reach_table_stacks_seeds_of_one_configuration():
    from experiments.trained_reach import validation_images

    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(NANO.build().eval())
    images = validation_images("synthetic", 2)
    results = reach.model_reach_table(models, images, stages=[2], label="sepvit")
    assert [(r.stage, r.unit, r.seeds, r.inputs, len(r.queries)) for r in results] == [
        (2, "sepvit_block", 2, 2, 16), (2, "sepvit_gsa_block", 2, 2, 16)]
    values = results[0].values["off_mean_distance"]
    assert values.shape == (2, 2, 16) and not np.allclose(values[0], values[1])  # two models, two answers
    row = results[0].row(resamples=100)
    assert row["label"] == "sepvit" and row["off_mean_distance_low"] <= row["off_mean_distance"] <= \
        row["off_mean_distance_high"]
    with pytest.raises(ValueError, match="share a configuration"):
        reach.model_reach_table([models[0], NANO.replace(block_pattern="swin").build()], images)


def test_checkpoint_reach_groups_the_checkpoints_of_one_configuration(tmp_path):
    from experiments.runner.checkpoint import save_checkpoint
    from experiments.trained_reach import checkpoint_reach

    paths = []
    for seed, (fused, top1) in enumerate([(False, 10.0), (True, 30.0)]):  # fused: execution only, same model
        cfg = NANO.replace(fused_attn=fused)
        torch.manual_seed(seed)
        paths.append(str(save_checkpoint({"model": cfg.build().state_dict(), "config": cfg.to_dict(), "epoch": 2,
                                          "history": [{"val_top1": top1}]}, tmp_path / f"{seed}.pth")))
    groups, facts = checkpoint_reach(paths, inputs=2, stages=[4])
    assert list(groups) == list(facts) and len(groups) == 1
    (title,) = groups
    assert title.startswith("sepvit (2 seed(s)") and "2 synthetic images" in title
    assert facts[title] == dict(checkpoints=paths, block_pattern="sepvit", epochs=[2, 2], val_top1=[10.0, 30.0],
                                mean_val_top1=20.0)
    assert {(r.stage, r.seeds, r.inputs) for r in groups[title]} == {(4, 2, 2)}
    fresh, fresh_facts = checkpoint_reach(paths[:1], untrained=True, seeds=(0, 1, 2), inputs=2, stages=[4])
    (fresh_title,) = fresh
    assert "untrained" in fresh_title and fresh_facts[fresh_title]["mean_val_top1"] is None
    assert {r.seeds for r in fresh[fresh_title]} == {3}


def test_checkpoint_reach_measures_on_the_task_each_checkpoint_learnt(tmp_path, monkeypatch):
    """The synthetic images carry the cue the checkpoint was trained with; one saved before cues existed: ring."""
    from experiments import trained_reach
    from experiments.runner.checkpoint import save_checkpoint

    asked = []
    real = trained_reach.validation_images
    monkeypatch.setattr(trained_reach, "validation_images",
                        lambda *a, **k: asked.append(k.get("synthetic_cue")) or real(*a, **k))
    for name, train in [("new", {"dataset": "synthetic", "synthetic_cue": "frame"}), ("old", {"dataset": "synthetic"})]:
        torch.manual_seed(0)
        path = save_checkpoint({"model": NANO.build().state_dict(), "config": NANO.to_dict(), "epoch": 1,
                                "history": [{"val_top1": 10.0}], "train_config": train}, tmp_path / f"{name}.pth")
        trained_reach.checkpoint_reach([str(path)], inputs=2, stages=[4])
    assert asked == ["frame", "ring"]
    assert not torch.equal(real("synthetic", 2, synthetic_cue="frame"), real("synthetic", 2, synthetic_cue="ring"))


# ------------------------------------------------------------------------------ command line
def test_trained_erf_command_pools_the_seeds_of_a_configuration_and_gives_verdicts(tmp_path, capsys):
    from experiments import trained_erf
    from experiments.runner.checkpoint import save_checkpoint

    paths = []
    models = [("twins", False, 12.5), ("twins", True, 14.5), ("sepvit", False, 20.0)]
    for seed, (pattern, fused, top1) in enumerate(models):
        cfg = NANO.replace(block_pattern=pattern, fused_attn=fused)  # fused attention: the same model, a seed of it
        torch.manual_seed(seed)
        model = cfg.build()
        paths.append(str(save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict(), "epoch": 3,
                                          "history": [{"val_top1": top1}]}, tmp_path / f"{seed}.pth")))
    argv = [*paths, "--inputs", "2", "--stages", "2", "--resamples", "100"]
    assert trained_erf.main([*argv, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["unit"], r["seeds"], r["val_top1"], r["mean_val_top1"]) for r in rows] == [
        ("ours_twins_pair", 2, [12.5, 14.5], 13.5), ("sepvit_block", 1, [20.0], 20.0),
        ("sepvit_gsa_block", 1, [20.0], 20.0)]
    assert all(r["off_mean_distance_low"] <= r["off_mean_distance"] <= r["off_mean_distance_high"] for r in rows)
    assert trained_erf.main(argv) == 0
    table = capsys.readouterr().out
    assert "twins (2 seed(s)" in table and "val top-1 12.5 / 14.5 % (mean 13.5)" in table
    verdict = [line for line in table.splitlines() if line.startswith("stage 2: SepViT block vs ours_twins_pair")]
    assert len(verdict) == 1 and "1 vs 2 seed(s), 2 inputs x 16 queries" in verdict[0]
    assert trained_erf.main([*argv, "--untrained", "--seeds", "0", "1", "--format", "json"]) == 0
    fresh = json.loads(capsys.readouterr().out)
    assert [(r["seeds"], r["val_top1"]) for r in fresh][:2] == [(2, [None] * 2), (2, [None] * 2)]


def test_cli_json_and_csv(capsys):
    assert rf.main(["--variant", "sepvit_nano_32", "--stages", "4", "--inputs", "1", "--units", "sepvit_block",
                    "msa_block", "--format", "json", "--seeds", "0", "1", "--resamples", "50"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["unit"], r["seeds"], r["queries"]) for r in rows] == [("sepvit_block", 2, 16), ("msa_block", 2, 16)]
    assert rows[0]["height"] == 4 and rows[0]["off_mean_distance_low"] <= rows[0]["off_mean_distance"]
    assert rf.main(["--variant", "sepvit_nano_32", "--stages", "4", "--inputs", "1", "--units", "msa_block",
                    "--format", "csv", "--no-identity", "--queries-per-phase", "0", "--resamples", "50"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows[0]["unit"] == "msa_block" and float(rows[0]["self_share"]) < 1 and rows[0]["queries"] == "16"
    assert rf.main(["--variant", "sepvit_nano_32", "--stages", "3", "--inputs", "1", "--units", "sepvit_block",
                    "swin_pair", "--resamples", "50"]) == 0
    table = capsys.readouterr().out
    assert "off mean d" in table and "stage 3: SepViT block vs swin_pair" in table


@pytest.mark.parametrize("argv,message", [
    (["--variant", "sepvit_huge"], "unknown variant"),
    (["--inputs", "0"], "--inputs must be >= 1"),
    (["--variant", "sepvit_nano_32", "--units", "swin"], "unknown unit"),
    (["--variant", "sepvit_nano_32", "--stages", "5"], "do not exist"),
    (["--format", "xml"], "invalid choice"),
    (["--variant", "sepvit_nano_32", "--queries-per-phase", "-1"], "--queries-per-phase must be >= 0"),
    (["--variant", "sepvit_nano_32", "--resamples", "0"], "--resamples must be >= 1"),
])
def test_cli_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        sys.exit(rf.main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_trained_erf_refuses_a_missing_checkpoint_in_one_line(capsys):
    from experiments import trained_erf

    assert trained_erf.main(["/nonexistent/last.pth"]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint at" in err and len(err.strip().splitlines()) == 1


def test_cli_script_runs_without_traceback_on_bad_input():
    proc = subprocess.run([sys.executable, str(REPO / "analysis" / "receptive_field.py"), "--variant", "nope"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("receptive_field.py: error: unknown variant")
