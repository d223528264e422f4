"""Recorded attention maps placed in image space: records, window geometry, one query's map, one block's map.

Input: the records of `sepvit.attention.record_attention`; coordinates and windows as the package docstring
(`analysis.attention`) states them. Also the images the maps are drawn over (loading, normalising).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image

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


def token_offset(record: Record) -> int:
    """1 where a DWA record's windows start with their window token (key/query 0), else 0."""
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


def attention_array(record: Record, batch: int) -> np.ndarray:
    """The recorded probabilities of one batch element as a float numpy array."""
    return record["attn"][batch].detach().float().cpu().numpy()


# ---------------------------------------------------------------------------------- (a) window tokens
def window_token_attention(record: Record, batch: int = 0) -> np.ndarray:
    """What each window token attends to inside its window: row 0 of the DWA map over the window's pixels
    (columns 1:), stitched into a feature map. Returns (heads, H, W); each window's pixels sum to
    1 - (the token's attention to itself)."""
    if record["kind"] != "dwa" or not token_offset(record):
        raise ValueError(f"{record['block']}: window-token attention needs a 'dwa' record with window tokens, "
                         f"got kind {record['kind']!r}")
    attn = attention_array(record, batch)  # (windows, heads, T, T)
    rows = attn[:, :, 0, 1:].transpose(1, 0, 2)  # (heads, windows, window pixels)
    return stitch_windows(rows, record)


def window_token_self_attention(record: Record, batch: int = 0) -> np.ndarray:
    """(heads, gh, gw): the attention each window token pays to itself (the rest goes to its pixels)."""
    attn = attention_array(record, batch)
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
    attn = attention_array(record, batch)
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
    offset = token_offset(record)
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
    attn = attention_array(record, batch)
    row = attn[:, window, :] if direction == "from" else attn[:, :, window]
    h, w = record["map_size"]
    return np.repeat(np.repeat(row.reshape(-1, gh, gw), wh, axis=-2), ww, axis=-1)[:, :h, :w]


# ---------------------------------------------------------------------------------- (c) PWA
def pwa_matrix(record: Record, batch: int = 0, head: int | None = None) -> pd.DataFrame:
    """The PWA window-to-window map (query window rows, key window columns) labelled "(r,c)";
    one head or the mean over heads."""
    if record["kind"] != "pwa":
        raise ValueError(f"expected a 'pwa' record, got {record['kind']!r}")
    attn = attention_array(record, batch)
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
    offset = token_offset(dwa)
    rows = attention_array(dwa, batch)[:, :, position + offset, offset:]  # (windows, heads, window pixels)
    rows = rows / np.clip(rows.sum(-1, keepdims=True), 1e-30, None)
    weights = attention_array(pwa, batch)[:, window, :]  # (heads, windows): A_pwa[i, j]
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


# ---------------------------------------------------------------------------------- images
def load_image(source: Any, size: int) -> np.ndarray:
    """An RGB image, from a file path or an (H, W[, 3|4]) array, centre-cropped to a square and resized to
    size x size (antialiased): (size, size, 3) float32 in [0, 1]."""
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


