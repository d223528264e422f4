"""The model's integer geometry: patch-embedding output sizes and window partitions (no tensors).

Every shape rule lives here once; the configuration (`SepViTConfig`'s block specs), the layers and the
MAC counts all read it.
"""
from __future__ import annotations

import math


def patch_embed_geometry(stride: int, overlapping: bool) -> tuple[int, int]:
    """(kernel, padding) of a patch embedding. OPE: kernel 2*stride-1 (7 for 4, 3 for 2, 3 for 1)."""
    if not overlapping:
        return stride, 0
    kernel = 2 * stride - 1 if stride > 1 else 3
    return kernel, kernel // 2


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Side of a convolution's output map."""
    return (size + 2 * padding - kernel) // stride + 1


def patch_embed_output_size(size: int, stride: int, overlapping: bool) -> int:
    """Side of the map a patch embedding of `stride` makes from a map of side `size`."""
    kernel, padding = patch_embed_geometry(stride, overlapping)
    return conv_output_size(size, kernel, stride, padding)


def window_geometry(height: int, width: int, window: int) -> tuple[int, int, int, int]:
    """(window_h, window_w, pad_h, pad_w) for partitioning a map.

    A map that fits in one window becomes a single window of its own size (no padding): the block
    degenerates to full attention, as in the authors' code at stage 4. Otherwise the map is padded with
    zeros on the bottom/right to a multiple of the window (the authors' dense-prediction backbones).
    """
    if height <= window and width <= window:
        return height, width, 0, 0
    return window, window, (-height) % window, (-width) % window


def window_grid(side: int, window: int) -> tuple[int, int]:
    """Windows per side (rows, columns) of a square map of `side` for `window`: (1, 1) when it fits one."""
    if side <= window:
        return 1, 1
    return (math.ceil(side / window),) * 2
