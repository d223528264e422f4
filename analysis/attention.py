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

Everything except the `plot_*` functions is pure (records in, arrays / DataFrames out) and tested in
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


def attention_statistics(records: Sequence[Record], compose_dssa: bool = True, **labels: Any) -> pd.DataFrame:
    """A tidy table, one row per (record, head): block, kind, stage, head, mean_distance_px, entropy,
    token_share, keys, plus any `labels` as constant columns (e.g. variant="zero tokens").

    With `compose_dssa`, each SepViT block with both DWA and PWA also gets rows of kind "dwa+pwa": the
    two maps chained into one query-to-pixel path (how far a whole DSSA block reaches).
    """
    rows = []

    def add(block: str, kind: str, stride: int, stats: dict[str, np.ndarray]) -> None:
        for head, dist in enumerate(stats["mean_distance"]):
            rows.append(dict(block=block, kind=kind, stage=block_stage(block), head=head,
                             mean_distance_px=float(dist) * stride, entropy=float(stats["entropy"][head]),
                             token_share=float(stats["token_share"][head]), keys=int(stats["keys"][head]),
                             **labels))

    last_dwa: Record | None = None
    for record in records:
        add(record["block"], record["kind"], record["stride"], record_statistics(record))
        if record["kind"] == "dwa":
            last_dwa = record
        elif record["kind"] == "pwa" and compose_dssa and last_dwa is not None and last_dwa["block"] == record["block"]:
            add(record["block"], "dwa+pwa", record["stride"], _dssa_stats(last_dwa, record))
    columns = ["block", "kind", "stage", "head", "mean_distance_px", "entropy", "token_share", "keys", *labels]
    return pd.DataFrame(rows, columns=columns)


def block_summary(stats: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """Mean over heads per (labels..., block, kind), in forward order."""
    keys = [*by, "block", "kind", "stage"]
    return (stats.groupby(keys, sort=False)[["mean_distance_px", "entropy", "token_share"]].mean().reset_index())


def block_reach(stats: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """One row per (labels..., block): how far the block's attention reaches, mean over heads. A SepViT block
    with DWA and PWA counts as its chained "dwa+pwa" path; any other block has one attention kind."""
    summary = block_summary(stats, by)
    keys = [*by, "block"]
    composed = summary.groupby(keys, sort=False)["kind"].transform(lambda kinds: (kinds == "dwa+pwa").any())
    chosen = summary[(summary["kind"] == "dwa+pwa") | (~composed & (summary["kind"] != "pwa"))]
    return chosen.reset_index(drop=True)


# ---------------------------------------------------------------------------------- images
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
def _axes(ax=None, figsize=(4, 4)):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def _draw_overlay(ax, image: np.ndarray | None, heat: np.ndarray, record: Record, alpha: float = 0.6,
                  cmap: str = "inferno", query_px: tuple[int, int] | None = None, grid: bool = True) -> None:
    extent = (-0.5, heat.shape[1] - 0.5, heat.shape[0] - 0.5, -0.5)
    if image is not None:
        ax.imshow(image, extent=extent)
    ax.imshow(heat, cmap=cmap, alpha=alpha if image is not None else 1.0, extent=extent, interpolation="nearest")
    if grid:
        ys, xs = window_grid_lines(record)
        for y in ys:
            ax.axhline(y - 0.5, color="white", lw=0.6, alpha=0.8)
        for x in xs:
            ax.axvline(x - 0.5, color="white", lw=0.6, alpha=0.8)
    if query_px is not None:
        ax.plot(query_px[1], query_px[0], marker="x", color="cyan", markersize=8, mew=2)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xticks([])
    ax.set_yticks([])


def _image_size(image: np.ndarray | None, record: Record) -> tuple[int, int]:
    if image is not None:
        return image.shape[0], image.shape[1]
    h, w = record["map_size"]
    return h * record["stride"], w * record["stride"]


def _reduce_heads(maps: np.ndarray, head: int | None) -> np.ndarray:
    return maps.mean(0) if head is None else maps[head]


def plot_window_token_attention(image: np.ndarray | None, record: Record, batch: int = 0, head: int | None = None,
                                ax=None, title: str | None = None):
    """Window-token attention over each window's pixels, over the image with the window grid. Returns the Figure."""
    fig, ax = _axes(ax)
    heat = upsample_to_image(_reduce_heads(window_token_attention(record, batch), head), record["stride"],
                             _image_size(image, record))
    _draw_overlay(ax, image, heat, record)
    ax.set_title(title or f"{record['block']} window tokens" + ("" if head is None else f" h{head}"), fontsize=9)
    return fig


def plot_query_attention(image: np.ndarray | None, record: Record, query_px: tuple[int, int], batch: int = 0,
                         head: int | None = None, ax=None, title: str | None = None, direction: str = "from"):
    """One query pixel's attention (DWA/Swin/Twins/MSA; PWA as window weights, see `pwa_window_attention`),
    over the image, the query marked. Returns the Figure."""
    fig, ax = _axes(ax)
    if record["kind"] == "pwa":
        maps = pwa_window_attention(record, query_px, batch, direction)
    else:
        maps = query_attention(record, query_px, batch)
    heat = upsample_to_image(_reduce_heads(maps, head), record["stride"], _image_size(image, record))
    _draw_overlay(ax, image, heat, record, query_px=query_px)
    ax.set_title(title or f"{record['block']} {record['kind']} from {tuple(query_px)}", fontsize=9)
    return fig


def plot_pwa_heatmap(record: Record, batch: int = 0, head: int | None = None, ax=None, title: str | None = None,
                     annotate: bool | None = None):
    """PWA as a window-by-window heatmap, windows labelled "(r,c)" by grid position. Returns the Figure."""
    import seaborn as sns

    frame = pwa_matrix(record, batch, head)
    n = len(frame)
    fig, ax = _axes(ax, figsize=(max(3.5, 0.16 * n + 2), max(3.0, 0.16 * n + 1.5)))
    annotate = n <= 16 if annotate is None else annotate
    step = max(1, n // 16)
    sns.heatmap(frame, ax=ax, cmap="viridis", square=True, annot=annotate, fmt=".2f", annot_kws=dict(fontsize=7),
                xticklabels=step, yticklabels=step, cbar_kws=dict(shrink=0.7))
    ax.tick_params(labelsize=7)
    ax.set_title(title or f"{record['block']} PWA" + (" (mean of heads)" if head is None else f" head {head}"),
                 fontsize=9)
    return fig


def plot_head_grid(image: np.ndarray | None, record: Record, maps: np.ndarray, columns: int = 4,
                   title: str | None = None, query_px: tuple[int, int] | None = None):
    """One overlay per head of feature-map maps (heads, H, W) (e.g. `window_token_attention`). Returns the Figure."""
    import matplotlib.pyplot as plt

    heads = maps.shape[0]
    cols = min(columns, heads)
    rows = math.ceil(heads / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.4 * rows + 0.4), squeeze=False)
    size = _image_size(image, record)
    for h, ax in enumerate(axes.flat):
        if h >= heads:
            ax.axis("off")
            continue
        _draw_overlay(ax, image, upsample_to_image(maps[h], record["stride"], size), record, query_px=query_px)
        ax.set_title(f"head {h}", fontsize=8)
    fig.suptitle(title or f"{record['block']} {record['kind']}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_mean_distance(stats: pd.DataFrame, hue: str = "variant", per_kind: bool = False, ax=None,
                       title: str | None = None):
    """Mean attention distance (input pixels) per block, one colour per `hue` value (e.g. variant).

    Default: one value per block (`block_reach`: DSSA blocks as their chained DWA+PWA path), mean over heads.
    per_kind=True: one bar per block and attention kind, error bars spanning the heads. Returns the Figure.
    """
    import seaborn as sns

    by = [hue] if hue in stats else []
    data = stats if per_kind else block_reach(stats, by)
    short = data["block"].str.replace("stages.", "s", regex=False).str.replace(".blocks.", ".b", regex=False)
    data = data.assign(unit=short + " " + data["kind"] if per_kind else short)
    groups = data["unit"].nunique() * (data[hue].nunique() if by else 1)
    fig, ax = _axes(ax, figsize=(max(6.0, 0.25 * groups + 3.0), 3.8))
    sns.barplot(data=data, x="unit", y="mean_distance_px", hue=hue if by else None, ax=ax,
                errorbar=("pi", 100) if per_kind else None, err_kws=dict(linewidth=0.8))
    ax.set_xlabel("block and attention kind" if per_kind else "block (SepViT blocks: DWA then PWA)")
    ax.set_ylabel("mean distance (input px)")
    ax.tick_params(axis="x", rotation=60 if per_kind else 0, labelsize=7)
    ax.set_title(title or ("Mean attention distance per block and kind" if per_kind else
                           "How far each block attends (mean attention distance)"), fontsize=10)
    if by:
        ax.legend(fontsize=7, title=hue, title_fontsize=8, bbox_to_anchor=(1.01, 1.0), loc="upper left")
    fig.tight_layout()
    return fig
