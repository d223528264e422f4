"""Analytic MACs (multiply-add = 1): our models count themselves, timm's reference blocks by the paper's formulas.

Nothing here re-derives the model. Every unit of ours counts itself (`macs()` on `DepthwiseSelfAttention`,
`PointwiseSelfAttention`, `DepthwiseSeparableSelfAttention`, the peers' units, the blocks, `PatchEmbed`,
`ConditionalPositionEncoding`; `SepViT.macs_breakdown` walks the stages), with the geometry its forward runs
(padding, single windows, window tokens only where there are several windows). This module builds the model a
`SepViTConfig` describes (on the meta device: no memory, no random draws) and reads those counts. Only timm's own
blocks (the Swin/Twins/ViT references of the block comparison) are counted by formulas here, because they are
not ours.

Every count is a `sepvit.macs.Macs` split by convention, so that no table hides a difference between counters:
  paper     Linear/conv weights and the attention matmuls (q k^T, attn v): the paper's formulas.
  norms     LayerNorm as fvcore counts it (5 per normalised element); the paper counts none.
  resample  bilinear resizing of learnable window tokens (input grid != built grid), fvcore: 4 per output.
  biases    bias adds of Linear/conv layers: ptflops counts those lowered to addmm/conv; fvcore and the
            paper count none.
fvcore's convention is paper + norms + resample (`Macs.fvcore`), and it is matched exactly by the tests.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import torch

from sepvit.attention import (
    DepthwiseSeparableSelfAttention,
    GlobalMultiHeadAttention,
    GlobalSubsampledAttention,
    WindowMultiHeadAttention,
)
from sepvit.config import SepViTConfig
from sepvit.geometry import window_geometry
from sepvit.macs import Macs, attention_matmuls, layer_norm, linear
from sepvit.macs import mlp as _mlp
from sepvit.model import make_block


# ================================================================================== elementary pieces
norm = layer_norm  # one LayerNorm over tokens x dim (0 in the paper, 5 per element for fvcore)


def mlp(tokens: int, dim: int, mlp_ratio: float) -> Macs:
    """The block MLP (fc1 + fc2, hidden = int(dim * mlp_ratio)); GELU not counted."""
    return _mlp(tokens, dim, int(dim * mlp_ratio))


# ================================================================================== timm's blocks (not ours)
def msa(height: int, width: int, dim: int) -> Macs:
    """Global MSA with projection (paper Eq. 4): 4 HW C^2 + 2 (HW)^2 C: timm's ViT attention."""
    tokens = height * width
    return linear(tokens, dim, 3 * dim) + attention_matmuls(1, tokens, tokens, dim, dim) + linear(tokens, dim, dim)


def window_msa(height: int, width: int, dim: int, window: int, *, shrink_to_map: bool = True,
               proj_on_padded: bool = False) -> Macs:
    """Windowed MSA with projection (paper Eq. 4): 4 HW C^2 + 2 M^2 HW C, as timm's Swin and Twins run it.

    The map is padded to whole windows, so qkv and the attention run on Hp x Wp tokens; the projection runs
    after cropping in Twins' LSA (HW C^2) but on the padded windows in timm's Swin (`proj_on_padded=True`).
    `shrink_to_map`: a map no larger than the window is one window of the map's size (timm's Swin);
    timm's Twins LSA pads such a map up to a full window instead (`shrink_to_map=False`).
    """
    if shrink_to_map:
        wh, ww, ph, pw = window_geometry(height, width, window)
    else:
        wh, ww, ph, pw = window, window, (-height) % window, (-width) % window
    padded, per_window = (height + ph) * (width + pw), wh * ww
    proj_tokens = padded if proj_on_padded else height * width
    return (linear(padded, dim, 3 * dim) + attention_matmuls(padded // per_window, per_window, per_window, dim, dim)
            + linear(proj_tokens, dim, dim))


def twins_gsa(height: int, width: int, dim: int, sr_ratio: int) -> Macs:
    """timm's Twins global sub-sampled attention: the map is floored to a multiple of sr (ours pads it):
    2 HW C^2 (q, proj) + 2 kv C^2 + kv C^2 sr^2 (conv) + 2 HW kv C, + the LayerNorm of the kv map."""
    tokens, kv = height * width, (height // sr_ratio) * (width // sr_ratio)
    out = (linear(tokens, dim, dim) + linear(kv, dim, 2 * dim) + attention_matmuls(1, tokens, kv, dim, dim)
           + linear(tokens, dim, dim))
    if sr_ratio > 1:
        out = out + Macs(paper=kv * dim * dim * sr_ratio**2, biases=kv * dim) + norm(kv, dim)
    return out


def transformer_block(height: int, width: int, dim: int, attention: Macs, mlp_ratio: float = 4.0) -> Macs:
    """Pre-norm block around an attention unit: LN, attention, LN, MLP."""
    tokens = height * width
    return norm(tokens, dim) + attention + norm(tokens, dim) + mlp(tokens, dim, mlp_ratio)


# ================================================================================== ours: read from the modules
def meta_model(cfg: SepViTConfig) -> torch.nn.Module:
    """The model `cfg` describes, built on the meta device: its structure and counts, no weights."""
    with torch.device("meta"):
        return cfg.build()


def _size2(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    size = tuple(size)
    return (size[-2], size[-1]) if len(size) >= 2 else (size[0], size[0])


def block_macs(cfg: SepViTConfig, stage: int, index: int, height: int, width: int) -> Macs:
    """The block at (stage, index) of a model built from `cfg` (its spec), run on an H x W map."""
    with torch.device("meta"):
        return make_block(cfg.block_spec(stage, index)).macs(height, width)


def model_macs(cfg: SepViTConfig, img_size: int | Sequence[int] | None = None) -> Macs:
    """Analytic MACs of the whole model built from `cfg` on an input of `img_size` (default cfg.img_size)."""
    return meta_model(cfg).macs(*_size2(cfg.img_size if img_size is None else img_size))


# ================================================================================== attention units against resolution
ATTENTION_KINDS = ("global MSA", "Swin W-MSA", "Twins LSA", "Twins GSA", "SepViT DWA", "SepViT PWA",
                   "SepViT DSSA (DWA + PWA + proj)")


def dssa_parts(height: int, width: int, dim: int, window: int) -> dict[str, Macs]:
    """Our DSSA unit at one map and window, built for that map (window tokens and PWA where it has several
    windows, no token resizing): its own count per step."""
    wh, ww, ph, pw = window_geometry(height, width, window)
    with torch.device("meta"):
        unit = DepthwiseSeparableSelfAttention(dim, 1, window, ((height + ph) // wh, (width + pw) // ww))
    return unit.macs_parts(height, width)


def attention_unit_macs(kind: str, height: int, width: int, dim: int, window: int = 7, sr_ratio: int = 8) -> Macs:
    """MACs of one of our attention units (no norms around it, no MLP) by kind name (see ATTENTION_KINDS)."""
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"unknown attention kind {kind!r}: use one of {', '.join(ATTENTION_KINDS)}")
    if kind.startswith("SepViT"):
        parts = dssa_parts(height, width, dim, window)
        if kind == "SepViT DWA":
            return parts["dwa"]
        if kind == "SepViT PWA":
            return parts["pwa"]
        return parts["dwa"] + parts["pwa"] + parts["proj"]
    with torch.device("meta"):  # heads do not change MACs
        unit = {"global MSA": lambda: GlobalMultiHeadAttention(dim, 1),
                "Swin W-MSA": lambda: WindowMultiHeadAttention(dim, 1, window),
                "Twins LSA": lambda: WindowMultiHeadAttention(dim, 1, window, kind="twins_local"),
                "Twins GSA": lambda: GlobalSubsampledAttention(dim, 1, sr_ratio)}[kind]()
    return unit.macs(height, width)


def attention_vs_resolution(resolutions: Iterable[int] = range(112, 1025, 16), *, dim: int = 96, stride: int = 4,
                            window: int = 7, sr_ratio: int = 8) -> list[dict[str, Any]]:
    """Paper-convention MACs of each attention kind on the stride-`stride` map of a square image (SepViT-T /
    Swin-T stage 1 by default), and SepViT's PWA terms on their own: N^2 C (the window-to-window map) and
    N HW C (mixing window features: (HW)^2 C / M^2, quadratic in the tokens like global attention)."""
    rows = []
    for res in resolutions:
        side = math.ceil(res / stride)
        for kind in ATTENTION_KINDS:
            rows.append(dict(resolution=res, side=side, tokens=side * side, kind=kind,
                             macs=attention_unit_macs(kind, side, side, dim, window, sr_ratio).paper))
        wh, ww, ph, pw = window_geometry(side, side, window)
        hp, wp = side + ph, side + pw
        n = (hp // wh) * (wp // ww)
        if n > 1:
            rows.append(dict(resolution=res, side=side, tokens=side * side, kind="PWA N^2 C term", macs=n * n * dim))
            rows.append(dict(resolution=res, side=side, tokens=side * side, kind="PWA N HW C term", macs=n * hp * wp * dim))
    return rows


def pwa_crossovers(dim: int = 96, window: int = 7, stride: int = 4) -> dict[str, float]:
    """Token counts (and image sides at `stride`) where PWA's quadratic term N HW C = (HW)^2 C / M^2 equals
    DWA's attention matmuls 2 N (M^2+1)^2 C (HW = 2 (M^2+1)^2) and the block's linear layers of attention
    4 HW C^2 (HW = 4 C M^2), on maps of whole windows."""
    m2 = window * window
    vs_dwa = 2 * (m2 + 1) ** 2
    vs_linear = 4 * dim * m2
    return dict(tokens_vs_dwa_matmuls=vs_dwa, image_side_vs_dwa_matmuls=math.sqrt(vs_dwa) * stride,
                tokens_vs_attention_linears=vs_linear, image_side_vs_attention_linears=math.sqrt(vs_linear) * stride)


