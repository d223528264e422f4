"""Effective receptive field (analysis.receptive_field): the gradient is the one claimed, the numbers are
right on maps with known answers, and each unit's reach is what its attention pattern allows."""
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
    rf.initialise(unit).double()
    return rf.erf_map(unit, rf.random_inputs(inputs, height, width, dim, dtype=torch.float64), **kw).numpy()


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
    mass = rf.erf_map(ShiftMix(1.0, 3.0), x, query).numpy()
    expected = np.zeros((7, 9))
    expected[4, 6], expected[3, 4] = 0.25, 0.75
    np.testing.assert_allclose(mass, expected, atol=1e-15)
    default = rf.erf_map(ShiftMix(1.0, 3.0), x).numpy()  # the centre (3, 4)
    assert default[3, 4] == pytest.approx(0.25) and default[2, 2] == pytest.approx(0.75)


def test_identity_false_drops_exactly_the_shortcut_path():
    x = torch.randn(2, 6, 6, 4, dtype=torch.float64)
    mass = rf.erf_map(ShiftMix(1.0, 3.0), x, (3, 3), identity=False).numpy()
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
    mass = rf.erf_map(Product(), x, q).numpy()
    assert mass[2, 2] == pytest.approx((1 + 2) / 6)
    assert mass[1, 2] == pytest.approx((3 + 0) / 6)
    assert mass.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(rf.erf_map(Product(), x, q, chunk=1), rf.erf_map(Product(), x, q, chunk=2))


def test_erf_map_refuses_bad_input():
    with pytest.raises(ValueError, match="channels-last"):
        rf.erf_map(Product(), torch.zeros(4, 4, 3))
    with pytest.raises(ValueError, match="outside"):
        rf.erf_map(Product(), torch.zeros(1, 4, 4, 3), (4, 0))
    with pytest.raises(ValueError, match="no finite gradient"):
        rf.erf_map(Product(), torch.zeros(1, 4, 4, 3))  # zero input: zero gradient


# ------------------------------------------------------------------------------ numbers per map
def test_radius_mean_distance_and_window_share_on_a_known_map():
    mass = np.zeros((8, 8))
    q = (4, 4)
    mass[4, 4], mass[4, 6], mass[1, 4] = 0.5, 0.3, 0.2  # Chebyshev distances 0, 2, 3
    stats = rf.erf_stats(mass, q, window=4)
    assert stats["radius_90"] == 3.0  # 0.8 within 2: not yet 90 %
    assert rf.radius(mass, q, 0.8) == 2.0
    assert stats["mean_distance"] == pytest.approx(0.3 * 2 + 0.2 * 3)
    assert stats["outside_window"] == pytest.approx(0.2)  # (1, 4) lies in the window above
    assert stats["self_share"] == pytest.approx(0.5)
    assert stats["reach"] == pytest.approx(3 / 64)
    euclid = rf.erf_stats(mass, q, window=4, metric="euclidean")
    assert euclid["radius_90"] == 3.0 and euclid["mean_distance"] == pytest.approx(0.6 + 0.6)
    mass[4, 4], mass[6, 6] = 0.3, 0.2  # (6, 6): Chebyshev 2, Euclidean 2.83
    assert rf.radius(mass, q, 0.8, "euclidean") == pytest.approx(math.sqrt(8))


def test_own_window_is_placed_like_the_models_windows():
    assert rf.own_window(10, 10, 4, (5, 5)) == (slice(4, 8), slice(4, 8))
    assert rf.own_window(10, 10, 4, (9, 2)) == (slice(8, 10), slice(0, 4))  # the padded last window, cropped
    assert rf.own_window(7, 7, 7, (3, 3)) == (slice(0, 7), slice(0, 7))
    assert rf.own_window(5, 6, 7, (2, 3)) == (slice(0, 5), slice(0, 6))  # smaller than a window: one window
    assert rf.centre(56, 56) == (28, 28) and rf.centre(7, 7) == (3, 3)


def test_depthwise_3x3_conv_stays_within_sqrt2():
    class DWConv(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(6, 6, 3, padding=1, groups=6)

        def forward(self, x):
            return self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    unit = DWConv().double()
    mass = rf.erf_map(unit, torch.randn(3, 9, 9, 6, dtype=torch.float64)).numpy()
    q = (4, 4)
    assert rf.erf_stats(mass, q, window=3, metric="euclidean")["radius_90"] <= math.sqrt(2) + 1e-12
    assert rf.erf_stats(mass, q, window=3)["radius_90"] <= 1
    assert mass[3:6, 3:6].sum() == pytest.approx(1.0, abs=1e-15)
    assert (mass[3:6, 3:6] > 0).all()


# ------------------------------------------------------------------------------ the compared units
def test_window_attention_alone_has_no_mass_outside_its_window():
    h = w = NANO.stage_resolution(STAGE2)
    dim = NANO.embed_dims[STAGE2]
    q = rf.centre(h, w)
    for unit in (make_block(NANO.replace(block_pattern="swin").block_spec(STAGE2, 0)),  # W-MSA, no shift
                 make_block(NANO.replace(dssa=False).block_spec(STAGE2, 0))):  # SepViT block, DSSA off
        stats = rf.erf_stats(_erf(unit, h, w, dim), q, NANO.window_size)
        assert stats["outside_window"] == 0.0
        assert stats["reach"] == pytest.approx(16 / 256)  # exactly its 4x4 window


@pytest.mark.parametrize("name", ["swin_pair", "ours_swin_pair"])
def test_swin_pair_reaches_the_shifted_window_and_no_further(name):
    h = w = NANO.stage_resolution(STAGE2)  # 16, window 4, shift 2; query (8, 8) opens window rows 8-11
    unit = stage_units(NANO, STAGE2, h, w)[name]
    mass = _erf(unit, h, w, NANO.embed_dims[STAGE2])
    reached = mass > rf.REACH_THRESHOLD * mass.max()
    expected = np.zeros((16, 16), bool)
    expected[4:12, 4:12] = True  # SW-MSA window rows 6-9 draw on W-MSA windows 4-7 and 8-11
    np.testing.assert_array_equal(reached, expected)
    assert rf.erf_stats(mass, (8, 8), 4)["outside_window"] > 1e-3


@pytest.mark.parametrize("name", ["msa_block", "ours_msa_block", "twins_pair"])
def test_global_units_put_mass_everywhere(name):
    h = w = NANO.stage_resolution(STAGE2)
    mass = _erf(stage_units(NANO, STAGE2, h, w)[name], h, w, NANO.embed_dims[STAGE2])
    assert (mass > 0).all()
    stats = rf.erf_stats(mass, rf.centre(h, w), NANO.window_size)
    assert stats["reach"] == 1.0 and stats["outside_window"] > 1e-3  # small beside the shortcut at init


def test_sepvit_block_reaches_every_window_at_the_same_relative_position_at_init():
    """PWA with zero-initialised window tokens mixes all windows uniformly, position by position."""
    h = w = NANO.stage_resolution(STAGE2)
    mass = _erf(stage_units(NANO, STAGE2, h, w)["sepvit_block"], h, w, NANO.embed_dims[STAGE2], inputs=3)
    q = rf.centre(h, w)  # (8, 8): the top-left pixel of window (2, 2)
    assert rf.erf_stats(mass, q, 4)["outside_window"] > 0.05
    for gi in range(4):
        for gj in range(4):
            window = mass[4 * gi:4 * gi + 4, 4 * gj:4 * gj + 4]
            assert (window > 0).all()
            if (gi, gj) != (2, 2):
                assert np.unravel_index(window.argmax(), window.shape) == (0, 0)  # the query's relative position
    local = _erf(make_block(NANO.replace(dssa=False).block_spec(STAGE2, 0)), h, w, NANO.embed_dims[STAGE2])
    assert rf.erf_stats(local, q, 4)["outside_window"] == 0.0


def test_float32_and_float64_agree():
    h = w = 8
    cfg = NANO
    unit = stage_units(cfg, 2, h, w)["sepvit_block"]
    rf.initialise(unit)
    x = rf.random_inputs(2, h, w, cfg.embed_dims[2])
    single = rf.erf_map(unit.float(), x.float()).numpy()
    double = rf.erf_map(unit.double(), x.double()).numpy()
    np.testing.assert_allclose(single, double, atol=1e-6)


# ------------------------------------------------------------------------------ tables
def test_unit_table_rows_carry_stats_and_analytic_macs():
    results = rf.unit_erf_table("sepvit_nano_32", stages=[3, 4], inputs=2,
                                units=["sepvit_block", "swin_pair", "msa_block"])
    assert [(r.stage, r.unit) for r in results] == [(s, u) for s in (3, 4)
                                                     for u in ("sepvit_block", "swin_pair", "msa_block")]
    for r in results:
        assert r.mass.shape == (r.height, r.width) and r.mass.sum() == pytest.approx(1.0)
        assert set(rf.STAT_COLUMNS) <= set(r.stats) and r.macs > 0
    stage4 = {r.unit: r for r in results if r.stage == 4}
    assert all(r.stats["outside_window"] == 0.0 for r in stage4.values())  # a 4x4 map is one window
    rows = rf.comparable(results)
    assert {row["pair"] for row in rows} == {"swin_pair"} and all(isinstance(row["comparable"], bool) for row in rows)


def test_trained_model_path_captures_the_real_block_inputs():
    from experiments import trained_erf

    torch.manual_seed(0)
    model = NANO.build().eval()
    images = trained_erf.validation_images("synthetic", 3)
    captured = rf.capture_block_inputs(model, images, [(0, 0), (1, 1)])
    with torch.no_grad():
        stage1_in = model.stages[0].patch_embed(images)
        stage2 = model.stages[1]
        block1_in = stage2.cpe(stage2.blocks[0](stage2.patch_embed(model.stages[0](images))))
    torch.testing.assert_close(captured[(0, 0)], stage1_in)
    torch.testing.assert_close(captured[(1, 1)], block1_in)

    results = rf.model_erf_table(model, images, stages=[2, 3])
    assert [(r.stage, r.unit, r.blocks) for r in results] == [
        (2, "sepvit_block", "0"), (2, "sepvit_gsa_block", "1"), (3, "sepvit_block", "0"), (3, "sepvit_gsa_block", "1")]
    swin = NANO.replace(block_pattern="swin").build().eval()
    names = [(r.stage, r.unit, r.blocks) for r in rf.model_erf_table(swin, images, with_cpe=True)]
    assert names == [(1, "ours_swin_block0", "0"), (2, "ours_swin_pair", "0+1 (CPE after 0)"),
                     (3, "ours_swin_pair", "0+1 (CPE after 0)"), (4, "ours_swin_block0", "0")]


def test_plot_uses_one_colour_scale_with_a_colour_bar():
    import matplotlib

    matplotlib.use("Agg")
    results = rf.unit_erf_table("sepvit_nano_32", stages=[3, 4], inputs=1, units=["sepvit_block", "msa_block"],
                                with_macs=False)
    fig = rf.plot_erf(results, vmin=1e-5)
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len(images) == 4
    assert {(im.norm.vmin, im.norm.vmax) for im in images} == {(1e-5, 1.0)}
    assert len(fig.axes) == 5  # four panels and the colour bar


def _result(unit: str, mean_distance: float, macs: int) -> rf.ERFResult:
    stats = dict(radius_90=1.0, mean_distance=mean_distance, outside_window=0.1, self_share=0.5, reach=1.0)
    return rf.ERFResult(2, unit, 16, 16, 4, (8, 8), 1, np.full((16, 16), 1 / 256), stats, macs)


def test_verdict_compares_the_sepvit_block_with_each_pair_by_mean_distance():
    rows = rf.comparable([_result("sepvit_block", 1.0, 50), _result("swin_pair", 1.9, 100),
                          _result("ours_twins_pair", 2.1, 100), _result("msa_block", 9.0, 100),
                          _result("ours_swin_block0", 1.0, 50)])
    assert [(r["pair"], r["comparable"]) for r in rows] == [("swin_pair", True), ("ours_twins_pair", False)]
    assert rows[0]["mean_distance_ratio"] == pytest.approx(1 / 1.9) and rows[0]["macs_ratio"] == 0.5
    text = rf.format_comparison(rows)
    assert "comparable or wider" in text.splitlines()[0] and "NOT comparable" in text.splitlines()[1]


# ------------------------------------------------------------------------------ command line
def test_trained_erf_command_reads_a_checkpoint_its_model_and_accuracy(tmp_path, capsys):
    from experiments import trained_erf
    from experiments.checkpoint import save_checkpoint

    cfg = NANO.replace(block_pattern="twins")
    torch.manual_seed(1)
    model = cfg.build()
    path = save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict(), "epoch": 3,
                            "history": [{"val_top1": 12.5}]}, tmp_path / "last.pth")
    argv = [str(path), "--inputs", "2", "--stages", "2", "--format", "json"]
    assert trained_erf.main(argv) == 0
    trained = json.loads(capsys.readouterr().out)
    assert [(r["unit"], r["blocks"], r["val_top1"], r["epoch"]) for r in trained] == [
        ("ours_twins_pair", "0+1", 12.5, 3)]
    assert trained_erf.main(argv + ["--untrained"]) == 0
    fresh = json.loads(capsys.readouterr().out)
    assert fresh[0]["val_top1"] is None and fresh[0]["mean_distance"] != trained[0]["mean_distance"]



def test_cli_json_and_csv(capsys):
    assert rf.main(["--variant", "sepvit_nano_32", "--stages", "4", "--inputs", "1", "--units", "sepvit_block",
                    "msa_block", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["unit"] for r in rows] == ["sepvit_block", "msa_block"] and rows[0]["height"] == 4
    assert rf.main(["--variant", "sepvit_nano_32", "--stages", "4", "--inputs", "1", "--units", "msa_block",
                    "--format", "csv", "--no-identity"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows[0]["unit"] == "msa_block" and float(rows[0]["self_share"]) < 1


@pytest.mark.parametrize("argv,message", [
    (["--variant", "sepvit_huge"], "unknown variant"),
    (["--inputs", "0"], "--inputs must be >= 1"),
    (["--variant", "sepvit_nano_32", "--units", "swin"], "unknown unit"),
    (["--variant", "sepvit_nano_32", "--stages", "5"], "do not exist"),
    (["--format", "xml"], "invalid choice"),
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
