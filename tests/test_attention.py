"""Attention maps: recording on the real models, placement in image space, statistics."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import sepvit  # noqa: E402,F401  (registers the models with timm)
from analysis import attention as A  # noqa: E402
from sepvit import SepViTConfig, record_attention  # noqa: E402
from sepvit.attention import AttentionProbe, WindowMultiHeadAttention  # noqa: E402

EXPECTED_KINDS = {
    "sepvit": {"dwa", "pwa", "msa"},
    "swin": {"swin", "msa"},
    "twins": {"twins_local", "twins_global", "msa"},
    "msa": {"msa"},
    "local": {"local", "msa"},
}


def micro(**changes) -> SepViTConfig:
    base = dict(embed_dims=(16, 32, 64, 128), num_heads=(1, 2, 2, 4), fused_attn=True)  # the preset is explicit
    return SepViTConfig.preset("sepvit_micro_32", **{**base, **changes})


def record(model: torch.nn.Module, x: torch.Tensor):
    with torch.no_grad(), record_attention(model) as maps:
        out = model(x)
    return out, maps


@pytest.fixture(scope="module")
def tiny_run():
    torch.manual_seed(0)
    model = timm.create_model("sepvit_tiny").eval()
    assert model.config.fused_attn
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        plain = model(x)
    out, maps = record(model, x)
    return model, plain, out, maps


# ---------------------------------------------------------------------------------- recording, real models
def test_tiny_224_shapes_rows_and_output(tiny_run):
    model, plain, out, maps = tiny_run
    dwa0 = A.select(maps, "dwa", "stages.0.blocks.0")
    pwa0 = A.select(maps, "pwa", "stages.0.blocks.0")
    pwa1 = A.select(maps, "pwa", "stages.1.blocks.0")
    assert [tuple(r["attn"].shape) for r in dwa0] == [(1, 64, 3, 50, 50)]
    assert [tuple(r["attn"].shape) for r in pwa0] == [(1, 3, 64, 64)]
    assert [tuple(r["attn"].shape) for r in pwa1] == [(1, 6, 16, 16)]
    assert dwa0[0]["grid"] == (8, 8) and dwa0[0]["window"] == (7, 7) and dwa0[0]["stride"] == 4
    for r in maps:
        torch.testing.assert_close(r["attn"].sum(-1), torch.ones_like(r["attn"].sum(-1)), atol=1e-5, rtol=0)
    assert (out - plain).abs().max().item() < 1e-5


def test_window_token_and_pwa_maps_of_tiny(tiny_run):
    _, _, _, maps = tiny_run
    dwa = A.select(maps, "dwa", "stages.0.blocks.0")[0]
    token_map = A.window_token_attention(dwa)
    assert token_map.shape == (3, 56, 56)
    # every window's pixels carry what the token does not keep for itself
    per_window = token_map.reshape(3, 8, 7, 8, 7).sum((2, 4))
    np.testing.assert_allclose(per_window, 1 - A.window_token_self_attention(dwa), atol=1e-5)
    frame = A.pwa_matrix(A.select(maps, "pwa", "stages.1.blocks.0")[0])
    assert frame.shape == (16, 16) and frame.index[5] == "(1,1)" and frame.columns[-1] == "(3,3)"
    np.testing.assert_allclose(frame.sum(1), 1, atol=1e-5)


@pytest.mark.parametrize("pattern", sorted(EXPECTED_KINDS))
def test_every_block_pattern_yields_its_kinds_and_same_output(pattern):
    torch.manual_seed(0)
    model = micro(block_pattern=pattern).build().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = model(x)
    out, maps = record(model, x)
    assert {r["kind"] for r in maps} == EXPECTED_KINDS[pattern]
    assert (out - plain).abs().max().item() < 1e-5
    blocks = [f"stages.{s}.blocks.{i}" for s, d in enumerate(model.config.depths) for i in range(d)]
    assert [b for b in dict.fromkeys(r["block"] for r in maps)] == blocks  # forward order, every block
    stats = A.attention_statistics(maps, variant=pattern)
    assert set(stats["kind"]) >= EXPECTED_KINDS[pattern] and stats["mean_distance_px"].notna().all()
    assert list(stats.columns[:6]) == ["block", "kind", "stage", "head", "mean_distance_px", "entropy"]


def test_recording_costs_nothing_when_off(monkeypatch):
    model = micro().build().eval()
    probes = [m for m in model.modules() if isinstance(m, AttentionProbe)]
    fused_calls = []
    original = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: fused_calls.append(1) or original(*a, **k))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        model(x)
    assert len(fused_calls) == len(probes)  # every unit took the fused kernel
    with record_attention(model) as maps, torch.no_grad():
        model(x)
    assert len(fused_calls) == len(probes) and len(maps) == len(probes)  # explicit path while recording
    assert all(p.records is None for p in probes)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# ---------------------------------------------------------------------------------- placement in image space
def window_record(kind, attn, map_size, window, stride, shift=0, token=False):
    gh, gw = -(-map_size[0] // window), -(-map_size[1] // window)
    return dict(block="stages.1.blocks.0", kind=kind, attn=attn, map_size=map_size, window=(window, window),
                grid=(gh, gw), padding=(gh * window - map_size[0], gw * window - map_size[1]), shift=shift,
                stride=stride, window_token=token)


def test_stitched_window_token_map_peaks_on_the_right_pixels():
    # 6x6 map, window 4 -> 2x2 windows on an 8x8 padded map; stride 2 -> 12x12 image.
    attn = torch.full((1, 4, 1, 17, 17), 1 / 17)
    attn[0, 3, 0, 0] = 0.0
    attn[0, 3, 0, 0, 1 + 1 * 4 + 0] = 1.0  # window (1,1), its pixel (1,0): feature pixel (5,4)
    rec = window_record("dwa", attn, (6, 6), 4, stride=2, token=True)
    fmap = A.window_token_attention(rec)[0]
    assert fmap.shape == (6, 6)
    assert np.unravel_index(fmap.argmax(), fmap.shape) == (5, 4)
    image = A.upsample_to_image(fmap, 2, (12, 12))
    peak = np.argwhere(image == image.max())
    assert {tuple(p) for p in peak} == {(10, 8), (10, 9), (11, 8), (11, 9)}
    # padding is cropped: window (0,1) covers feature columns 4..7, only 4..5 exist
    assert image.shape == (12, 12)


@pytest.mark.parametrize("shift", [0, 2])
def test_swin_query_map_lands_on_the_right_pixels(shift):
    # 8x8 map, window 4, stride 2. Original pixel (2, 5); key: original pixel (3, 4), same window either way.
    h = w = 8
    query, key = (2, 5), (3, 4)
    rolled = lambda p: ((p[0] - shift) % h, (p[1] - shift) % w)  # noqa: E731
    (qy, qx), (ky, kx) = rolled(query), rolled(key)
    assert (qy // 4, qx // 4) == (ky // 4, kx // 4)  # same (shifted) window
    attn = torch.full((1, 4, 1, 16, 16), 1 / 16)
    win = (qy // 4) * 2 + qx // 4
    q_pos, k_pos = (qy % 4) * 4 + qx % 4, (ky % 4) * 4 + kx % 4
    attn[0, win, 0, q_pos] = 0.0
    attn[0, win, 0, q_pos, k_pos] = 1.0
    rec = window_record("swin", attn, (h, w), 4, stride=2, shift=shift)
    assert A.query_location(rec, (query[0] * 2 + 1, query[1] * 2)) == (win, q_pos)  # any image pixel of it
    fmap = A.query_attention(rec, (query[0] * 2 + 1, query[1] * 2))[0]
    assert np.unravel_index(fmap.argmax(), fmap.shape) == key
    assert fmap.sum() == pytest.approx(1.0)


def test_real_shifted_swin_block_is_unrolled_to_its_window():
    """A real SW-MSA unit: the query's keys (non-zero weights) form its shifted window, masked regions cut off."""
    torch.manual_seed(0)
    unit = WindowMultiHeadAttention(8, 2, window_size=4, shift=True, stride=2).eval()
    with torch.no_grad(), record_attention(unit) as maps:
        unit(torch.randn(1, 8, 8, 8))
    rec = maps[0]
    assert rec["shift"] == 2
    interior = A.query_attention(rec, (3 * 2, 3 * 2)).sum(0)  # feature (3,3): rolled (1,1), original window 2..5
    corner = A.query_attention(rec, (0, 0)).sum(0)  # feature (0,0): only the wrapped-in 2x2 corner region
    expected_interior = np.zeros((8, 8), bool)
    expected_interior[2:6, 2:6] = True
    expected_corner = np.zeros((8, 8), bool)
    expected_corner[:2, :2] = True
    np.testing.assert_array_equal(interior > 1e-6, expected_interior)
    np.testing.assert_array_equal(corner > 1e-6, expected_corner)
    ys, xs = A.window_grid_lines(rec)
    assert list(ys) == [0, 4, 12, 16]  # borders at shift, shift + window, in image pixels (stride 2)


def test_pwa_window_map_and_twins_global_query_map():
    pwa = torch.zeros(1, 1, 4, 4)
    pwa[0, 0, :, 0] = 1.0
    pwa[0, 0, 3] = torch.tensor([0.1, 0.2, 0.3, 0.4])
    rec = dict(block="b", kind="pwa", attn=pwa, map_size=(8, 8), window=(4, 4), grid=(2, 2), padding=(0, 0),
               shift=0, stride=1)
    fmap = A.pwa_window_attention(rec, (6, 5))[0]  # window (1,1)
    np.testing.assert_allclose(fmap[:4, :4], 0.1)
    np.testing.assert_allclose(fmap[4:, 4:], 0.4)
    glob = torch.zeros(1, 1, 64, 4)
    glob[0, 0, :, 2] = 1.0  # every query attends to key cell (1, 0)
    rec = dict(block="b", kind="twins_global", attn=glob, map_size=(8, 8), kv_size=(2, 2), sr_ratio=4, stride=1)
    fmap = A.query_attention(rec, (0, 7))[0]
    assert fmap.sum() == pytest.approx(1.0) and np.all(fmap[4:, :4] == 1 / 16) and fmap[:4].sum() == 0


# ---------------------------------------------------------------------------------- statistics
def test_mean_distance_and_entropy_of_identity_and_uniform_attention():
    # 2x2 map in one 2x2 window, stride 4: keys at 0, 1, 1 and sqrt(2) feature pixels from every query.
    identity = torch.eye(4).reshape(1, 1, 1, 4, 4)
    uniform = torch.full((1, 1, 1, 4, 4), 0.25)
    for kind in ("msa", "swin"):
        rec = window_record(kind, identity, (2, 2), 2, stride=4)
        assert A.mean_attention_distance(rec)[0] == pytest.approx(0.0)
        assert A.attention_entropy(rec)[0] == pytest.approx(0.0, abs=1e-9)
        rec = window_record(kind, uniform, (2, 2), 2, stride=4)
        assert A.mean_attention_distance(rec)[0] == pytest.approx(4 * (2 + math.sqrt(2)) / 4)
        assert A.attention_entropy(rec)[0] == pytest.approx(math.log(4))


def test_pwa_and_padding_and_token_in_statistics():
    # PWA, 2x2 grid of 3x3 windows, stride 2: window origins 0, 3, 3 and 3*sqrt(2) pixels of the map apart.
    pwa = dict(block="stages.0.blocks.0", kind="pwa", attn=torch.full((1, 1, 4, 4), 0.25), map_size=(6, 6),
               window=(3, 3), grid=(2, 2), padding=(0, 0), shift=0, stride=2)
    assert A.mean_attention_distance(pwa)[0] == pytest.approx(2 * (6 + 3 * math.sqrt(2)) / 4)
    # DWA with a token and padding: 3x3 map in one 4x4 window -> only the 9 valid pixel queries count;
    # each query attends half to the token and half to the key at its right (distance 1, stride 1).
    attn = torch.zeros(1, 1, 1, 17, 17)
    attn[..., 0] = 0.5
    for p in range(16):
        attn[0, 0, 0, 1 + p, 1 + (p // 4) * 4 + (p % 4 + 1) % 4] += 0.5 if p % 4 < 3 else 0.0
        attn[0, 0, 0, 1 + p, 1 + p] += 0.5 if p % 4 == 3 else 0.0  # padded column: distance 0, not counted
    attn[0, 0, 0, 0, :] = 1 / 17
    rec = window_record("dwa", attn, (3, 3), 4, stride=1, token=True)
    stats = A.record_statistics(rec)
    assert stats["mean_distance"][0] == pytest.approx(1.0)  # the token's share is set aside, not a distance
    assert stats["token_share"][0] == pytest.approx(0.5)
    assert stats["entropy"][0] == pytest.approx(math.log(2))


def test_uniform_dwa_then_uniform_pwa_reach_like_uniform_global_attention():
    # Chaining uniform DWA (over window pixels) and uniform PWA spreads a query evenly over the whole map:
    # the composed block must equal uniform MSA on the same 8x8 map (distance and entropy).
    dwa = window_record("dwa", torch.full((1, 4, 1, 17, 17), 1 / 17), (8, 8), 4, stride=2, token=True)
    pwa = dict(dwa, kind="pwa", attn=torch.full((1, 1, 4, 4), 0.25))
    msa = window_record("msa", torch.full((1, 1, 1, 64, 64), 1 / 64), (8, 8), 8, stride=2)
    stats = A.attention_statistics([dwa, pwa, msa])
    composed = stats[stats.kind == "dwa+pwa"].iloc[0]
    glob = stats[stats.kind == "msa"].iloc[0]
    assert composed.mean_distance_px == pytest.approx(glob.mean_distance_px)
    assert composed.entropy == pytest.approx(math.log(64))
    assert stats.stage.tolist() == [1, 1, 1, 1]


def test_pwa_window_map_directions():
    pwa = torch.zeros(1, 1, 4, 4)
    pwa[0, 0, :3, 0] = 1.0
    pwa[0, 0, 3] = torch.tensor([0.1, 0.2, 0.3, 0.4])
    rec = dict(block="b", kind="pwa", attn=pwa, map_size=(6, 6), window=(3, 3), grid=(2, 2), padding=(0, 0),
               shift=0, stride=2)
    into = A.pwa_window_attention(rec, (0, 1), direction="to")[0]  # who reads window (0,0): everyone, 1 or 0.1
    np.testing.assert_allclose(into[:3, 3:], 1.0)
    np.testing.assert_allclose(into[3:, 3:], 0.1)
    received = A.pwa_received_attention(rec, batch=0)
    np.testing.assert_allclose(received, [[(3 + 0.1) / 4, 0.2 / 4], [0.3 / 4, 0.4 / 4]])
    with pytest.raises(ValueError, match="direction"):
        A.pwa_window_attention(rec, (0, 1), direction="sideways")


# ---------------------------------------------------------------------------------- one block, one query
def dssa_pair(window_rows=None):
    """DWA and PWA records of one block: 8x8 map, 2x2 windows of 4, window tokens, stride 2, one head."""
    dwa = window_record("dwa", torch.full((1, 4, 1, 17, 17), 1 / 17), (8, 8), 4, stride=2, token=True)
    if window_rows is not None:
        dwa["attn"] = window_rows
    pwa = dict(dwa, kind="pwa", attn=torch.full((1, 1, 4, 4), 0.25))
    return dwa, pwa


def test_dssa_query_map_reads_other_windows_at_the_query_position():
    # PWA: window 0 mixes in window 3 only; DWA of window 3: the pixel at position p attends to position p + 1.
    attn = torch.full((1, 4, 1, 17, 17), 1 / 17)
    attn[0, 3, 0, 1:] = 0.0
    for p in range(16):
        attn[0, 3, 0, 1 + p, 0] = 0.5  # the token's share is set aside
        attn[0, 3, 0, 1 + p, 1 + (p + 1) % 16] = 0.5
    dwa, pwa = dssa_pair(attn)
    pwa["attn"][0, 0, 0] = torch.tensor([0.0, 0.0, 0.0, 1.0])
    query_px = (2 * 1, 2 * 2)  # feature pixel (1, 2): window 0, position 1 * 4 + 2 = 6
    fmap = A.dssa_query_attention(dwa, pwa, query_px)[0]
    assert fmap.sum() == pytest.approx(1.0)
    # window 3 starts at (4, 4); position 7 is (1, 3) inside it
    assert np.unravel_index(fmap.argmax(), fmap.shape) == (5, 7) and fmap.max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one block"):
        A.dssa_query_attention(dwa, dict(pwa, block="stages.0.blocks.0"), query_px)


def test_dssa_query_maps_average_to_the_chained_statistics():
    """The per-query chained map and the chained statistics are two implementations of one path: averaged over
    every query pixel, the maps' expected distance and entropy equal the statistics' dwa+pwa values."""
    torch.manual_seed(0)
    dwa, pwa = dssa_pair(torch.softmax(3 * torch.randn(1, 4, 1, 17, 17), -1))
    pwa["attn"] = torch.softmax(3 * torch.randn(1, 1, 4, 4), -1)
    yy, xx = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    distances, entropies = [], []
    for i in range(8):
        for j in range(8):
            fmap = A.dssa_query_attention(dwa, pwa, (2 * i, 2 * j))[0]
            distances.append((fmap * np.hypot(yy - i, xx - j)).sum() * 2)
            entropies.append(-(fmap * np.log(np.clip(fmap, 1e-30, None))).sum())
    stats = A.attention_statistics([dwa, pwa])
    chained = stats[stats.kind == "dwa+pwa"].iloc[0]
    assert chained.mean_distance_px == pytest.approx(np.mean(distances), rel=1e-5)
    assert chained.entropy == pytest.approx(np.mean(entropies), rel=1e-5)
    assert chained.entropy_ratio == pytest.approx(chained.entropy / math.log(64), rel=1e-9)


def test_block_query_map_keys_are_the_query_window():
    torch.manual_seed(0)
    unit = WindowMultiHeadAttention(8, 2, window_size=4, shift=True, stride=2).eval()
    with torch.no_grad(), record_attention(unit) as maps:
        unit(torch.randn(1, 8, 8, 8))
    fmap, geometry = A.block_query_attention(maps, (3 * 2, 3 * 2))
    assert geometry is maps[0] and fmap.shape == (2, 8, 8)
    keys = ~np.isnan(fmap[0])
    np.testing.assert_array_equal(keys, A.query_keys(maps[0], (6, 6)))
    assert keys.sum() == 16 and keys[2:6, 2:6].all()  # the shifted window around feature (3, 3)
    np.testing.assert_allclose(np.nansum(fmap, axis=(1, 2)), 1.0, atol=1e-5)


NANO_LABELS = {
    "sepvit": ["s1b1 DSSA: 64 windows of 4", "s2b1 DSSA: 16 windows of 4", "s2b2 GSA: 4 groups of 8",
               "s3b1 DSSA: 4 windows of 4", "s3b2 global MSA", "s4b1 global MSA"],
    "swin": ["s1b1 W-MSA (4)", "s2b1 W-MSA (4)", "s2b2 SW-MSA (4)", "s3b1 W-MSA (4)", "s3b2 SW-MSA (4)",
             "s4b1 global MSA"],
    "twins": ["s1b1 Twins LSA (4)", "s2b1 Twins LSA (4)", "s2b2 Twins GSA sr4", "s3b1 Twins LSA (4)",
              "s3b2 Twins GSA sr2", "s4b1 global MSA"],
    "local-only": ["s1b1 window 4, no PWA", "s2b1 window 4, no PWA", "s2b2 window 4, no PWA",
                   "s3b1 window 4, no PWA", "s3b2 window 4, no PWA", "s4b1 global MSA"],
}


@pytest.mark.parametrize("name", sorted(NANO_LABELS))
def test_every_block_of_every_pattern_gives_one_query_map(name):
    changes = dict(dssa=False) if name == "local-only" else dict(block_pattern=name)
    torch.manual_seed(0)
    model = SepViTConfig.preset("sepvit_nano_32", **changes).build().eval()
    _, maps = record(model, torch.randn(2, 3, 32, 32))
    blocks = A.block_names(maps)
    assert [A.block_label(A.select(maps, block=b), base_window=4) for b in blocks] == NANO_LABELS[name]
    for block in blocks:
        fmap, geometry = A.block_query_attention(A.select(maps, block=block), (21, 9), batch=1)
        assert fmap.shape[1:] == tuple(geometry["map_size"])
        token_share = geometry["kind"] == "dwa" and geometry["window_token"] and "pwa" not in \
            {r["kind"] for r in A.select(maps, block=block)}
        assert not token_share  # every DWA with tokens is chained with its PWA
        np.testing.assert_allclose(np.nansum(fmap, axis=(1, 2)), 1.0, atol=1e-4)


def test_received_share_is_one_when_uniform_and_counts_windows():
    pwa = dict(block="b", kind="pwa", attn=torch.full((2, 1, 4, 4), 0.25), map_size=(8, 8), window=(4, 4),
               grid=(2, 2), padding=(0, 0), shift=0, stride=1)
    np.testing.assert_allclose(A.received_share(pwa, [(0, 0), (1, 1)]), [1.0, 1.0])
    pwa["attn"] = torch.zeros(2, 1, 4, 4)
    pwa["attn"][..., 1] = 1.0  # every window reads window (0, 1) only
    np.testing.assert_allclose(A.received_share(pwa, [(0, 1), (1, 1)]), [4.0, 0.0])
    with pytest.raises(ValueError, match="one window per image"):
        A.received_share(pwa, [(0, 1)])


# ---------------------------------------------------------------------------------- PWA / GSA collapse
def pwa_record(attn: torch.Tensor, grid=(2, 2), window=8, block="stages.1.blocks.1") -> dict:
    side = grid[0] * window
    return dict(block=block, kind="pwa", attn=attn, map_size=(side, side), window=(window, window), grid=grid,
                padding=(0, 0), shift=0, stride=1)


def test_collapse_is_found_when_every_group_reads_the_same_group():
    attn = torch.full((2, 2, 4, 4), 0.02)  # 2 images, 2 heads, 4 groups
    attn[..., 1] = 0.94  # every query group puts 94 % on group (0,1)
    attn[1, 1, 3] = torch.tensor([0.25, 0.25, 0.25, 0.25])  # one query row of 16 reads everything
    found = A.pwa_collapse([pwa_record(attn)])
    assert found["rows"] == 16 and found["keys"] == 4
    assert found["one_key_share"] == pytest.approx(15 / 16)
    assert found["same_key_share"] == pytest.approx(15 / 16)  # the uniform row's largest is its first key
    assert found["top_key"] == "(0,1)" and found["collapsed"]
    entropy = -(0.94 * math.log(0.94) + 3 * 0.02 * math.log(0.02))
    assert found["entropy_ratio"] == pytest.approx((15 * entropy + math.log(4)) / 16 / math.log(4))
    assert found["sentence"].startswith("collapsed: 94 % of queries read one group (> 90 % of their attention")
    assert "group (0,1), is the largest for 94 %" in found["sentence"]


def test_no_collapse_when_attention_is_spread_or_only_a_minority_is_focused():
    uniform = A.pwa_collapse([pwa_record(torch.full((1, 1, 4, 4), 0.25))], unit="window")
    assert uniform["one_key_share"] == 0.0 and not uniform["collapsed"]
    assert uniform["entropy_ratio"] == pytest.approx(1.0)
    assert uniform["sentence"].startswith("not collapsed: 0 % of queries read one window")
    attn = torch.full((1, 1, 4, 4), 0.25)
    attn[0, 0, 0] = torch.tensor([0.97, 0.01, 0.01, 0.01])
    attn[0, 0, 1] = torch.tensor([0.01, 0.97, 0.01, 0.01])  # half the groups read themselves
    half = A.pwa_collapse([pwa_record(attn)])
    assert half["one_key_share"] == 0.5 and not half["collapsed"]  # not more than half
    assert A.pwa_collapse([pwa_record(attn)], majority=0.4)["collapsed"]
    assert A.pwa_collapse([pwa_record(attn)], threshold=0.98)["one_key_share"] == 0.0


def test_collapse_refuses_records_it_cannot_read():
    with pytest.raises(ValueError, match="no PWA record"):
        A.pwa_collapse([])
    with pytest.raises(ValueError, match="expected 'pwa'"):
        A.pwa_collapse([window_record("msa", torch.full((1, 1, 1, 4, 4), 0.25), (2, 2), 2, stride=1)])
    with pytest.raises(ValueError, match="one key grid"):
        A.pwa_collapse([pwa_record(torch.full((1, 1, 4, 4), 0.25)),
                        pwa_record(torch.full((1, 1, 16, 16), 1 / 16), grid=(4, 4), window=4)])
    with pytest.raises(ValueError, match="single key"):
        A.pwa_collapse([pwa_record(torch.ones(1, 1, 1, 1), grid=(1, 1))])


def test_collapse_table_reads_each_pwa_block_of_a_recorded_model():
    torch.manual_seed(0)
    cfg = SepViTConfig.preset("sepvit_nano_32")
    model = cfg.build().eval()
    _, maps = record(model, torch.randn(2, 3, 32, 32))
    table = A.collapse_table(maps, cfg.window_size, model="untrained")
    assert table[["unit", "attention", "keys"]].values.tolist() == [
        ["s1b1", "DSSA", 64], ["s2b1", "DSSA", 16], ["s2b2", "GSA", 4], ["s3b1", "DSSA", 4]]
    assert (table.model == "untrained").all() and not table.collapsed.any()  # zero window tokens: uniform PWA
    assert (table.entropy_ratio > 0.99).all() and table.sentence.str.startswith("not collapsed").all()
    assert "read one group" in table.sentence[2] and "read one window" in table.sentence[0]


def test_collapse_sentences_count_the_seeds_where_gsa_collapsed():
    collapsed = torch.full((1, 1, 4, 4), 0.02)
    collapsed[..., 1] = 0.94
    uniform = torch.full((1, 1, 4, 4), 0.25)
    table = pd.DataFrame([dict(seed=seed, block="stages.1.blocks.1", label="s2b2 GSA: 4 groups of 8", attention="GSA",
                               **A.pwa_collapse([pwa_record(attn)]))  # collapse_table's row of this GSA block
                          for seed, attn in ((0, collapsed), (1, collapsed), (2, uniform))])
    (line,) = A.collapse_sentences(table, by="seed")
    assert line.startswith("s2b2 GSA: 4 groups of 8: collapse present in some (2 of 3 seeds with more than 50 % of "
                           "their queries putting over 90 % of their attention on one of 4 groups: seed 0: 100 % of "
                           "queries, the most read group (0,1) largest for 100 %, entropy 0.")
    assert "seed 2: 0 % of queries" in line
    assert A.collapse_sentences(table[table.seed < 2], by="seed")[0].split(": collapse ")[1].startswith("present (2 of 2")
    assert A.collapse_sentences(table[table.seed == 2], by="seed")[0].split(": collapse ")[1].startswith("absent")
    assert A.collapse_sentences(table, attention="DSSA") == []  # no DSSA block in these records


def test_attention_distance_and_reach_are_set_side_by_side_in_input_pixels():
    from analysis import reach

    comparison = A.trained_vs_untrained(two_state_stats())  # model "a", block stages.1.blocks.0: 0.0 / 3.4 px
    values = {s: np.full((1, 2, 3), 0.5) for s in reach.REACH_STATS}
    trained = reach.ReachResult(2, "sepvit_block", 8, 8, 4, [(0, 0)] * 3, values, blocks="0", label="a")
    untrained = reach.ReachResult(2, "sepvit_block", 8, 8, 4, [(0, 0)] * 3,
                                  {s: np.full((1, 2, 3), 0.25) for s in reach.REACH_STATS}, blocks="0", label="a")
    pair = reach.ReachResult(2, "ours_swin_pair", 8, 8, 4, [(0, 0)] * 3, values, blocks="0+1", label="a")
    table = A.attention_vs_reach(comparison, {"trained": {"a": [trained, pair]}, "untrained": {"a": [untrained]}},
                                 img_size=32)
    assert len(table) == 1  # the pair's second block was not recorded: left out
    row = table.iloc[0]
    assert row.attention_px_trained == 0.0 and row.attention_px_untrained == pytest.approx(2 + math.sqrt(2))
    assert row.reach_px_trained == pytest.approx(0.5 * 4) and row.reach_px_untrained == pytest.approx(0.25 * 4)
    text = A.reconcile_markdown(table, "a")
    assert "attention distance 3.4 → 0.0 px with training, reach 1.0 → 2.0 px (self share 50 %)" in text
    assert "the attention distance is the larger figure in 0 of 1 units; training moved it by at most 3.4 px, " \
           "the reach by at most 1.0 px." in text
    assert A.reconcile_markdown(table, "b") == "- b: no unit with both figures."


def test_nearer_stages_name_where_one_model_attends_nearer_than_another():
    comparison = A.trained_vs_untrained(two_state_stats())
    comparison.loc[comparison.model == "b", "mean_distance_px_trained"] = 2.0
    table = A.chance_table({"a": 50.0, "b": 50.0}, {"a": (6.0, 14.0), "b": (6.0, 14.0)})
    assert A.nearer_stages(comparison, table, "a", "b") == [dict(stage=2, name_px=0.0, other_px=2.0)]
    assert A.nearer_stages(comparison, table, "b", "a") == []
    stuck = A.chance_table({"a": 50.0, "b": 1.0}, {"a": (6.0, 14.0), "b": (6.0, 14.0)})
    assert A.nearer_stages(comparison, stuck, "a", "b") == []  # a model at chance is not interpreted


# ---------------------------------------------------------------------------------- accuracy, chance, conclusions
def test_chance_table_labels_and_warning():
    table = A.chance_table({"good": 40.0, "edge": 14.0, "low": 3.0}, {n: (6.0, 14.0) for n in ("good", "edge", "low")})
    assert table["at_chance"].tolist() == [False, True, True]  # within or below the interval: at chance
    assert A.model_label(table, "good") == "good · top-1 40.0 %"
    assert A.model_label(table, "edge") == "edge · top-1 14.0 % · AT CHANCE"
    warning = A.chance_markdown(table)
    assert "not interpreted" in warning and "**edge** (14.0 %)" in warning and "**low** (3.0 %)" in warning
    assert "good" not in warning and "6.0–14.0 %" in warning
    assert A.chance_markdown(table, ["good"]) == ("All 1 models are above chance (the 95 % interval of guessing is "
                                                  "6.0–14.0 % top-1): good 40.0 %.")


def two_state_stats():
    """Model "a": untrained uniform, trained identity attention on one 2x2 window block; model "b" the same."""
    uniform = window_record("msa", torch.full((1, 1, 1, 4, 4), 0.25), (2, 2), 2, stride=4)
    identity = window_record("msa", torch.eye(4).reshape(1, 1, 1, 4, 4), (2, 2), 2, stride=4)
    return pd.concat([A.attention_statistics([rec], model=m, state=s) for m in ("a", "b")
                      for s, rec in (("untrained", uniform), ("trained", identity))], ignore_index=True)


def test_trained_vs_untrained_and_computed_sentences():
    comparison = A.trained_vs_untrained(two_state_stats())
    row = comparison.iloc[0]
    assert (row.model, row.unit) == ("a", "s2b1")
    assert row.mean_distance_px_untrained == pytest.approx((2 + math.sqrt(2)) * 4 / 4) and row.mean_distance_px_trained == 0
    assert row.entropy_ratio_untrained == pytest.approx(1.0) and row.entropy_ratio_trained == pytest.approx(0.0, abs=1e-9)
    table = A.chance_table({"a": 50.0, "b": 10.0}, {"a": (6.0, 14.0), "b": (6.0, 14.0)})
    text = A.training_effect_markdown(comparison, table)
    assert "lowered the normalised entropy in 1 of 1 blocks (mean over blocks 1.00 → 0.00)" in text
    assert "s2b1 (3.4 → 0.0 px)" in text and "**b**: at chance (10.0 %), not interpreted." in text
    assert A.reach_markdown(comparison, table) == "- stage 2: a 0.0 px"
    both = A.chance_table({"a": 50.0, "b": 50.0}, {"a": (6.0, 14.0), "b": (6.0, 14.0)})
    shifted = comparison.assign(mean_distance_px_trained=np.where(comparison.model == "b", 2.5, 0.0),
                                distance_change_px=np.where(comparison.model == "b", -0.01, 0.0))
    assert A.reach_markdown(shifted, both) == "- stage 2: b 2.5, a 0.0 px"  # farthest first
    assert "changed by +0.0 to +0.0 px" in A.training_effect_markdown(shifted, both)  # never "-0.0"
    all_stuck = A.chance_table({"a": 1.0, "b": 1.0}, {"a": (6.0, 14.0), "b": (6.0, 14.0)})
    assert "No model is above chance" in A.reach_markdown(comparison, all_stuck)
    stats = two_state_stats()
    with pytest.raises(ValueError, match="both states"):
        A.trained_vs_untrained(stats[stats.state == "trained"])


# ---------------------------------------------------------------------------------- images
def test_load_image_from_array_and_file(tmp_path):
    from PIL import Image

    wide = np.zeros((40, 60, 3), np.uint8)
    wide[:, 10:50] = 255  # the centre square is white, the 10-px side bands black and cropped away
    image = A.load_image(wide, 32)
    assert image.shape == (32, 32, 3) and image.dtype == np.float32
    assert image.min() > 0.95
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((20, 20), 128, np.uint8)).save(grey)
    loaded = A.load_image(str(grey), 32)
    assert loaded.shape == (32, 32, 3) and np.allclose(loaded, 128 / 255, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="no image file at"):
        A.load_image(tmp_path / "missing.jpg", 32)
    mean, std = (0.2, 0.3, 0.4), (0.5, 0.25, 0.1)
    x = A.to_model_input(loaded, mean, std)
    assert x.shape == (1, 3, 32, 32)
    np.testing.assert_allclose(A.to_display_image(x[0], mean, std), loaded, atol=1e-6)


# ---------------------------------------------------------------------------------- plots
def map_images(fig):
    return [im for ax in fig.axes for im in ax.get_images() if im.norm is not None and im.get_array().ndim == 2]


def test_map_plots_share_one_fixed_colour_scale_with_a_colour_bar():
    torch.manual_seed(0)
    sepvit_maps = record(SepViTConfig.preset("sepvit_nano_32").build().eval(), torch.randn(1, 3, 32, 32))[1]
    swin_maps = record(SepViTConfig.preset("sepvit_nano_32", block_pattern="swin").build().eval(),
                       torch.randn(1, 3, 32, 32))[1]
    image, query = np.random.default_rng(0).random((32, 32, 3)), (21, 29)
    figures = [
        A.plot_block_maps(image, [("sepvit", sepvit_maps), ("swin", swin_maps)], query, base_window=4, window_px=4),
        A.plot_dssa_anatomy(image, [("s1", sepvit_maps, "stages.0.blocks.0"), ("s2", sepvit_maps, "stages.1.blocks.1")],
                            query, base_window=4),
        A.plot_head_maps(image, [("sepvit", sepvit_maps), ("swin", swin_maps)], ["stages.2.blocks.0", "stages.3.blocks.0"],
                         query, base_window=4),
    ]
    expected_panels = [2 * 6, 2 * 6, 2 * (2 + 4)]
    for fig, panels in zip(figures, expected_panels):
        images = map_images(fig)
        assert len(images) == panels
        assert {(im.norm.vmin, im.norm.vmax) for im in images} == {A.PROBABILITY_RANGE}  # never rescaled per panel
        assert [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"] == [A.COLOURBAR_LABEL]
        markers = [line for ax in fig.axes for line in ax.get_lines() if line.get_marker() == "x"]
        assert markers and all(tuple(line.get_xydata()[0]) == (query[1], query[0]) for line in markers)
    with pytest.raises(ValueError, match="no DWA and PWA"):
        A.plot_dssa_anatomy(image, [("swin", swin_maps, "stages.0.blocks.0")], query)
    plt.close("all")


def test_borders_follow_windows_groups_and_shifts():
    torch.manual_seed(0)
    maps = record(SepViTConfig.preset("sepvit_nano_32").build().eval(), torch.randn(1, 3, 32, 32))[1]
    grouped = A.select(maps, "dwa", "stages.1.blocks.1")[0]  # 2x2 groups of 8 feature px at stride 2
    fig, ax = plt.subplots()
    A.draw_borders(ax, grouped, base_window=4)
    rows = [line for line in ax.get_lines() if line.get_ydata()[0] == line.get_ydata()[1]]  # the axhlines
    solid = sorted(line.get_ydata()[0] + 0.5 for line in rows if line.get_linestyle() == "-")
    dotted = sorted(line.get_ydata()[0] + 0.5 for line in rows if line.get_linestyle() == ":")
    assert solid == [0, 16, 32] and dotted == [0, 8, 16, 24, 32]
    plt.close("all")


def test_statistics_and_accuracy_plots():
    comparison = A.trained_vs_untrained(two_state_stats())
    table = A.chance_table({"a": 50.0, "b": 10.0}, {"a": (6.0, 14.0), "b": (6.0, 14.0)})
    fig = A.plot_block_statistics(comparison, "entropy_ratio", {n: A.model_label(table, n) for n in table.index})
    assert [ax.get_title() for ax in fig.axes[:2]] == ["a · top-1 50.0 %", "b · top-1 10.0 % · AT CHANCE"]
    heights = sorted(round(p.get_height(), 6) for p in fig.axes[0].patches)
    assert heights == [0.0, 1.0]
    fig = A.plot_accuracy(table)
    bars = fig.axes[0].patches
    assert [b.get_hatch() for b in bars if b.get_width() in (50.0, 10.0)] == [None, "//"]
    plt.close("all")


def test_zero_probability_shows_black_and_a_non_key_grey():
    attn = torch.zeros(1, 1, 1, 4, 4)
    attn[..., 0] = 1.0  # every query attends to pixel (0, 0) alone: the others underflow to exactly 0
    rec = window_record("msa", attn, (2, 2), 2, stride=1)
    fmap = A.query_attention(rec, (1, 1))[0].astype(np.float64)
    fmap[0, 1] = np.nan  # as block_query_attention marks pixels outside the query's window
    fig, ax = plt.subplots()
    artist = A.draw_attention(ax, fmap, rec)
    rgba = artist.to_rgba(artist.get_array())
    np.testing.assert_allclose(rgba[1, 1], (0, 0, 0, 1))  # zero: below the scale, black
    np.testing.assert_allclose(rgba[0, 1], matplotlib.colors.to_rgba(A.NOT_A_KEY))  # not a key: grey
    np.testing.assert_allclose(rgba[0, 0], matplotlib.colormaps["magma"](1.0))  # probability 1: the top
    plt.close("all")
