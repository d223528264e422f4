"""Complexity analysis: the paper's formulas (analysis.analytic_macs) against fvcore and ptflops; the command line.

Conventions checked here (all counts are MACs, multiply-add = 1):
- `Macs.fvcore` (paper terms + LayerNorm at 5 MACs per element + window-token resizing at 4 per output
  element) equals fvcore's count exactly, for every attention unit, block and whole model below;
- `Macs.paper` is fvcore minus the norms, i.e. the paper's formulas;
- ptflops (aten backend) counts bias adds and no norms: within 3 % of fvcore, between paper and paper + biases.
"""
from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from analysis import analytic_macs
from analysis import block_counts as blocks
from analysis import complexity as cx
from analysis import model_counts as counts
from analysis import published
from analysis import time_vs_macs as tvm
from analysis.counters import fvcore_count, ptflops_count
from analysis.speed import benchmark_blocks
from analysis.timing import Settings
from analysis.units import UNITS
from sepvit import BLOCK_PATTERNS, SepViTConfig
from sepvit.attention import (
    DepthwiseSeparableSelfAttention,
    DepthwiseSelfAttention,
    GlobalMultiHeadAttention,
    GlobalSubsampledAttention,
    PointwiseSelfAttention,
    WindowMultiHeadAttention,
)
from sepvit.layers import pad_map, window_geometry, window_partition
from sepvit.macs import Macs
from sepvit.model import SepViTBlock
from workbench.cli import UsageError

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)

# (height, width, window): divisible maps, maps that need padding, a map smaller than one window.
SHAPES = [(14, 14, 7), (12, 10, 4), (9, 9, 4), (5, 6, 7)]
DIM, HEADS = 32, 2


def _windows(height: int, width: int, window: int, token: bool) -> tuple[torch.Tensor, int, bool]:
    """Padded windows of a random map (B, N, T, C), with a window token first where asked and N > 1."""
    wh, ww, ph, pw = window_geometry(height, width, window)
    windows = window_partition(pad_map(torch.randn(1, height, width, DIM), ph, pw), wh, ww)
    n = windows.shape[1]
    token = token and n > 1  # as in DSSA: no window token for a single window
    if token:
        windows = torch.cat([torch.randn(1, n, 1, DIM), windows], dim=2)
    return windows, n, token


def _padded(height: int, width: int, window: int) -> tuple[int, int]:
    _, _, ph, pw = window_geometry(height, width, window)
    return height + ph, width + pw


def _ptflops_close(ptflops: int, macs: Macs, fvcore: int) -> None:
    assert abs(ptflops - fvcore) <= 0.03 * fvcore
    assert macs.paper <= ptflops <= macs.with_biases


# ------------------------------------------------------------------------------ attention units: macs() == fvcore
@pytest.mark.parametrize("height,width,window", SHAPES)
@pytest.mark.parametrize("token", [True, False])
def test_dwa_counts_itself_like_fvcore_and_the_paper(height, width, window, token):
    windows, n, token = _windows(height, width, window, token)
    unit = DepthwiseSelfAttention(DIM, HEADS, fused_attn=True)
    counted = unit.macs(n, windows.shape[2])
    assert fvcore_count(unit, windows).total == counted.fvcore == counted.paper  # no norm inside DWA
    hp, wp = _padded(height, width, window)  # paper Eq. 5 on the padded map: 3 HW C^2 + 3 N C^2 + 2 N (M^2+1)^2 C
    assert counted.paper == 3 * hp * wp * DIM**2 + 3 * n * DIM**2 * token + 2 * n * windows.shape[2] ** 2 * DIM


@pytest.mark.parametrize("height,width,window", SHAPES[:3])
def test_pwa_counts_itself_like_fvcore_and_the_paper(height, width, window):
    windows, n, _ = _windows(height, width, window, token=False)
    unit = PointwiseSelfAttention(DIM, HEADS, fused_attn=True)
    counted = fvcore_count(unit, (torch.randn(1, n, DIM), windows))
    expected = unit.macs(n, windows.shape[2])
    assert counted.total == expected.fvcore
    # Convention difference: fvcore counts PWA's LayerNorm of the window tokens (5 N C), the paper does not.
    assert counted.total - expected.paper == counted.norms == 5 * n * DIM
    hp, wp = _padded(height, width, window)  # paper Eq. 6 without the projection: 2 N C^2 + N^2 C + N HW C
    assert expected.paper == 2 * n * DIM**2 + n * n * DIM + n * hp * wp * DIM


@pytest.mark.parametrize("height,width,window", SHAPES)
@pytest.mark.parametrize("kind", ["swin", "swin_shifted", "twins_local", "local"])
def test_window_attention_counts_itself_like_fvcore(height, width, window, kind):
    unit = WindowMultiHeadAttention(DIM, HEADS, window, shift=kind == "swin_shifted",
                                    kind=kind.replace("_shifted", ""))
    counted = fvcore_count(unit, torch.randn(1, height, width, DIM))
    assert counted.total == unit.macs(height, width).fvcore == unit.macs(height, width).paper
    # qkv and attention on the padded map, the projection after cropping; paper Eq. 4 on divisible maps
    wh, ww, ph, pw = window_geometry(height, width, window)
    hp, wp = height + ph, width + pw
    assert counted.total == 3 * hp * wp * DIM**2 + height * width * DIM**2 + 2 * wh * ww * hp * wp * DIM
    # timm Swin's rule, cropped proj
    assert analytic_macs.window_msa(height, width, DIM, window) == unit.macs(height, width)


@pytest.mark.parametrize("height,width", [(14, 14), (9, 7), (8, 8)])
@pytest.mark.parametrize("sr_ratio", [1, 2, 4])
def test_twins_gsa_counts_itself_like_fvcore(height, width, sr_ratio):
    unit = GlobalSubsampledAttention(DIM, HEADS, sr_ratio)
    counted = fvcore_count(unit, torch.randn(1, height, width, DIM))
    assert counted.total == unit.macs(height, width).fvcore
    kv_tokens = -(-height // sr_ratio) * -(-width // sr_ratio)
    assert counted.norms == (5 * kv_tokens * DIM if sr_ratio > 1 else 0)  # the LayerNorm after the sr conv


@pytest.mark.parametrize("height,width", [(7, 7), (6, 9)])
def test_global_msa_counts_itself_like_fvcore_and_the_paper(height, width):
    unit = GlobalMultiHeadAttention(DIM, HEADS)
    counted = fvcore_count(unit, torch.randn(1, height, width, DIM))
    hw = height * width
    assert counted.total == unit.macs(height, width).paper == 4 * hw * DIM**2 + 2 * hw**2 * DIM
    assert analytic_macs.msa(height, width, DIM) == unit.macs(height, width)


# (map, window, built token grid): divisible, padded, resized learnable tokens, single window, built global
BLOCK_SHAPES = [((16, 16), 4, (4, 4)), ((13, 10), 4, (4, 4)), ((20, 20), 4, (4, 4)), ((4, 3), 4, (4, 4)),
                ((9, 9), 4, (1, 1))]


@pytest.mark.parametrize("size,window,grid", BLOCK_SHAPES)
@pytest.mark.parametrize("mode", ["learnable", "zero", "avgpool", "dwconv"])
def test_sepvit_block_counts_itself_like_fvcore(size, window, grid, mode):
    attn = DepthwiseSeparableSelfAttention(DIM, HEADS, window, grid, window_token=mode)
    block = SepViTBlock(DIM, attn)
    counted = fvcore_count(block, torch.randn(1, *size, DIM))
    expected = block.macs(*size)
    assert counted.total == expected.fvcore
    assert counted.resample == expected.resample  # resized learnable tokens only
    parts = attn.macs_parts(*size)
    assert sum(p.paper for p in parts.values()) == attn.macs(*size).paper
    several = (-(-size[0] // window)) * (-(-size[1] // window)) > 1 and grid != (1, 1)
    assert (parts["pwa"].paper > 0) == several


@pytest.mark.parametrize("height,width,window", SHAPES)
def test_ptflops_agrees_with_fvcore_on_units(height, width, window):
    unit = WindowMultiHeadAttention(DIM, HEADS, window, shift=True)
    expected = unit.macs(height, width)
    counted = fvcore_count(unit, torch.randn(1, height, width, DIM)).total
    _ptflops_close(ptflops_count(unit, (height, width, DIM)), expected, counted)


# ------------------------------------------------------------------------------ fused attention
def test_fused_attention_is_counted_like_explicit():
    fused = SepViTConfig.preset("sepvit_micro_32", fused_attn=True).build()
    explicit = SepViTConfig.preset("sepvit_micro_32", fused_attn=False).build()
    x = torch.randn(1, 3, 32, 32)
    fused_count = fvcore_count(fused, x)
    assert fused_count.by_operator.get("scaled_dot_product_attention", 0) > 0  # the handle fired
    assert fused_count.total == fvcore_count(explicit, x).total
    # ptflops with the math kernel forced counts the fused model like the explicit one too.
    assert ptflops_count(fused, (3, 32, 32)) == ptflops_count(explicit, (3, 32, 32))


def test_fused_timm_twins_block_is_counted():
    from timm.models.twins import Block

    block = Block(dim=DIM, num_heads=HEADS, ws=1, sr_ratio=2)
    block.attn.fused_attn = True
    size = (8, 8)
    wrapped = _SizedBlock(block, size)
    x = torch.randn(1, 64, DIM)
    fused = fvcore_count(wrapped, x).total
    block.attn.fused_attn = False
    assert fused == fvcore_count(wrapped, x).total
    analytic = analytic_macs.transformer_block(8, 8, DIM, analytic_macs.twins_gsa(8, 8, DIM, 2))
    assert fused == analytic.fvcore


class _SizedBlock(torch.nn.Module):
    def __init__(self, block, size):
        super().__init__()
        self.block, self.size = block, size

    def forward(self, x):
        return self.block(x, self.size)


# ------------------------------------------------------------------------------ whole models, analytic == fvcore
@pytest.mark.parametrize("changes,img_size", [
    ({}, 32), ({}, 40), ({}, 48),                                   # 40, 48: padded maps, resized window tokens
    (dict(block_pattern="swin"), 40), (dict(block_pattern="twins"), 36), (dict(block_pattern="msa"), 32),
    (dict(window_token="zero", gsa=False), 44), (dict(dssa=False, gsa=False), 40),
    (dict(window_token="avgpool", inner_shortcuts=False, group_size=(1, 2, 2, 1)), 32),
    (dict(ope=False, cpe=False), 32), (dict(window_token="dwconv"), 40),
])
def test_model_analytic_equals_fvcore(changes, img_size):
    cfg = SepViTConfig.preset("sepvit_micro_32", **changes)
    model = cfg.build()
    counted = fvcore_count(model, torch.randn(1, 3, img_size, img_size))
    analytic = analytic_macs.model_macs(cfg, img_size)
    assert counted.total == analytic.fvcore
    assert counted.without_norms == analytic.paper


def test_model_ptflops_within_3_percent_of_fvcore():
    cfg = SepViTConfig.preset("sepvit_micro_64")
    model = cfg.build()
    for size in (64, 72):  # 72: padded maps, where some Linears lower to matmul and lose their bias add
        fvcore = fvcore_count(model, torch.randn(1, 3, size, size)).total
        _ptflops_close(ptflops_count(model, (3, size, size)), analytic_macs.model_macs(cfg, size), fvcore)


# ------------------------------------------------------------------------------ CLI, whole models at 224
@pytest.fixture(scope="module")
def table_224():
    return _run_main(["--models", "sepvit_tiny", "swin_tiny_patch4_window7_224", "twins_svt_small",
                      "--img-size", "224", "--format", "json"])


def _run_main(argv):
    out = io.StringIO()
    real = sys.stdout
    sys.stdout = out
    try:
        code = cx.main(argv)
    finally:
        sys.stdout = real
    assert code == 0
    return json.loads(out.getvalue())


def test_cli_json_models_at_224(table_224):
    rows = {r["model"]: r for r in table_224}
    assert list(rows) == ["sepvit_tiny", "swin_tiny_patch4_window7_224", "twins_svt_small"]
    for row in table_224:
        for key in ("params", "macs_fvcore", "macs_ptflops"):
            assert isinstance(row[key], int) and row[key] > 0
        assert abs(row["macs_ptflops"] - row["macs_fvcore"]) <= 0.03 * row["macs_fvcore"]
    ours = rows["sepvit_tiny"]
    assert abs(ours["macs_fvcore"] - 4.53e9) <= 0.015 * 4.53e9
    assert ours["macs_analytic_norms"] == ours["macs_fvcore"]
    assert ours["macs_analytic"] == ours["macs_fvcore_no_norms"]
    assert abs(ours["params"] - 31.18e6) <= 0.01 * 31.18e6
    for name, gmacs in (("swin_tiny_patch4_window7_224", 4.51), ("twins_svt_small", 2.94)):
        assert rows[name]["macs_analytic"] is None
        assert abs(rows[name]["macs_fvcore"] - gmacs * 1e9) <= 0.01 * gmacs * 1e9
    # Twins' README (2.8 G) leaves the attention matmuls out; fvcore minus norms minus them comes close.
    twins = rows["twins_svt_small"]
    assert abs(twins["macs_fvcore_no_norms"] - twins["fvcore_attention_matmuls"] - 2.8e9) < 0.03 * 2.8e9


def test_cli_blocks_json_at_224():
    rows = _run_main(["--blocks", "--variant", "sepvit_tiny", "--img-size", "224", "--format", "json"])
    assert [r["stage"] for r in rows] == [1, 2, 3, 4]
    for row in rows:
        for unit in UNITS:
            if row[unit] is not None:  # measured (timm's own blocks for the pairs) == analytic in fvcore's convention
                assert row[unit] == row[f"{unit}_analytic_norms"], (row["stage"], unit)
                assert row[f"{unit}_analytic"] < row[unit]
        # The paper's claim: one SepViT block costs about half a Swin pair.
        assert 0.45 < row["ratio_to_swin_pair_fvcore"] < 0.56
        assert 0.45 < row["ratio_to_swin_pair_analytic"] < 0.56
    assert rows[1]["sepvit_gsa_block"] is not None and rows[0]["sepvit_gsa_block"] is None


def test_cli_csv_and_table():
    out = io.StringIO()
    real, sys.stdout = sys.stdout, out
    try:
        assert cx.main(["--blocks", "--variant", "sepvit_micro_32", "--format", "csv"]) == 0
        assert cx.main(["--models", "sepvit_micro_32", "--no-ptflops", "--model-kwargs", "block_pattern=swin"]) == 0
    finally:
        sys.stdout = real
    text = out.getvalue()
    csv_part, table_part = text.split("GMACs (multiply-add = 1", 1)
    rows = list(csv.DictReader(io.StringIO(csv_part)))
    assert len(rows) == 4 and {"stage", "sepvit_block", "swin_pair", "twins_pair", "msa_block"} <= set(rows[0])
    assert all(int(r["sepvit_block"]) == int(r["sepvit_block_analytic_norms"]) for r in rows)
    assert "fvcore" in table_part and "ptflops" in table_part and "sepvit_micro_32" in table_part


# ------------------------------------------------------------------------------ bad input
def test_cli_unknown_model_suggests_names():
    proc = subprocess.run([sys.executable, str(REPO / "analysis" / "complexity.py"), "--models", "swin_tiny_patch4",
                           "--format", "json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert "swin_tiny_patch4_window7_224" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [
    [], ["--models"], ["--models", "sepvit_micro_32", "--blocks"], ["--blocks", "--format", "xml"],
    ["--models", "sepvit_micro_32", "--img-size", "big"],
])
def test_cli_bad_usage_exits_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cx.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--help" in err


@pytest.mark.parametrize("argv,fragment", [
    (["--models", "sepvit_micro_32", "--img-size", "0"], "positive"),
    (["--blocks", "--variant", "sepvit_tin"], "sepvit_tiny"),
    (["--models", "sepvit_micro_32", "--model-kwargs", "window_size"], "field=value"),
    (["--models", "sepvit_micro_32", "--model-kwargs", "no_such_field=1"], "no_such_field"),
    (["--models", "sepvit_micro_32", "--model-kwargs", "block_pattern=cswin"], "block_pattern"),
])
def test_cli_bad_values_exit_2(argv, fragment, capsys):
    assert cx.main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1


def test_fixed_size_peer_is_built_for_the_size_or_refused():
    row = counts.measure_model("swin_tiny_patch4_window7_224", 256, with_ptflops=False)
    assert row["img_size"] == 256 and row["macs_fvcore"] > 4.51e9  # Swin rebuilt for 256 (padded windows)
    with pytest.raises(UsageError, match="230 px"):
        counts.measure_model("twins_svt_small", 230, with_ptflops=False)


def test_config_refusing_a_size_is_run_at_that_size_with_a_note():
    cfg, note = counts.build_config("sepvit_tiny", 112)  # group of 2x2 windows does not fit stage 3 at 112
    assert cfg.img_size == 224 and "112" in note
    cfg, note = counts.build_config("sepvit_tiny", 256)
    assert cfg.img_size == 256 and note == ""


# ------------------------------------------------------------------------------ sweeps used by the notebook
def test_attention_vs_resolution_scaling():
    rows = analytic_macs.attention_vs_resolution([224, 448], dim=96, stride=4, window=7)
    get = {(r["resolution"], r["kind"]): r["macs"] for r in rows}
    # Windowed attention is linear in tokens (4x tokens -> 4x MACs); global MSA is dominated by (HW)^2.
    assert get[(448, "Swin W-MSA")] == 4 * get[(224, "Swin W-MSA")]
    assert get[(448, "global MSA")] > 12 * get[(224, "global MSA")]
    # PWA's N HW C term is quadratic in tokens (16x); its share of DSSA grows with resolution.
    assert get[(448, "PWA N HW C term")] == 16 * get[(224, "PWA N HW C term")]
    share = [get[(r, "SepViT PWA")] / get[(r, "SepViT DSSA (DWA + PWA + proj)")] for r in (224, 448)]
    assert share[1] > share[0]


def test_pwa_crossover_matches_the_terms():
    cross = analytic_macs.pwa_crossovers(dim=96, window=7)
    assert cross["tokens_vs_dwa_matmuls"] == 2 * 50**2
    for side, above in ((56, False), (84, True)):  # 3136 and 7056 tokens around the 5000-token crossover
        n, hw = (side // 7) ** 2, side * side
        assert (n * hw * 96 > 2 * n * 50**2 * 96) == above


def test_window_group_sweep_and_patterns():
    rows = blocks.window_group_sweep("sepvit_tiny", stage=1, windows=[4, 7, 14])
    by = {(r["sweep"], r["window"]): r for r in rows}
    cfg = SepViTConfig.preset("sepvit_tiny")
    assert by[("window", 7)]["block"] == analytic_macs.block_macs(cfg, 1, 0, 28, 28).paper
    assert by[("group", 14)]["block"] == analytic_macs.block_macs(cfg, 1, 1, 28, 28).paper
    assert by[("group", 28)]["pwa"] == 0  # one group covers the map: no PWA
    patterns = {r["block_pattern"]: r for r in blocks.pattern_comparison("sepvit_tiny", [224])}
    assert set(patterns) == set(BLOCK_PATTERNS)
    assert patterns["sepvit"]["macs_analytic_norms"] == analytic_macs.model_macs(cfg).fvcore
    assert patterns["msa"]["macs_analytic"] > patterns["swin"]["macs_analytic"]


# ------------------------------------------------------------------------------ slow: the reference table
@pytest.mark.slow
@pytest.mark.parametrize("name", ["sepvit_lite", "sepvit_small", "sepvit_base"])
def test_reference_variants_at_224(name):
    row = counts.measure_model(name, 224)
    ref = published.PUBLISHED[name]
    assert abs(row["macs_fvcore"] - ref["gmacs"] * 1e9) <= 0.015 * ref["gmacs"] * 1e9
    assert abs(row["params"] - ref["params_m"] * 1e6) <= 0.01 * ref["params_m"] * 1e6
    assert row["macs_analytic_norms"] == row["macs_fvcore"]


def test_cli_help_explains_conventions(capsys):
    with pytest.raises(SystemExit) as info:
        cx.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for phrase in ("MACs (one multiply-add = 1)", "fvcore", "ptflops", "LayerNorm", "scaled_dot_product_attention"):
        assert phrase in text


# ------------------------------------------------------------------------------ published values and conventions
@pytest.mark.parametrize("value,digits", [(2.9, 1), (4.53, 2), (15, 0), (15.0, 0), (0.57, 2), (150, 0)])
def test_published_precision(value, digits):
    assert published.published_precision(value) == digits


def test_rounds_to_reads_the_published_precision():
    assert published.rounds_to(2.94, 2.9) and published.rounds_to(2.85, 2.9) and not published.rounds_to(2.809, 2.9)
    assert published.rounds_to(2.809, 2.8) and not published.rounds_to(4.519, 4.53) and published.rounds_to(4.533, 4.53)


def test_published_comparison_explains_twins_both_sources(table_224):
    comparison = published.published_comparison(table_224)
    twins = {c["source"]: c for c in comparison if c["model"] == "twins_svt_small"}
    assert len(twins) == 2  # its own README and the SepViT paper's table
    readme = next(c for source, c in twins.items() if "Twins README" in source)
    paper = next(c for source, c in twins.items() if "SepViT paper" in source)
    # Twins' README (2.8 G) leaves the attention matmuls out; the SepViT paper (2.9 G) counts them.
    assert readme["matches"] == ["no_attention_matmuls"] and readme["published_gmacs"] == 2.8
    assert "paper" in paper["matches"] and "no_attention_matmuls" not in paper["matches"]
    row = next(r for r in table_224 if r["model"] == "twins_svt_small")
    assert paper["paper_gmacs"] - readme["no_attention_matmuls_gmacs"] == pytest.approx(
        row["fvcore_attention_matmuls"] / 1e9)
    assert readme["attention_matmuls_gmacs"] == pytest.approx(row["fvcore_attention_matmuls"] / 1e9)
    swin = next(c for c in comparison if c["model"] == "swin_tiny_patch4_window7_224")
    assert "paper" in swin["matches"] and "no_attention_matmuls" not in swin["matches"]
    sepvit = next(c for c in comparison if c["model"] == "sepvit_tiny")
    assert sepvit["matches"] and "fvcore" in sepvit["matches"] and sepvit["closest"] in sepvit["matches"]
    sentences = published.published_sentences(comparison)
    assert len(sentences) == len(comparison) == 4
    assert any("2.8 G (Twins README" in s and "without attention matmuls" in s for s in sentences)


def test_published_comparison_reports_a_figure_no_convention_matches():
    row = dict(model="m", params=1e6, macs_fvcore=int(1.30e9), macs_fvcore_no_norms=int(1.29e9),
               fvcore_attention_matmuls=int(0.1e9), fvcore_norms=int(0.01e9), macs_ptflops=None)
    own = {"m": dict(params_m=1.0, gmacs=1.5, source="somewhere")}
    (c,) = published.published_comparison([row], own=own, elsewhere=[])
    assert c["matches"] == [] and c["closest"] == "fvcore" and c["ptflops_gmacs"] is None
    assert published.convention_counts(row)["no_attention_matmuls"] == int(1.19e9)
    assert "matches no convention" in published.published_sentences([c])[0]


# ------------------------------------------------------------------------------ time against MACs
@pytest.mark.parametrize("op,counted", [("aten::addmm", True), ("aten::bmm", True), ("aten::mm", True),
                                        ("aten::_scaled_dot_product_flash_attention_for_cpu", True),
                                        ("aten::mkldnn_convolution", True), ("aten::copy_", False),
                                        ("aten::native_layer_norm", False), ("aten::roll", False),
                                        ("aten::_softmax", False), ("aten::gelu", False)])
def test_counted_by_macs(op, counted):
    assert tvm.counted_by_macs(op) is counted


def test_follows_macs_is_a_symmetric_factor():
    assert tvm.follows_macs(0.5, 0.5) and tvm.follows_macs(0.59, 0.5) and tvm.follows_macs(0.42, 0.5)
    assert not tvm.follows_macs(0.61, 0.5) and not tvm.follows_macs(0.41, 0.5)
    assert tvm.follows_macs(0.7, 0.5, tolerance=0.5)


def _block_row(**units):
    row = dict(stage=2, batch_size=4, reference="swin_pair")
    for name in UNITS:
        ms, macs, time_ratio, macs_ratio = units.get(name, (None, None, None, None))
        row.update({f"{name}_ms": ms, f"{name}_ms_q1": ms and ms * 0.9, f"{name}_ms_q3": ms and ms * 1.2,
                    f"{name}_macs": macs, f"{name}_time_ratio": time_ratio, f"{name}_time_ratio_q1": time_ratio,
                    f"{name}_time_ratio_q3": time_ratio, f"{name}_macs_ratio": macs_ratio})
    return row


def test_block_time_vs_macs_rows():
    row = _block_row(sepvit_block=(10.0, 100e6, 0.5, 0.5), swin_pair=(20.0, 200e6, 1.0, 1.0),
                     msa_block=(10.0, 400e6, 0.5, 2.0))
    out = {r["name"]: r for r in tvm.block_time_vs_macs([row])}
    assert list(out) == ["sepvit_block", "swin_pair", "msa_block"]  # the units' order, untimed ones left out
    assert out["sepvit_block"]["gmacs_per_s"] == pytest.approx(100e6 * 4 / 0.010 / 1e9)
    assert out["sepvit_block"]["follows"] and out["swin_pair"]["follows"]
    assert out["msa_block"]["time_per_mac"] == pytest.approx(0.25) and out["msa_block"]["follows"] is False
    noise = tvm.timing_noise(list(out.values()))
    assert noise["max_relative_iqr"] == pytest.approx(0.3) and noise["candidates"] == 3


def test_block_time_vs_macs_reads_a_real_benchmark():
    rows = benchmark_blocks("sepvit_nano_32", Settings(batch_size=2, img_size=32, rounds=2, warmup=0), stages=[4],
                            units=["sepvit_block", "swin_pair", "msa_block"])
    out = tvm.block_time_vs_macs(rows)
    assert [r["name"] for r in out] == ["sepvit_block", "swin_pair", "msa_block"]
    for r in out:
        assert r["gmacs_per_s"] == pytest.approx(r["macs"] * 2 / (r["ms"] / 1000) / 1e9)
        assert r["macs_ratio"] == pytest.approx(r["macs"] / out[1]["macs"])
    assert out[1]["time_ratio"] == 1.0 and out[1]["follows"]


def _model_row(name, ms, macs, time_ratio, reference="a"):
    return dict(model=name, reference=reference, ms_per_batch=ms, ms_per_batch_q1=ms, ms_per_batch_q3=ms,
                macs=macs, batch_size=8, time_ratio=time_ratio, speed_ratio_q1=1 / time_ratio,
                speed_ratio_q3=1 / time_ratio)


def test_model_time_vs_macs_rows():
    out = tvm.model_time_vs_macs([_model_row("a", 100.0, 4e9, 1.0), _model_row("b", 70.0, 2e9, 0.7)])
    assert out[1]["macs_ratio"] == 0.5 and out[1]["time_per_mac"] == pytest.approx(1.4)
    assert out[1]["follows"] is False and out[0]["follows"]
    assert out[1]["gmacs_per_s"] == pytest.approx(2e9 * 8 / 0.07 / 1e9)
    with pytest.raises(ValueError, match="no MAC count"):
        tvm.model_time_vs_macs([_model_row("a", 100.0, None, 1.0)])


def test_op_profile_splits_mac_operators_from_the_rest():
    a, b, big = torch.randn(256, 256), torch.randn(256, 256), torch.randn(2_000_000)
    matmul = tvm.op_profile(lambda: a @ b, repeats=2, macs=256**3)
    assert matmul["mac_share"] > 0.9 and matmul["mac_gmacs_per_s"] > 0
    assert matmul["mac_gmacs_per_s"] == pytest.approx(256**3 / (matmul["mac_ms"] / 1000) / 1e9)
    elementwise = tvm.op_profile(lambda: big.exp(), repeats=2)
    assert elementwise["mac_share"] == 0 and elementwise["top_other"][0][0] == "aten::exp"
    assert elementwise["mac_gmacs_per_s"] is None
    assert elementwise["total_ms"] == pytest.approx(elementwise["other_ms"])


def test_profile_stage_units_at_a_small_stage():
    rows = tvm.profile_stage_units("sepvit_nano_32", 32, batch_size=2, stages=[4],
                                  units=["sepvit_block", "swin_pair"], repeats=1)
    analytic = blocks.block_comparison("sepvit_nano_32", 32, measure=False)[3]
    assert [(r["stage"], r["name"]) for r in rows] == [(4, "sepvit_block"), (4, "swin_pair")]
    for r in rows:
        assert r["macs"] == analytic[f"{r['name']}_analytic"]
        assert 0 < r["mac_share"] < 1 and r["mac_gmacs_per_s"] > 0 and r["top_other"]


def _profile(mac_ms, other_ms, rate=None, top=()):
    total = mac_ms + other_ms
    return dict(mac_ms=mac_ms, other_ms=other_ms, total_ms=total, mac_share=mac_ms / total, mac_gmacs_per_s=rate,
                top_other=list(top))


def test_time_sentences_split_the_gap_between_mac_and_other_operators():
    ref = dict(group="stage 1", name="ref", title="Ref", reference="ref", time_ratio=1.0, macs_ratio=1.0,
               time_per_mac=1.0, follows=True)
    follows = dict(ref, name="a", title="A", time_ratio=0.5, macs_ratio=0.5, time_per_mac=1.0, follows=True)
    overhead = dict(ref, name="b", title="B", time_ratio=1.0, macs_ratio=0.5, time_per_mac=2.0, follows=False)
    fast = dict(ref, name="c", title="C", time_ratio=0.5, macs_ratio=2.0, time_per_mac=0.25, follows=False)
    contradicted = dict(ref, name="d", title="D", time_ratio=2.0, macs_ratio=1.0, time_per_mac=2.0, follows=False)
    unprofiled = dict(ref, name="e", title="E", time_ratio=2.0, macs_ratio=1.0, time_per_mac=2.0, follows=False)
    small = dict(ref, name="f", title="F", time_ratio=2.0, macs_ratio=1.0, time_per_mac=2.0, follows=False)
    profiles = {("stage 1", "ref"): _profile(8.0, 2.0, rate=10.0),
                # half the MACs: 4 + 1 ms expected; MAC operators at the reference's rate, 5 ms more elsewhere
                ("stage 1", "b"): _profile(4.0, 6.0, rate=10.0, top=[("aten::roll", 3.0)]),
                # twice the MACs: 16 + 4 ms expected; MAC operators 4x as fast, others as expected
                ("stage 1", "c"): _profile(4.0, 4.0, rate=40.0),
                # timed 2x slower, but the profile shows it faster than its MACs predict
                ("stage 1", "d"): _profile(4.0, 2.0, rate=20.0),
                # timed 2x slower, profiled only 1.1x: within the tolerance, no reason can be read off it
                ("stage 1", "f"): _profile(8.0, 3.0, rate=10.0)}
    lines = tvm.time_sentences([ref, follows, overhead, fast, contradicted, unprofiled, small], profiles)
    assert len(lines) == 6  # the reference itself gets no sentence
    assert lines[0].endswith("time follows MACs (within 20 %).")
    assert "2.00x the time its MACs predict (slower)" in lines[1]
    assert "MAC operators +0.0 ms, at 10 vs 10 GMAC/s" in lines[1] and "other operators +5.0 ms" in lines[1]
    assert "60 % of its operator time vs 20 %" in lines[1] and "aten::roll 3.0 ms" in lines[1]
    assert lines[1].endswith("mostly the operators outside the MAC count.")
    assert "(faster)" in lines[2] and "MAC operators -12.0 ms, at 40 vs 10 GMAC/s" in lines[2]
    assert "other operators +0.0 ms" in lines[2] and lines[2].endswith("mostly its MAC operators.")
    assert "does not reproduce the gap" in lines[3] and "0.60x the time its MACs predict" in lines[3]
    assert lines[4].endswith("(slower).")
    assert "does not reproduce the gap" in lines[5] and "1.10x" in lines[5] and "mostly" not in lines[5]


def test_median_interval_from_order_statistics():
    values = list(range(1, 16))  # 15 rounds: ranks 4 and 12 cover 96.5 %, ranks 5 and 11 only 88.2 %
    low, high, coverage = tvm.median_interval(values[::-1])
    assert (low, high) == (4, 12) and coverage == pytest.approx(1 - 2 * sum(math.comb(15, i) for i in range(4)) / 2**15)
    assert tvm.median_interval([3.0, 1.0, 2.0]) == (1.0, 3.0, 0.75)  # too few rounds for 95 %: the range, 75 %
    assert tvm.median_interval([5.0]) == (5.0, 5.0, 0.0)
    with pytest.raises(ValueError, match="no values"):
        tvm.median_interval([])


def test_the_spread_rule_judges_time_against_macs_by_the_rounds_own_interval():
    steady = [0.50, 0.51, 0.49, 0.50, 0.52, 0.48, 0.50, 0.51, 0.49, 0.50]
    noisy = [0.35, 0.70, 0.45, 0.62, 0.50, 0.40, 0.66, 0.55, 0.38, 0.60]
    row = _block_row(sepvit_block=(10.0, 100e6, 0.5, 0.6), msa_block=(10.0, 100e6, 0.5, 0.6),
                     swin_pair=(20.0, 200e6, 1.0, 1.0))
    row["sepvit_block_time_ratio_rounds"], row["msa_block_time_ratio_rounds"] = steady, noisy
    row["swin_pair_time_ratio_rounds"] = [1.0] * 10
    out = {r["name"]: r for r in tvm.block_time_vs_macs([row], tolerance=None)}
    assert out["sepvit_block"]["follows"] is False  # 0.6 lies outside [0.49, 0.51]: faster than its MACs, resolved
    assert out["msa_block"]["follows"] is True  # the same medians, but these rounds cannot tell 0.5 from 0.6
    assert out["sepvit_block"]["spread_tolerance"] == pytest.approx(0.02) and out["msa_block"]["spread_tolerance"] > 0.2
    assert {r["name"]: r["follows"] for r in tvm.block_time_vs_macs([row])}["msa_block"] is True  # fixed 20 %
    lines = tvm.time_sentences(list(out.values()), tolerance=None)
    assert "the MAC ratio lies outside the 98 % interval [0.49, 0.51] of the time ratio over 10 rounds" in lines[0]
    assert lines[1].endswith("time follows MACs (the MAC ratio lies inside the 98 % interval [0.38, 0.66] of the "
                             "time ratio over 10 rounds).")
    noise = tvm.timing_noise(list(out.values()))
    assert noise["max_spread_tolerance"] == out["msa_block"]["spread_tolerance"]
    without = tvm.block_time_vs_macs([_block_row(sepvit_block=(10.0, 100e6, 0.5, 0.6))], tolerance=None)
    assert without[0]["follows"] is None and tvm.time_sentences(without, tolerance=None)[0].endswith(
        "no rounds to judge by.")


def test_unit_vs_unit_divides_two_units_round_by_round():
    row = _block_row(ours_swin_pair=(10.0, 210e6, 1.0, 1.05), sepvit_block=(5.0, 100e6, 0.5, 0.5),
                     swin_pair=(10.0, 200e6, 1.0, 1.0))
    row["ours_swin_pair_time_ratio_rounds"] = [1.0, 1.2, 1.1, 0.9, 1.0]
    row["sepvit_block_time_ratio_rounds"] = [0.5, 0.6, 0.55, 0.45, 0.5]
    (found,) = tvm.unit_vs_unit([row], "sepvit_block", "ours_swin_pair")
    assert found["time_ratio"] == pytest.approx(0.5) and found["low"] == pytest.approx(0.5)
    assert found["macs_ratio"] == pytest.approx(100 / 210) and found["rounds"] == 5 and found["stage"] == 2
    assert tvm.unit_vs_unit([row], "sepvit_block", "msa_block") == []  # not timed
