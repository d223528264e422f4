"""Attention maps in image space: place recorded maps on the input image, plot them, summarise them.

Input: the records of `sepvit.attention.record_attention` (dicts with `block`, `kind`, `attn` and the
geometry `map_size`, `window`, `grid`, `padding`, `shift`, `stride`, `window_token`, or `kv_size` and
`sr_ratio` for Twins' global sub-sampled attention).

Coordinates. A feature-map pixel (i, j) of a stage with `stride` s stands for the image pixels
[s*i, s*(i+1)) x [s*j, s*(j+1)); a query given in image pixels (y, x) is the feature pixel
(y // s, x // s). (The overlapping patch embedding centres pixel i at s*i rather than at the block's
middle: at most (s-1)/2 image pixels apart, and distances are unaffected because both ends shift alike.)
Windows are row-major over the bottom/right-padded map. Swin's shifted windows hold the map rolled by
-shift, so a window position (r, c) in rolled coordinates is the original pixel ((r + shift) mod Hp,
(c + shift) mod Wp); every map here is returned in original (un-shifted) coordinates with padding cropped.

A whole block for one query: `block_query_attention` gives the probabilities over the block's keys (NaN
elsewhere); a SepViT block is its DWA and PWA chained (`dssa_query_attention`). Statistics per block: mean
attention distance (input pixels) and entropy, also normalised by log(keys); `trained_vs_untrained` compares
them. Collapse: `pwa_collapse` / `collapse_table` say whether PWA/GSA maps put nearly all their weight on
one key window or group (share of such queries, normalised entropy, a computed sentence). Accuracy:
`chance_table` says which models are at chance, and the `*_markdown` functions state conclusions computed
from the numbers, leaving models at chance uninterpreted.

Plots draw every map on one fixed colour scale (probabilities, log, `PROBABILITY_RANGE`) with its colour bar,
the query marked and window / group borders drawn.

Everything except the `draw_*` / `plot_*` functions is pure (records in, arrays / DataFrames out) and tested in
tests/test_attention.py. Plot functions return the matplotlib Figure.
"""
from __future__ import annotations

import math
import re
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

Record = dict[str, Any]

WINDOW_KINDS = ("dwa", "msa", "swin", "twins_local", "local")  # (B, windows, heads, T, T) maps
_BLOCK_RE = re.compile(r"stages\.(\d+)\.blocks\.(\d+)")


# ---------------------------------------------------------------------------------- records
def block_stage(block: str) -> int:
    """Zero-based stage of a block name such as "stages.2.blocks.1" (-1 when the name has no stage)."""
    match = _BLOCK_RE.search(block)
    return int(match.group(1)) if match else -1


def select(records: Iterable[Record], kind: str | Sequence[str] | None = None,
           block: str | None = None) -> list[Record]:
    """The records of one kind (or kinds) and/or one block, in forward order."""
    kinds = (kind,) if isinstance(kind, str) else kind
    return [r for r in records if (kinds is None or r["kind"] in kinds) and (block is None or r["block"] == block)]


def _has_token(record: Record) -> int:
    return int(bool(record.get("window_token", False))) if record["kind"] == "dwa" else 0


def _padded_size(record: Record) -> tuple[int, int]:
    (gh, gw), (wh, ww) = record["grid"], record["window"]
    return gh * wh, gw * ww


def _require_window_kind(record: Record) -> None:
    if record["kind"] not in (*WINDOW_KINDS, "pwa"):
        raise ValueError(f"expected a windowed record ({', '.join(WINDOW_KINDS)}, pwa), got kind {record['kind']!r}")


# ---------------------------------------------------------------------------------- geometry
def window_pixel_positions(record: Record) -> np.ndarray:
    """(windows, window_h * window_w, 2) integer (y, x) of every window pixel on the padded feature map,
    in original (un-shifted) coordinates, windows and pixels in the order of the recorded map."""
    _require_window_kind(record)
    (gh, gw), (wh, ww) = record["grid"], record["window"]
    hp, wp = gh * wh, gw * ww
    shift = int(record.get("shift", 0) or 0)
    wr, wc, i, j = np.meshgrid(np.arange(gh), np.arange(gw), np.arange(wh), np.arange(ww), indexing="ij")
    y = (wr * wh + i + shift) % hp
    x = (wc * ww + j + shift) % wp
    return np.stack([y, x], axis=-1).reshape(gh * gw, wh * ww, 2)


def window_origins(record: Record) -> np.ndarray:
    """(windows, 2) (y, x) of each window's top-left pixel on the (un-shifted) feature map."""
    _require_window_kind(record)
    (gh, gw), (wh, ww) = record["grid"], record["window"]
    wr, wc = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    return np.stack([wr * wh, wc * ww], axis=-1).reshape(-1, 2)


def window_labels(grid: tuple[int, int]) -> list[str]:
    """Row-major labels "(r,c)" of a window grid, as used on PWA heatmap axes."""
    return [f"({r},{c})" for r in range(grid[0]) for c in range(grid[1])]


def stitch_windows(values: np.ndarray, record: Record) -> np.ndarray:
    """Place per-window pixel values (..., windows, window_h * window_w) on the feature map: (..., H, W).

    Un-rolls Swin shifts and crops the padding.
    """
    values = np.asarray(values)
    pos = window_pixel_positions(record)
    hp, wp = _padded_size(record)
    out = np.zeros(values.shape[:-2] + (hp, wp), dtype=values.dtype)
    out[..., pos[..., 0], pos[..., 1]] = values
    h, w = record["map_size"]
    return out[..., :h, :w]


def upsample_to_image(fmap: np.ndarray, stride: int, image_size: tuple[int, int] | None = None) -> np.ndarray:
    """Nearest-neighbour upsampling of (..., H, W) by `stride` (each feature pixel becomes its s x s image
    block), then cropped or zero-padded to `image_size` (h, w) when given."""
    fmap = np.asarray(fmap)
    out = np.repeat(np.repeat(fmap, stride, axis=-2), stride, axis=-1)
    if image_size is not None:
        h, w = image_size
        out = out[..., :h, :w]
        pad_h, pad_w = h - out.shape[-2], w - out.shape[-1]
        if pad_h or pad_w:
            out = np.pad(out, [(0, 0)] * (out.ndim - 2) + [(0, pad_h), (0, pad_w)])
    return out


def window_grid_lines(record: Record) -> tuple[np.ndarray, np.ndarray]:
    """Image-pixel coordinates (ys, xs) of the window borders of a record, for drawing the grid
    (shifted for Swin's shifted windows; Twins' global map gets its key cells)."""
    stride = record["stride"]
    h, w = record["map_size"]
    if record["kind"] == "twins_global":
        r = record["sr_ratio"]
        return np.arange(0, h + 1, r) * stride, np.arange(0, w + 1, r) * stride
    wh, ww = record["window"]
    shift = int(record.get("shift", 0) or 0)
    ys = np.unique(np.concatenate([[0, h], np.arange(shift, h + 1, wh)]))
    xs = np.unique(np.concatenate([[0, w], np.arange(shift, w + 1, ww)]))
    return ys * stride, xs * stride


def _attn(record: Record, batch: int) -> np.ndarray:
    return record["attn"][batch].detach().float().cpu().numpy()


# ---------------------------------------------------------------------------------- (a) window tokens
def window_token_attention(record: Record, batch: int = 0) -> np.ndarray:
    """What each window token attends to inside its window: row 0 of the DWA map over the window's pixels
    (columns 1:), stitched into a feature map. Returns (heads, H, W); each window's pixels sum to
    1 - (the token's attention to itself)."""
    if record["kind"] != "dwa" or not _has_token(record):
        raise ValueError(f"{record['block']}: window-token attention needs a 'dwa' record with window tokens, "
                         f"got kind {record['kind']!r}")
    attn = _attn(record, batch)  # (windows, heads, T, T)
    rows = attn[:, :, 0, 1:].transpose(1, 0, 2)  # (heads, windows, window pixels)
    return stitch_windows(rows, record)


def window_token_self_attention(record: Record, batch: int = 0) -> np.ndarray:
    """(heads, gh, gw): the attention each window token pays to itself (the rest goes to its pixels)."""
    attn = _attn(record, batch)
    gh, gw = record["grid"]
    return attn[:, :, 0, 0].T.reshape(-1, gh, gw)


# ---------------------------------------------------------------------------------- (b) query pixels
def feature_pixel(record: Record, query_px: tuple[int, int]) -> tuple[int, int]:
    """The feature-map pixel (i, j) that holds image pixel (y, x)."""
    s = record["stride"]
    h, w = record["map_size"]
    y, x = query_px
    if not (0 <= y < h * s and 0 <= x < w * s):
        raise ValueError(f"query pixel {query_px} lies outside the {h * s}x{w * s} image area of {record['block']}")
    return int(y) // s, int(x) // s


def query_location(record: Record, query_px: tuple[int, int]) -> tuple[int, int]:
    """(window index, position inside the window) of the token that holds image pixel (y, x) in a windowed
    record, accounting for Swin's roll (position excludes the window token)."""
    i, j = feature_pixel(record, query_px)
    pos = window_pixel_positions(record)
    hit = np.flatnonzero((pos[..., 0] == i) & (pos[..., 1] == j))[0]
    window, position = divmod(int(hit), pos.shape[1])
    return window, position


def query_attention(record: Record, query_px: tuple[int, int], batch: int = 0) -> np.ndarray:
    """A query pixel's attention over the feature map, (heads, H, W), in original coordinates.

    Windowed kinds: the query's (shifted) window; its other pixels get zero. DWA: the pixel columns only
    (the share on the window token is `1 - sum`). Twins' global map: each key cell's weight is spread over its
    sr x sr pixels evenly. PWA records: see `pwa_window_attention`.
    """
    i, j = feature_pixel(record, query_px)
    attn = _attn(record, batch)
    h, w = record["map_size"]
    if record["kind"] == "twins_global":
        kh, kw = record["kv_size"]
        r = record["sr_ratio"]
        row = attn[:, i * w + j, :].reshape(-1, kh, kw) / (r * r)  # a key cell's weight spread over its pixels
        return upsample_to_image(row, r)[:, :h, :w]
    if record["kind"] == "pwa":
        raise ValueError("PWA maps are window-to-window: use pwa_window_attention")
    window, position = query_location(record, query_px)
    pos = window_pixel_positions(record)
    offset = _has_token(record)
    row = attn[window, :, position + offset, offset:]  # (heads, window pixels)
    values = np.zeros((row.shape[0], pos.shape[0], pos.shape[1]), dtype=row.dtype)
    values[:, window] = row
    return stitch_windows(values, record)


def pwa_window_attention(record: Record, query_px: tuple[int, int], batch: int = 0,
                         direction: str = "from") -> np.ndarray:
    """PWA around the window i of a pixel, as a map (heads, H, W) where every pixel of window j holds
    direction "from": A[i, j], the weight with which window i mixes in window j's DWA output (at the same
    relative position); direction "to": A[j, i], how much window j reads from window i."""
    if record["kind"] != "pwa":
        raise ValueError(f"expected a 'pwa' record, got {record['kind']!r}")
    if direction not in ("from", "to"):
        raise ValueError(f"direction must be 'from' or 'to', got {direction!r}")
    i, j = feature_pixel(record, query_px)
    (gh, gw), (wh, ww) = record["grid"], record["window"]
    window = (i // wh) * gw + j // ww
    attn = _attn(record, batch)
    row = attn[:, window, :] if direction == "from" else attn[:, :, window]
    h, w = record["map_size"]
    return np.repeat(np.repeat(row.reshape(-1, gh, gw), wh, axis=-2), ww, axis=-1)[:, :h, :w]


# ---------------------------------------------------------------------------------- (c) PWA
def pwa_matrix(record: Record, batch: int = 0, head: int | None = None) -> pd.DataFrame:
    """The PWA window-to-window map (query window rows, key window columns) labelled "(r,c)";
    one head or the mean over heads."""
    if record["kind"] != "pwa":
        raise ValueError(f"expected a 'pwa' record, got {record['kind']!r}")
    attn = _attn(record, batch)
    matrix = attn.mean(0) if head is None else attn[head]
    labels = window_labels(record["grid"])
    frame = pd.DataFrame(matrix, index=pd.Index(labels, name="query window"),
                         columns=pd.Index(labels, name="key window"))
    return frame


def pwa_received_attention(record: Record, batch: int | None = None) -> np.ndarray:
    """(batch, gh, gw), or (gh, gw) for one `batch` index: the PWA attention each window receives, averaged
    over query windows and heads (1 / windows everywhere when PWA is uniform)."""
    if record["kind"] != "pwa":
        raise ValueError(f"expected a 'pwa' record, got {record['kind']!r}")
    attn = record["attn"].detach().float().cpu().numpy()  # (B, heads, N, N)
    received = attn.mean(axis=(1, 2)).reshape(attn.shape[0], *record["grid"])
    return received if batch is None else received[batch]


# ---------------------------------------------------------------------------------- (d) one block, one query
def block_names(records: Iterable[Record]) -> list[str]:
    """The blocks that recorded maps, in forward order."""
    return list(dict.fromkeys(r["block"] for r in records))


def short_block(block: str) -> str:
    """"stages.1.blocks.0" -> "s2b1": stage and block counted from 1, as the paper counts stages."""
    match = _BLOCK_RE.search(block)
    return f"s{int(match.group(1)) + 1}b{int(match.group(2)) + 1}" if match else block


def block_label(records: Sequence[Record], base_window: int | None = None) -> str:
    """What a block's attention is, e.g. "s2b2 GSA: 4 groups of 8 px", "s2b2 SW-MSA", "s3b2 Twins GSA sr2".
    `base_window`: the model's window side (feature pixels), to tell GSA groups from plain DSSA windows."""
    kinds = {r["kind"]: r for r in records}
    first = records[0]
    name = short_block(first["block"])
    if "pwa" in kinds:
        dwa = kinds["dwa"]
        n, side = dwa["grid"][0] * dwa["grid"][1], dwa["window"][0]
        grouped = base_window is not None and side > base_window
        return f"{name} {'GSA' if grouped else 'DSSA'}: {n} {'groups' if grouped else 'windows'} of {side}"
    kind = first["kind"]
    if kind == "dwa":
        return f"{name} window {first['window'][0]}, no PWA"
    if kind == "swin":
        return f"{name} {'SW-MSA' if first.get('shift') else 'W-MSA'} ({first['window'][0]})"
    if kind == "twins_local":
        return f"{name} Twins LSA ({first['window'][0]})"
    if kind == "twins_global":
        return f"{name} Twins GSA sr{first['sr_ratio']}"
    if kind == "local":
        return f"{name} local window ({first['window'][0]})"
    return f"{name} global MSA"


def query_keys(record: Record, query_px: tuple[int, int]) -> np.ndarray:
    """(H, W) True where a feature pixel is one of the query pixel's keys: its (shifted) window for windowed
    kinds (Swin's masked regions included: they are keys with ~0 weight), the whole map otherwise."""
    h, w = record["map_size"]
    if record["kind"] not in WINDOW_KINDS:
        return np.ones((h, w), dtype=bool)
    window, _ = query_location(record, query_px)
    keys = np.zeros((record["grid"][0] * record["grid"][1], record["window"][0] * record["window"][1]), dtype=bool)
    keys[window] = True
    return stitch_windows(keys, record)


def dssa_query_attention(dwa: Record, pwa: Record, query_px: tuple[int, int], batch: int = 0) -> np.ndarray:
    """One DSSA block as a single query-to-pixel map (heads, H, W), each head summing to 1: DWA then PWA
    (paper Eq. 2-3 chained, the inner shortcuts left out). PWA mixes window j's DWA output at the query's own
    position p into the query's window i, so the query reaches pixel k of window j with weight
    A_pwa[i, j] * A_dwa(j)[p, k], DWA rows renormalised over pixels (the window token has no position)."""
    if dwa["kind"] != "dwa" or pwa["kind"] != "pwa" or dwa["block"] != pwa["block"]:
        raise ValueError("dssa_query_attention needs the 'dwa' and the 'pwa' record of one block")
    window, position = query_location(dwa, query_px)
    offset = _has_token(dwa)
    rows = _attn(dwa, batch)[:, :, position + offset, offset:]  # (windows, heads, window pixels)
    rows = rows / np.clip(rows.sum(-1, keepdims=True), 1e-30, None)
    weights = _attn(pwa, batch)[:, window, :]  # (heads, windows): A_pwa[i, j]
    return stitch_windows(weights[:, :, None] * rows.transpose(1, 0, 2), dwa)


def block_query_attention(records: Sequence[Record], query_px: tuple[int, int],
                          batch: int = 0) -> tuple[np.ndarray, Record]:
    """A whole block's attention for one query pixel: (heads, H, W) probabilities on the block's feature map,
    NaN where a pixel is not one of the query's keys, and the record that gives its geometry. A block with DWA
    and PWA is chained into one map (`dssa_query_attention`); DWA alone shows its pixel columns (with window
    tokens, the token's share is set aside and the row does not sum to 1)."""
    kinds = {r["kind"]: r for r in records}
    if len({r["block"] for r in records}) != 1:
        raise ValueError("block_query_attention takes the records of one block (select(records, block=...))")
    if "pwa" in kinds and "dwa" in kinds:
        return dssa_query_attention(kinds["dwa"], kinds["pwa"], query_px, batch), kinds["dwa"]
    record = records[0]
    maps = query_attention(record, query_px, batch).astype(np.float64)
    maps[:, ~query_keys(record, query_px)] = np.nan
    return maps, record


def received_share(record: Record, windows: Sequence[tuple[int, int]]) -> np.ndarray:
    """(batch,) the PWA attention window windows[b] (row, col) receives in image b, averaged over query windows
    and heads, as a multiple of the uniform share (1 = every window attended equally)."""
    received = pwa_received_attention(record)
    if len(windows) != received.shape[0]:
        raise ValueError(f"one window per image: {len(windows)} windows for {received.shape[0]} images")
    n = record["grid"][0] * record["grid"][1]
    return np.array([received[b][r, c] * n for b, (r, c) in enumerate(windows)])


# ---------------------------------------------------------------------------------- (e) statistics
def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-30, None))).sum(axis=axis)


def _valid_pixels(record: Record) -> np.ndarray:
    """(windows, window pixels) True where the pixel lies on the map (not padding)."""
    pos = window_pixel_positions(record)
    h, w = record["map_size"]
    return (pos[..., 0] < h) & (pos[..., 1] < w)


def _window_stats(record: Record) -> dict[str, np.ndarray]:
    """Per-head mean distance (feature pixels), entropy, token share over valid pixel queries."""
    attn = record["attn"].detach().double().cpu().numpy()  # (B, N, heads, T, T)
    offset = _has_token(record)
    full_rows = attn[:, :, :, offset:, :]  # pixel queries
    keys = full_rows[..., offset:]
    token_share = full_rows[..., 0] if offset else np.full(keys.shape[:-1], np.nan)
    probs = keys / np.clip(keys.sum(-1, keepdims=True), 1e-30, None)  # the token has no position
    pos = window_pixel_positions(record).astype(np.float64)  # (N, T, 2)
    dist = np.linalg.norm(pos[:, :, None, :] - pos[:, None, :, :], axis=-1)  # (N, T, T)
    mean_dist = np.einsum("bnhqk,nqk->bnhq", probs, dist)
    entropy = _entropy(full_rows)
    valid = _valid_pixels(record)[None, :, None, :]  # (1, N, 1, T)
    weight = np.broadcast_to(valid, mean_dist.shape).astype(np.float64)

    def average(values: np.ndarray) -> np.ndarray:
        return (values * weight).sum((0, 1, 3)) / weight.sum((0, 1, 3))

    return dict(mean_distance=average(mean_dist), entropy=average(entropy), token_share=average(token_share),
                keys=np.full(attn.shape[2], attn.shape[-1]))


def _pwa_stats(record: Record) -> dict[str, np.ndarray]:
    """PWA mixes the same relative position across windows, so query and key lie one window offset apart."""
    attn = record["attn"].detach().double().cpu().numpy()  # (B, heads, N, N)
    origins = window_origins(record).astype(np.float64)
    dist = np.linalg.norm(origins[:, None, :] - origins[None, :, :], axis=-1)
    mean_dist = np.einsum("bhij,ij->bhi", attn, dist)
    entropy = _entropy(attn)
    weight = _valid_pixels(record).sum(1).astype(np.float64)  # pixels per window
    average = lambda v: (v * weight).sum((0, 2)) / (weight.sum() * v.shape[0])  # noqa: E731
    return dict(mean_distance=average(mean_dist), entropy=average(entropy),
                token_share=np.full(attn.shape[1], np.nan), keys=np.full(attn.shape[1], attn.shape[-1]))


def _twins_global_stats(record: Record) -> dict[str, np.ndarray]:
    attn = record["attn"].detach().double().cpu().numpy()  # (B, heads, HW, kv)
    h, w = record["map_size"]
    kh, kw = record["kv_size"]
    r = record["sr_ratio"]
    qy, qx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    ky, kx = np.meshgrid(np.arange(kh), np.arange(kw), indexing="ij")
    q = np.stack([qy, qx], -1).reshape(-1, 2).astype(np.float64)
    k = (np.stack([ky, kx], -1).reshape(-1, 2) * r + (r - 1) / 2).astype(np.float64)  # key cell centres
    dist = np.linalg.norm(q[:, None] - k[None], axis=-1)
    mean_dist = np.einsum("bhqk,qk->bhq", attn, dist)
    return dict(mean_distance=mean_dist.mean((0, 2)), entropy=_entropy(attn).mean((0, 2)),
                token_share=np.full(attn.shape[1], np.nan), keys=np.full(attn.shape[1], attn.shape[-1]))


def _dssa_stats(dwa: Record, pwa: Record) -> dict[str, np.ndarray]:
    """DWA then PWA as one attention path (inner shortcuts left out): query pixel p of window i reaches
    pixel k of window j with weight A_pwa[i, j] * A_dwa(j)[p, k] (DWA rows renormalised over pixels)."""
    a_dwa = dwa["attn"].detach().double().cpu().numpy()  # (B, N, heads, T, T)
    a_pwa = pwa["attn"].detach().double().cpu().numpy()  # (B, heads, N, N)
    o = _has_token(dwa)
    keys = a_dwa[:, :, :, o:, o:]
    probs = keys / np.clip(keys.sum(-1, keepdims=True), 1e-30, None)
    pos = window_pixel_positions(dwa).astype(np.float64)  # (N, T, 2)
    # distance from (window i, pixel p) to (window j, pixel k)
    dist = np.linalg.norm(pos[:, :, None, None, :] - pos[None, None, :, :, :], axis=-1)  # (N, T, N, T)
    inner = np.einsum("bjhpk,ipjk->bhipj", probs, dist)  # expected distance given window j
    mean_dist = np.einsum("bhij,bhipj->bhip", a_pwa, inner)
    h_dwa = _entropy(probs).transpose(0, 2, 1, 3)  # (B, heads, N, T)
    entropy = _entropy(a_pwa)[..., None] + np.einsum("bhij,bhjp->bhip", a_pwa, h_dwa)  # chain rule
    valid = _valid_pixels(dwa)[None, None].astype(np.float64)  # (1, 1, N, T)
    average = lambda v: (v * valid).sum((0, 2, 3)) / (valid.sum() * v.shape[0])  # noqa: E731
    return dict(mean_distance=average(mean_dist), entropy=average(entropy),
                token_share=np.full(a_pwa.shape[1], np.nan),
                keys=np.full(a_pwa.shape[1], probs.shape[-1] * a_pwa.shape[-1]))


def record_statistics(record: Record) -> dict[str, np.ndarray]:
    """Per-head statistics of one record, averaged over the batch and the valid (unpadded) queries:
    mean_distance (feature pixels; multiply by `stride` for image pixels), entropy (nats, over the
    recorded row), token_share (DWA: pixel queries' attention to the window token), keys (row length)."""
    kind = record["kind"]
    if kind in WINDOW_KINDS:
        return _window_stats(record)
    if kind == "pwa":
        return _pwa_stats(record)
    if kind == "twins_global":
        return _twins_global_stats(record)
    raise ValueError(f"unknown record kind {kind!r}")


def mean_attention_distance(record: Record) -> np.ndarray:
    """(heads,) expected query-key distance in input pixels, weighted by attention (see record_statistics)."""
    return record_statistics(record)["mean_distance"] * record["stride"]


def attention_entropy(record: Record) -> np.ndarray:
    """(heads,) mean attention entropy in nats (see record_statistics)."""
    return record_statistics(record)["entropy"]


def _entropy_ratio(entropy: float, keys: int) -> float:
    return entropy / math.log(keys) if keys > 1 else float("nan")


def attention_statistics(records: Sequence[Record], compose_dssa: bool = True, **labels: Any) -> pd.DataFrame:
    """A tidy table, one row per (record, head): block, kind, stage, head, mean_distance_px, entropy,
    token_share, keys, entropy_ratio (entropy / log(keys): 1 = uniform over the keys, 0 = one key), plus any
    `labels` as constant columns (e.g. variant="zero tokens").

    With `compose_dssa`, each SepViT block with both DWA and PWA also gets rows of kind "dwa+pwa": the
    two maps chained into one query-to-pixel path (how far a whole DSSA block reaches).
    """
    rows = []

    def add(block: str, kind: str, stride: int, stats: dict[str, np.ndarray]) -> None:
        for head, dist in enumerate(stats["mean_distance"]):
            rows.append(dict(block=block, kind=kind, stage=block_stage(block), head=head,
                             mean_distance_px=float(dist) * stride, entropy=float(stats["entropy"][head]),
                             token_share=float(stats["token_share"][head]), keys=int(stats["keys"][head]),
                             entropy_ratio=_entropy_ratio(float(stats["entropy"][head]), int(stats["keys"][head])),
                             **labels))

    last_dwa: Record | None = None
    for record in records:
        add(record["block"], record["kind"], record["stride"], record_statistics(record))
        if record["kind"] == "dwa":
            last_dwa = record
        elif record["kind"] == "pwa" and compose_dssa and last_dwa is not None and last_dwa["block"] == record["block"]:
            add(record["block"], "dwa+pwa", record["stride"], _dssa_stats(last_dwa, record))
    columns = ["block", "kind", "stage", "head", "mean_distance_px", "entropy", "token_share", "keys", "entropy_ratio",
               *labels]
    return pd.DataFrame(rows, columns=columns)


def block_summary(stats: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """Mean over heads per (labels..., block, kind), in forward order."""
    keys = [*by, "block", "kind", "stage"]
    values = [c for c in ("mean_distance_px", "entropy", "entropy_ratio", "token_share") if c in stats]
    return stats.groupby(keys, sort=False)[values].mean().reset_index()


def block_reach(stats: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """One row per (labels..., block): how far the block's attention reaches, mean over heads. A SepViT block
    with DWA and PWA counts as its chained "dwa+pwa" path; any other block has one attention kind."""
    summary = block_summary(stats, by)
    keys = [*by, "block"]
    composed = summary.groupby(keys, sort=False)["kind"].transform(lambda kinds: (kinds == "dwa+pwa").any())
    chosen = summary[(summary["kind"] == "dwa+pwa") | (~composed & (summary["kind"] != "pwa"))]
    return chosen.reset_index(drop=True)


def trained_vs_untrained(stats: pd.DataFrame, model: str = "model", state: str = "state") -> pd.DataFrame:
    """One row per (model, block) in forward order: the block's label and its mean attention distance (input
    px) and normalised entropy trained and untrained (`block_reach`: DSSA blocks as their chained path, mean over
    heads), with the changes. `stats` holds both states (column `state`: "trained" / "untrained")."""
    reach = block_reach(stats, by=[model, state])
    wide = reach.pivot_table(index=[model, "block", "stage"], columns=state, sort=False,
                             values=["mean_distance_px", "entropy_ratio"])
    wide.columns = [f"{metric}_{which}" for metric, which in wide.columns]
    missing = {f"{m}_{w}" for m in ("mean_distance_px", "entropy_ratio") for w in ("trained", "untrained")} \
        - set(wide.columns)
    if missing:
        raise ValueError(f"statistics of both states are needed, missing {', '.join(sorted(missing))}")
    wide = wide.reset_index()
    wide.insert(2, "unit", wide["block"].map(short_block))
    wide["distance_change_px"] = wide["mean_distance_px_trained"] - wide["mean_distance_px_untrained"]
    wide["entropy_ratio_change"] = wide["entropy_ratio_trained"] - wide["entropy_ratio_untrained"]
    return wide


# ---------------------------------------------------------------------------------- (f) PWA / GSA collapse
COLLAPSE_THRESHOLD = 0.9  # a query window "reads one key window/group" when one key holds more than this
COLLAPSE_MAJORITY = 0.5  # a map has collapsed when more than this share of its queries read one key


def pwa_collapse(records: Sequence[Record], threshold: float = COLLAPSE_THRESHOLD,
                 majority: float = COLLAPSE_MAJORITY, unit: str = "group") -> dict[str, Any]:
    """Whether PWA attention (of DSSA windows or GSA groups) has collapsed onto single keys, over every
    (image, head, query window) row of the 'pwa' `records` (attn (B, heads, N, N)):

      one_key_share   share of rows putting more than `threshold` of their weight on one key
      same_key_share  share of rows whose largest weight falls on `top_key`, the key most often largest
                      ("every group reads from the same group" when both shares are near 1)
      entropy_ratio   mean row entropy / log N (1: uniform over the N keys, 0: one key)
      collapsed       one_key_share > `majority`
      sentence        the verdict with its numbers, e.g. "collapsed: 97 % of queries read one group ..."
    `unit` names the keys in the sentence ("group" for GSA, "window" for DSSA).
    """
    if not records:
        raise ValueError("no PWA record to read: record a model with PWA blocks (record_attention)")
    rows, grids = [], set()
    for record in records:
        if record["kind"] != "pwa":
            raise ValueError(f"expected 'pwa' records, got kind {record['kind']!r} in {record['block']}")
        attn = record["attn"].detach().double().cpu().numpy()
        rows.append(attn.reshape(-1, attn.shape[-1]))
        grids.add(tuple(record["grid"]))
    if len(grids) != 1:
        raise ValueError(f"records of one key grid only (one block, or blocks of one shape), got grids {sorted(grids)}")
    grid = grids.pop()
    probs = np.concatenate(rows)
    keys = probs.shape[-1]
    if keys < 2:
        raise ValueError("one key window: attention over a single key cannot collapse")
    largest = probs.argmax(-1)
    top_key = int(np.bincount(largest, minlength=keys).argmax())
    one_key = float((probs.max(-1) > threshold).mean())
    same_key = float((largest == top_key).mean())
    entropy_ratio = float(_entropy(probs).mean() / math.log(keys))
    collapsed = one_key > majority
    label = window_labels(grid)[top_key]
    sentence = (f"{'collapsed' if collapsed else 'not collapsed'}: {100 * one_key:.0f} % of queries read one {unit} "
                f"(> {100 * threshold:.0f} % of their attention on it); the most read, {unit} {label}, is the largest "
                f"for {100 * same_key:.0f} %; mean normalised entropy {entropy_ratio:.2f} (1 = uniform over {keys} "
                f"{unit}s)")
    return dict(rows=len(probs), keys=keys, one_key_share=one_key, same_key_share=same_key, top_key=label,
                entropy_ratio=entropy_ratio, collapsed=collapsed, sentence=sentence)


def collapse_table(records: Sequence[Record], base_window: int, threshold: float = COLLAPSE_THRESHOLD,
                   majority: float = COLLAPSE_MAJORITY, **labels: Any) -> pd.DataFrame:
    """One row per block with PWA, in forward order: its `block_label`, whether its keys are GSA groups
    (window wider than `base_window`) or DSSA windows, and `pwa_collapse` of its maps; plus `labels` columns."""
    out = []
    for block in block_names(records):
        pwa = select(records, "pwa", block)
        if not pwa:
            continue
        grouped = pwa[0]["window"][0] > base_window
        found = pwa_collapse(pwa, threshold, majority, unit="group" if grouped else "window")
        out.append(dict(**labels, block=block, unit=short_block(block),
                        label=block_label(select(records, block=block), base_window),
                        attention="GSA" if grouped else "DSSA", **found))
    return pd.DataFrame(out)


# ---------------------------------------------------------------------------------- accuracy and chance
def chance_table(top1: dict[str, float], chance: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """One row per model (in the given order): top1 (percent), the 95 % interval of guessing (chance_low,
    chance_high) and at_chance: top-1 within or below that interval (the reporting rule of experiments.report)."""
    rows = [dict(model=name, top1=float(value), chance_low=float(chance[name][0]), chance_high=float(chance[name][1]),
                 at_chance=bool(value <= chance[name][1])) for name, value in top1.items()]
    return pd.DataFrame(rows).set_index("model")


def model_label(table: pd.DataFrame, name: str) -> str:
    """"swin · top-1 48.2 %", with "· AT CHANCE" where the model is at chance."""
    row = table.loc[name]
    return f"{name} · top-1 {row.top1:.1f} %" + (" · AT CHANCE" if row.at_chance else "")


def chance_markdown(table: pd.DataFrame, names: Sequence[str] | None = None) -> str:
    """A Markdown statement, from `chance_table`, on whether the models (default all) can be interpreted:
    a warning naming every model at chance (its maps mean nothing), or that all are above chance."""
    part = table.loc[list(names) if names is not None else table.index]
    low, high = part["chance_low"].min(), part["chance_high"].max()
    band = f"the 95 % interval of guessing is {low:.1f}–{high:.1f} % top-1"
    stuck = part[part["at_chance"]]
    if stuck.empty:
        listed = ", ".join(f"{name} {row.top1:.1f} %" for name, row in part.iterrows())
        return f"All {len(part)} models are above chance ({band}): {listed}."
    listed = ", ".join(f"**{name}** ({row.top1:.1f} %)" for name, row in stuck.iterrows())
    return (f"⚠️ **At chance, not interpreted:** {listed}: top-1 within or below chance ({band}). "
            f"Their maps are drawn for completeness but mean nothing: a model that has not learnt the task "
            f"attends like an untrained one, and nothing below draws a conclusion from it.")


def _signed(value: float) -> str:
    text = f"{value:+.1f}"
    return "+0.0" if text == "-0.0" else text


def training_effect_markdown(comparison: pd.DataFrame, table: pd.DataFrame, model: str = "model") -> str:
    """Markdown bullets, one per model, computed from `trained_vs_untrained`: how training changed the mean
    attention distance and the normalised entropy of its blocks; models at chance are named, not interpreted."""
    lines = []
    for name, rows in comparison.groupby(model, sort=False):
        if table.loc[name, "at_chance"]:
            lines.append(f"- **{name}**: at chance ({table.loc[name, 'top1']:.1f} %), not interpreted.")
            continue
        focused = int((rows["entropy_ratio_change"] < 0).sum())
        largest = rows.loc[rows["distance_change_px"].abs().idxmax()]
        lines.append(
            f"- **{name}** ({table.loc[name, 'top1']:.1f} %): training lowered the normalised entropy in {focused} of "
            f"{len(rows)} blocks (mean over blocks {rows['entropy_ratio_untrained'].mean():.2f} → "
            f"{rows['entropy_ratio_trained'].mean():.2f}); mean distance changed by "
            f"{_signed(rows['distance_change_px'].min())} to {_signed(rows['distance_change_px'].max())} px, most in "
            f"{largest['unit']} ({largest['mean_distance_px_untrained']:.1f} → "
            f"{largest['mean_distance_px_trained']:.1f} px).")
    return "\n".join(lines)


def reach_markdown(comparison: pd.DataFrame, table: pd.DataFrame, model: str = "model") -> str:
    """Markdown bullets, one per stage: the trained models above chance ranked by mean attention distance
    (mean over the stage's blocks, input px), farthest first ("- stage 1: a 16.8, b 2.1 px")."""
    usable = [name for name in comparison[model].unique() if not table.loc[name, "at_chance"]]
    if not usable:
        return "- No model is above chance: there is no trained attention to compare."
    part = comparison[comparison[model].isin(usable)]
    lines = []
    for stage, rows in part.groupby("stage", sort=True):
        ranked = rows.groupby(model, sort=False)["mean_distance_px_trained"].mean().sort_values(ascending=False)
        lines.append(f"- stage {stage + 1}: " + ", ".join(f"{name} {value:.1f}" for name, value in ranked.items())
                     + " px")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- images
def load_image(source: Any, size: int) -> np.ndarray:
    """An RGB image, from a file path or an (H, W[, 3|4]) array, centre-cropped to a square and resized to
    size x size (antialiased): (size, size, 3) float32 in [0, 1]."""
    from pathlib import Path

    from PIL import Image

    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no image file at {path}: give the path of an image file (or None)")
        picture = Image.open(path).convert("RGB")
    else:
        array = np.asarray(source)
        if array.dtype != np.uint8:
            array = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
        picture = Image.fromarray(array if array.ndim == 3 else np.stack([array] * 3, -1)).convert("RGB")
    side = min(picture.size)
    left, top = (picture.width - side) // 2, (picture.height - side) // 2
    picture = picture.crop((left, top, left + side, top + side)).resize((size, size), Image.LANCZOS)
    return np.asarray(picture, dtype=np.float32) / 255.0


def to_model_input(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(H, W, 3) in [0, 1] -> (1, 3, H, W), normalised with the training data's mean and std."""
    x = torch.as_tensor(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)
    return ((x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1))[None]


def to_display_image(image: Any, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> np.ndarray:
    """A (3, H, W) tensor or (H, W, 3) array, optionally normalised with mean/std, as (H, W, 3) in [0, 1]."""
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu().numpy()
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
        image = image.transpose(1, 2, 0)
    if mean is not None and std is not None:
        image = image * np.asarray(std) + np.asarray(mean)
    return np.clip(image, 0.0, 1.0)


# ---------------------------------------------------------------------------------- plots
# One colour scale for every attention map: probabilities on a log scale, fixed, so that uniform attention over
# many keys is dark and a flat map stays flat (a per-panel scale would turn a 2 % ripple into structure).
PROBABILITY_RANGE = (1e-4, 1.0)
NOT_A_KEY = "0.8"  # grey: pixels the query cannot attend to (outside its window)
COLOURBAR_LABEL = "attention probability (log scale; grey: not a key)"


def probability_norm():
    from matplotlib.colors import LogNorm

    return LogNorm(*PROBABILITY_RANGE, clip=False)


def _cmap():
    import matplotlib

    return matplotlib.colormaps["magma"].with_extremes(bad=NOT_A_KEY, under="black")


def _for_log_scale(values: np.ndarray) -> np.ma.MaskedArray:
    """Probabilities ready for the log colour scale: NaN (not a key) masked, grey; an exact 0 (a softmax
    underflow, a masked key) raised to a tiny positive value so that it shows as "under" (black), not as grey."""
    values = np.asarray(values, dtype=np.float64)
    return np.ma.masked_invalid(np.where(values <= 0, PROBABILITY_RANGE[0] * 1e-3, values))


def _extent(shape: tuple[int, ...]) -> tuple[float, float, float, float]:
    return (-0.5, shape[1] - 0.5, shape[0] - 0.5, -0.5)


def _mark_query(ax, query_px: tuple[int, int] | None) -> None:
    if query_px is not None:
        ax.plot(query_px[1], query_px[0], marker="x", color="cyan", markersize=7, mew=2)


def draw_borders(ax, record: Record, base_window: int | None = None) -> None:
    """The record's window borders (solid white: Swin shifted, Twins' key cells), and, where its windows are GSA
    groups of `base_window`-pixel windows, the inner window borders (dotted)."""
    stride = record["stride"]
    h, w = record["map_size"]
    if record["kind"] in ("dwa", "pwa") and base_window and record["window"][0] > base_window:
        for y in range(0, h + 1, base_window):
            ax.axhline(y * stride - 0.5, color="white", lw=0.5, ls=":", alpha=0.9)
        for x in range(0, w + 1, base_window):
            ax.axvline(x * stride - 0.5, color="white", lw=0.5, ls=":", alpha=0.9)
    ys, xs = window_grid_lines(record)
    for y in ys:
        ax.axhline(y - 0.5, color="white", lw=0.9, alpha=0.9)
    for x in xs:
        ax.axvline(x - 0.5, color="white", lw=0.9, alpha=0.9)


def draw_attention(ax, fmap: np.ndarray, record: Record, query_px: tuple[int, int] | None = None,
                   image_size: tuple[int, int] | None = None, base_window: int | None = None):
    """A feature-map probability map (H, W) (NaN: not a key) in image pixels on the fixed colour scale, with the
    window (and group) borders and the query marked. Returns the image artist (for a colour bar)."""
    size = image_size or (record["map_size"][0] * record["stride"], record["map_size"][1] * record["stride"])
    heat = upsample_to_image(fmap, record["stride"], size)
    artist = ax.imshow(_for_log_scale(heat), cmap=_cmap(), norm=probability_norm(), extent=_extent(heat.shape),
                       interpolation="nearest")
    draw_borders(ax, record, base_window)
    _mark_query(ax, query_px)
    ax.set_xlim(-0.5, heat.shape[1] - 0.5)
    ax.set_ylim(heat.shape[0] - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    return artist


def draw_image(ax, image: np.ndarray, query_px: tuple[int, int] | None = None, window_px: int | None = None,
               title: str | None = None) -> None:
    """The input image with the query marked and, optionally, the stage-1 window grid (`window_px` pixels)."""
    ax.imshow(image, extent=_extent(image.shape), interpolation="nearest")
    if window_px:
        for v in range(0, max(image.shape[:2]) + 1, window_px):
            ax.axhline(v - 0.5, color="white", lw=0.4, alpha=0.5)
            ax.axvline(v - 0.5, color="white", lw=0.4, alpha=0.5)
    _mark_query(ax, query_px)
    ax.set_xlim(-0.5, image.shape[1] - 0.5)
    ax.set_ylim(image.shape[0] - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def add_colorbar(fig, artist, axes) -> None:
    bar = fig.colorbar(artist, ax=axes, shrink=0.85, extend="min", pad=0.015, fraction=0.03)
    bar.set_label(COLOURBAR_LABEL, fontsize=8)
    bar.ax.tick_params(labelsize=7)


def _row_label(ax, label: str) -> None:
    ax.set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center", labelpad=6)


def plot_block_maps(image: np.ndarray, rows: Sequence[tuple[str, Sequence[Record]]], query_px: tuple[int, int],
                    batch: int = 0, base_window: int | None = None, title: str | None = None,
                    window_px: int | None = None):
    """One row per model (label, its records on the batch): the image, then every block's attention for the
    query pixel (`block_query_attention`, mean over heads), one colour scale and bar. Returns the Figure."""
    import matplotlib.pyplot as plt

    blocks = max((block_names(records) for _, records in rows), key=len)
    fig, axes = plt.subplots(len(rows), len(blocks) + 1, figsize=(1.75 * (len(blocks) + 1) + 2.6, 1.95 * len(rows) + 0.5),
                             squeeze=False, layout="constrained")
    artist = None
    for r, (label, records) in enumerate(rows):
        draw_image(axes[r, 0], image, query_px, window_px, title="input" if r == 0 else None)
        _row_label(axes[r, 0], label)
        for c, block in enumerate(blocks, start=1):
            ax = axes[r, c]
            mine = select(records, block=block)
            if not mine:
                ax.axis("off")
                continue
            maps, geometry = block_query_attention(mine, query_px, batch)
            artist = draw_attention(ax, maps.mean(0), geometry, query_px,
                                    image.shape[:2], base_window)
            ax.set_title(block_label(mine, base_window), fontsize=7)
    add_colorbar(fig, artist, axes)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_dssa_anatomy(image: np.ndarray, rows: Sequence[tuple[str, Sequence[Record], str]],
                      query_px: tuple[int, int], batch: int = 0, base_window: int | None = None,
                      title: str | None = None):
    """DSSA taken apart, one row per (label, records, block), mean over heads: the image; DWA of the query
    pixel inside its window (pixel columns; the token's share aside); what each window token attends to in its
    window (DWA row 0); PWA from the query's window, A[i, j] over windows j; PWA to it, A[j, i]; both chained
    (`dssa_query_attention`); the PWA matrix (query window row outlined). Returns the Figure."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    columns = ["input", "DWA of the query", "window tokens (DWA row 0)", "PWA from the query's window",
               "PWA to the query's window", "DWA then PWA, chained", "PWA matrix (rows: query windows)"]
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(2.0 * len(columns) + 2.6, 2.15 * len(rows) + 0.6),
                             squeeze=False, layout="constrained")
    artist = None
    for r, (label, records, block) in enumerate(rows):
        dwa, pwa = select(records, "dwa", block), select(records, "pwa", block)
        if not dwa or not pwa:
            raise ValueError(f"{label}: {block} has no DWA and PWA to take apart")
        dwa, pwa = dwa[0], pwa[0]
        size = image.shape[:2]
        draw_image(axes[r, 0], image, query_px)
        _row_label(axes[r, 0], label)
        query = query_attention(dwa, query_px, batch).mean(0)
        query[~query_keys(dwa, query_px)] = np.nan
        panels = [query, window_token_attention(dwa, batch).mean(0),
                  pwa_window_attention(pwa, query_px, batch, "from").mean(0),
                  pwa_window_attention(pwa, query_px, batch, "to").mean(0),
                  dssa_query_attention(dwa, pwa, query_px, batch).mean(0)]
        for c, fmap in enumerate(panels, start=1):
            artist = draw_attention(axes[r, c], fmap, dwa, query_px if c != 2 else None, size, base_window)
        matrix = _attn(pwa, batch).mean(0)
        ax = axes[r, -1]
        ax.imshow(_for_log_scale(matrix), cmap=_cmap(), norm=probability_norm(), interpolation="nearest")
        window, _ = query_location(dwa, query_px)
        ax.add_patch(Rectangle((-0.5, window - 0.5), matrix.shape[1], 1, fill=False, ec="cyan", lw=1))
        ticks = np.arange(0, matrix.shape[0], max(1, matrix.shape[0] // 4))
        labels = window_labels(pwa["grid"])
        ax.set_xticks(ticks, [labels[t] for t in ticks], fontsize=6, rotation=90)
        ax.set_yticks(ticks, [labels[t] for t in ticks], fontsize=6)
        for c in range(len(columns)):
            axes[r, c].set_title(columns[c] if r == 0 else "", fontsize=7)
        axes[r, 1].set_title(f"{block_label([dwa, pwa], base_window)}\n{columns[1]}" if r == 0 else
                             block_label([dwa, pwa], base_window), fontsize=7)
    add_colorbar(fig, artist, axes)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_head_maps(image: np.ndarray, rows: Sequence[tuple[str, Sequence[Record]]], blocks: Sequence[str],
                   query_px: tuple[int, int], batch: int = 0, base_window: int | None = None,
                   title: str | None = None):
    """Per head: one row per model (label, records), one column per (block, head) of `blocks`, each the block's
    attention for the query pixel (`block_query_attention`), one colour scale and bar. Returns the Figure."""
    import matplotlib.pyplot as plt

    heads = {}
    for block in blocks:
        found = [block_query_attention(select(records, block=block), query_px, batch)[0].shape[0]
                 for _, records in rows if select(records, block=block)]
        heads[block] = max(found, default=0)
    columns = [(block, h) for block in blocks for h in range(heads[block])]
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(1.45 * len(columns) + 2.8, 1.55 * len(rows) + 0.6),
                             squeeze=False, layout="constrained")
    artist = None
    for r, (label, records) in enumerate(rows):
        _row_label(axes[r, 0], label)
        for c, (block, head) in enumerate(columns):
            ax = axes[r, c]
            mine = select(records, block=block)
            ax.set_xticks([])
            ax.set_yticks([])
            if not mine:
                continue
            maps, geometry = block_query_attention(mine, query_px, batch)
            if head >= maps.shape[0]:
                continue
            artist = draw_attention(ax, maps[head], geometry, query_px, image.shape[:2], base_window)
            ax.set_title(f"{block_label(mine, base_window)}\nhead {head + 1} of {maps.shape[0]}", fontsize=6)
    add_colorbar(fig, artist, axes)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_block_statistics(comparison: pd.DataFrame, metric: str, labels: dict[str, str] | None = None,
                          model: str = "model", columns: int = 4, title: str | None = None):
    """From `trained_vs_untrained`: one panel per model, the blocks' `metric` ("mean_distance_px" or
    "entropy_ratio") trained vs untrained, side by side. Returns the Figure."""
    import matplotlib.pyplot as plt

    names = list(comparison[model].unique())
    cols = min(columns, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.5 * rows + 0.7), squeeze=False, sharey=True,
                             layout="constrained")
    top = max(comparison[f"{metric}_trained"].max(), comparison[f"{metric}_untrained"].max())
    for ax, name in zip(axes.flat, names):
        part = comparison[comparison[model] == name]
        x = np.arange(len(part))
        ax.bar(x - 0.2, part[f"{metric}_untrained"], 0.4, color="0.7", label="untrained")
        ax.bar(x + 0.2, part[f"{metric}_trained"], 0.4, color="C0", label="trained")
        ax.set_xticks(x, part["unit"], fontsize=7)
        ax.set_ylim(0, top * 1.1)
        ax.set_title((labels or {}).get(name, name), fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    ylabel = {"mean_distance_px": "mean attention distance (input px)",
              "entropy_ratio": "entropy / log(keys)"}.get(metric, metric)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel, fontsize=8)
    fig.legend(*axes.flat[0].get_legend_handles_labels(), fontsize=8, loc="outside upper right", ncols=2)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_accuracy(table: pd.DataFrame, title: str | None = None):
    """Top-1 per model (from `chance_table`) as bars, the 95 % interval of guessing as a grey band; bars of
    models at chance hatched. Returns the Figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 0.38 * len(table) + 1.2))
    y = np.arange(len(table))[::-1]
    low, high = table["chance_low"].min(), table["chance_high"].max()
    ax.axvspan(low, high, color="0.85", zorder=0)
    bars = ax.barh(y, table["top1"], color=["0.6" if c else "C0" for c in table["at_chance"]], zorder=1)
    for bar, at_chance in zip(bars, table["at_chance"]):
        if at_chance:
            bar.set_hatch("//")
    for yi, value in zip(y, table["top1"]):
        ax.text(value + 1, yi, f"{value:.1f} %", va="center", fontsize=8)
    ax.set_yticks(y, table.index, fontsize=8)
    ax.set_xlim(0, 100)
    ax.set_xlabel(f"validation top-1 (%); grey band: chance, 95 % interval of guessing ({low:.1f}–{high:.1f} %)",
                  fontsize=8)
    ax.set_title(title or "The compared models", fontsize=10)
    fig.tight_layout()
    return fig
