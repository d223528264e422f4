"""Attention maps: recording on the real models, placement in image space, statistics."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
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
    base = dict(embed_dims=(16, 32, 64, 128), num_heads=(1, 2, 2, 4))
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


# ---------------------------------------------------------------------------------- plots
def test_plots_return_figures():
    torch.manual_seed(0)
    model = micro(block_pattern="sepvit").build().eval()
    x = torch.rand(1, 3, 32, 32)
    _, maps = record(model, x)
    image = A.to_display_image(x[0])
    dwa, pwa = A.select(maps, "dwa")[0], A.select(maps, "pwa")[1]
    figures = [
        A.plot_window_token_attention(image, dwa),
        A.plot_query_attention(image, dwa, (5, 9)),
        A.plot_query_attention(image, pwa, (5, 9)),
        A.plot_pwa_heatmap(pwa),
        A.plot_head_grid(image, pwa, A.pwa_window_attention(pwa, (5, 9))),
        A.plot_mean_distance(A.attention_statistics(maps, variant="a")),
    ]
    assert all(isinstance(f, matplotlib.figure.Figure) and f.axes for f in figures)
    plt.close("all")


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
