"""Figures of recorded attention: every map on one fixed colour scale (probabilities, log, `PROBABILITY_RANGE`)
with its colour bar, the query marked and window / group borders drawn. Each `plot_*` returns its Figure.
"""
from __future__ import annotations

import math
from typing import Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.patches import Rectangle

from analysis.attention.maps import (Record, attention_array, block_label, block_names, block_query_attention,
                                     dssa_query_attention, pwa_window_attention, query_attention, query_keys,
                                     query_location, select, upsample_to_image, window_grid_lines, window_labels,
                                     window_token_attention)


# ---------------------------------------------------------------------------------- plots
# One colour scale for every attention map: probabilities on a log scale, fixed, so that uniform attention over
# many keys is dark and a flat map stays flat (a per-panel scale would turn a 2 % ripple into structure).
PROBABILITY_RANGE = (1e-4, 1.0)
NOT_A_KEY = "0.8"  # grey: pixels the query cannot attend to (outside its window)
COLOURBAR_LABEL = "attention probability (log scale; grey: not a key)"


def probability_norm():
    return LogNorm(*PROBABILITY_RANGE, clip=False)


def _cmap():
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
        matrix = attention_array(pwa, batch).mean(0)
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
