"""Complexity of SepViT and its peers in MACs (multiply-add = 1), three ways: the paper's formulas, fvcore, ptflops.

Analytic side: nothing here re-derives the model. Every unit of ours counts itself (`macs()` on
`DepthwiseSelfAttention`, `PointwiseSelfAttention`, `DepthwiseSeparableSelfAttention`, the peers' units,
the blocks, `PatchEmbed`, `ConditionalPositionEncoding`; `SepViT.macs_breakdown` walks the stages), with the
geometry its forward runs (padding, single windows, window tokens only where there are several windows).
This module builds the model a `SepViTConfig` describes (on the meta device: no memory, no random draws)
and reads those counts. Only timm's own blocks (the Swin/Twins/ViT references of the block comparison)
are counted by formulas here, because they are not ours.

Every count is a `sepvit.macs.Macs` split by convention, so that no table hides a difference between counters:
  paper     Linear/conv weights and the attention matmuls (q k^T, attn v): the paper's formulas.
  norms     LayerNorm as fvcore counts it (5 per normalised element); the paper counts none.
  resample  bilinear resizing of learnable window tokens (input grid != built grid), fvcore: 4 per output.
  biases    bias adds of Linear/conv layers: ptflops counts those lowered to addmm/conv; fvcore and the
            paper count none.
fvcore's convention is paper + norms + resample (`Macs.fvcore`), and it is matched exactly by the tests.

Command line (`sepvit-complexity` or `python analysis/complexity.py`): see `--help`.
"""
from __future__ import annotations

import argparse
import difflib
import functools
import json
import math
import sys
from typing import Any, Iterable, Sequence

if __package__ in (None, ""):  # `python analysis/complexity.py`: make the repository root importable
    import os

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from sepvit.attention import (
    DepthwiseSeparableSelfAttention,
    GlobalMultiHeadAttention,
    GlobalSubsampledAttention,
    WindowMultiHeadAttention,
)
from sepvit.config import BLOCK_PATTERNS, PRESETS, SepViTConfig
from sepvit.geometry import window_geometry
from sepvit.macs import Macs, attention_matmuls, layer_norm, linear, total
from sepvit.macs import mlp as _mlp
from sepvit.model import make_block
from workbench.cli import OneLineParser

from analysis.units import TITLES, UNITS, stage_units

__all__ = ["Macs", "total", "norm", "linear", "mlp"]  # the counting record, re-exported for callers

# Published numbers at 224x224 (params in M, MACs in G) as their sources give them: the SepViT reference table
# (official code + fvcore, explicit attention), Swin's README (attention matmuls included) and Twins' README
# (attention matmuls left out). Reference data for comparison only, never used as a result.
PUBLISHED = {
    "sepvit_lite": dict(params_m=3.66, gmacs=0.57, source="SepViT paper / official code"),
    "sepvit_tiny": dict(params_m=31.18, gmacs=4.53, source="SepViT paper / official code"),
    "sepvit_small": dict(params_m=46.57, gmacs=7.48, source="SepViT paper / official code"),
    "sepvit_base": dict(params_m=82.38, gmacs=13.08, source="SepViT paper / official code"),
    "swin_tiny_patch4_window7_224": dict(params_m=28.3, gmacs=4.5, source="Swin README (with attention matmuls)"),
    "swin_small_patch4_window7_224": dict(params_m=49.6, gmacs=8.7, source="Swin README (with attention matmuls)"),
    "swin_base_patch4_window7_224": dict(params_m=87.8, gmacs=15.4, source="Swin README (with attention matmuls)"),
    "twins_svt_small": dict(params_m=24.0, gmacs=2.8, source="Twins README (attention matmuls left out)"),
    "twins_svt_base": dict(params_m=56.0, gmacs=8.3, source="Twins README (attention matmuls left out)"),
    "twins_svt_large": dict(params_m=99.2, gmacs=14.8, source="Twins README (attention matmuls left out)"),
}

CONVENTIONS = """\
All counts are MACs (one multiply-add = 1), batch 1, one forward pass. 1 GMAC = 1e9 MACs (= 2e9 FLOPs).
Columns:
  analytic        the paper's formulas, composed from the units' macs() over the code's real geometry
                  (padding, single windows, window tokens): Linear/conv weights + attention matmuls;
                  no LayerNorm, softmax, GELU, bias or residual adds. Empty for timm models.
  analytic+norms  analytic + LayerNorm at fvcore's 5 MACs per element (+ window-token resizing): fvcore's
                  convention; equals fvcore exactly for our models.
  fvcore          fvcore FlopCountAnalysis with a handle for aten::scaled_dot_product_attention
                  (L*S*E + L*S*Ev per batch-head), so fused attention counts like explicit attention.
  fvcore-norms    fvcore minus its LayerNorm (and resizing) MACs: the paper's convention, measured, for
                  every model.
  norms           the LayerNorm MACs inside fvcore's count.
  attn matmuls    the attention matmul MACs inside fvcore's count (Twins' README leaves them out).
  ptflops         ptflops 0.7.5, backend='aten', on a deep copy with explicit attention and the math SDPA
                  kernel: counts bias adds of Linear/conv, no norms.
Published numbers are not counted alike: Swin's README includes attention matmuls, Twins' leaves them out."""


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


def model_breakdown(cfg: SepViTConfig, img_size: int | Sequence[int] | None = None) -> list[dict[str, Any]]:
    """Analytic MACs of every part of the model built from `cfg`, on an input of `img_size` (default
    cfg.img_size): one row per patch embedding, block, CPE, final norm and head (`SepViT.macs_breakdown`)."""
    rows = []
    for name, macs in meta_model(cfg).macs_breakdown(*_size2(cfg.img_size if img_size is None else img_size)):
        parts = name.split(".")
        stage = int(parts[1]) if parts[0] == "stages" else None
        part = parts[-1] if parts[-2:-1] != ["blocks"] else f"block{parts[-1]}"
        rows.append(dict(stage=stage, part=part, macs=macs))
    return rows


def model_macs(cfg: SepViTConfig, img_size: int | Sequence[int] | None = None) -> Macs:
    """Analytic MACs of the whole model built from `cfg` on an input of `img_size` (default cfg.img_size)."""
    return meta_model(cfg).macs(*_size2(cfg.img_size if img_size is None else img_size))


# ================================================================================== building models by name
class UsageError(ValueError):
    """Bad input from the user: the command line reports it in one line and exits with code 2."""


@functools.lru_cache(maxsize=1)
def known_model_names() -> tuple[str, ...]:
    import timm

    import sepvit  # noqa: F401  (registers the sepvit_* models with timm)

    return tuple(sorted(set(timm.list_models()) | set(PRESETS)))


def check_model_name(name: str) -> str:
    """`name` if timm or the workbench knows it, else UsageError listing the closest known names."""
    known = list(known_model_names())
    if name in known:
        return name
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    hint = f"closest known names: {', '.join(close)}" if close else "see timm.list_models() or the sepvit_* presets"
    raise UsageError(f"unknown model {name!r}; {hint}")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def build_config(name: str, img_size: int | None = None, **changes: Any) -> tuple[SepViTConfig, str]:
    """The config of workbench model `name` built for `img_size`, and a note.

    A model is built for the size it will run at. Where its config refuses that size (e.g. a group of 2x2
    windows does not fit a small map), it is built at its own size and run at `img_size`, which the model
    supports (padding, resized window tokens); the note says so.
    """
    try:
        base = SepViTConfig.preset(name, **changes)
    except (TypeError, ValueError) as error:
        raise UsageError(f"{name}: {error}") from None
    if img_size is None or img_size == base.img_size:
        return base, ""
    try:
        return base.replace(img_size=img_size), ""
    except ValueError as error:
        return base, f"built at {base.img_size} px and run at {img_size} px ({error})"


def build_model(name: str, img_size: int | None = None, **kwargs: Any):
    """(model in eval mode, SepViTConfig or None for timm models, input size, note) for a model name.

    timm models whose size is fixed at creation (Swin) are created for `img_size`; a model that cannot be
    created for it raises UsageError with one line.
    """
    import timm

    check_model_name(name)
    if name in PRESETS:
        cfg, note = build_config(name, img_size, **kwargs)
        return cfg.build().eval(), cfg, img_size or cfg.img_size, note
    default = _timm_default_size(name)
    size = img_size or default
    extra = dict(kwargs)
    if size != default:
        extra["img_size"] = size
    try:
        model = timm.create_model(name, pretrained=False, **extra)
    except TypeError as error:
        if "img_size" not in extra:
            raise UsageError(f"{name}: {_first_line(error)}") from None
        extra.pop("img_size")  # the model takes any size at run time
        try:
            model = timm.create_model(name, pretrained=False, **extra)
        except Exception as error2:  # noqa: BLE001  (any construction failure is a usage error here)
            raise UsageError(f"{name}: {_first_line(error2)}") from None
    except Exception as error:  # noqa: BLE001
        raise UsageError(f"{name} cannot be built for {size} px input: {_first_line(error)}") from None
    return model.eval(), None, size, ""


def _timm_default_size(name: str) -> int:
    import timm

    try:
        return int(timm.models.get_pretrained_cfg(name).input_size[-1])
    except Exception:  # noqa: BLE001  (no pretrained cfg: assume the ImageNet default)
        return 224


# ================================================================================== whole models, measured
def measure_model(name: str, img_size: int | None = None, *, with_ptflops: bool = True,
                  **kwargs: Any) -> dict[str, Any]:
    """One row of the whole-model table: params, analytic MACs (ours only), fvcore, ptflops (all MACs)."""
    import torch

    from analysis.counters import count_params, fvcore_count, ptflops_count

    model, cfg, size, note = build_model(name, img_size, **kwargs)
    in_chans = cfg.in_chans if cfg is not None else getattr(model, "in_chans", 3)
    shape = (in_chans, size, size)
    try:
        counted = fvcore_count(model, torch.zeros(1, *shape))
        ptflops = ptflops_count(model, shape) if with_ptflops else None
    except Exception as error:  # noqa: BLE001  (a model that cannot run on this input)
        raise UsageError(f"{name} cannot run on a {in_chans}x{size}x{size} input: {_first_line(error)}") from None
    analytic = model_macs(cfg, size) if cfg is not None else None
    return dict(
        model=name,
        img_size=size,
        params=count_params(model),
        macs_analytic=analytic.paper if analytic else None,
        macs_analytic_norms=analytic.fvcore if analytic else None,
        macs_fvcore=counted.total,
        fvcore_norms=counted.norms,
        macs_fvcore_no_norms=counted.without_norms,
        fvcore_attention_matmuls=counted.attention_matmuls,
        macs_ptflops=ptflops,
        note=note,
    )


def model_table(names: Sequence[str], img_size: int | None = None, *, with_ptflops: bool = True,
                **kwargs: Any) -> list[dict[str, Any]]:
    for name in names:  # fail on a bad name before counting anything
        check_model_name(name)
    if kwargs and not any(name in PRESETS for name in names):
        raise UsageError("--model-kwargs sets SepViTConfig fields: it needs at least one sepvit_* model")
    return [measure_model(name, img_size, with_ptflops=with_ptflops, **(kwargs if name in PRESETS else {}))
            for name in names]


# ================================================================================== block comparison
BLOCK_UNITS, BLOCK_UNIT_TITLES = UNITS, TITLES


def _unit_macs(cfg: SepViTConfig, stage: int, height: int, width: int,
               units: dict[str, torch.nn.Module | None]) -> dict[str, Macs | None]:
    """name -> analytic Macs of every unit of `analysis.units.stage_units` at one stage's shape: ours as
    the modules count themselves, timm's blocks by the formulas above."""
    dim, window, ratio = cfg.embed_dims[stage], cfg.window_size, cfg.mlp_ratio
    sr = cfg.twins_sr_ratios[stage]
    timm_blocks = {
        "swin_pair": transformer_block(height, width, dim,
                                       window_msa(height, width, dim, window, proj_on_padded=True), ratio) * 2,
        "twins_pair": (transformer_block(height, width, dim, window_msa(height, width, dim, window, shrink_to_map=False),
                                         ratio)
                       + transformer_block(height, width, dim, twins_gsa(height, width, dim, sr), ratio)),
        "msa_block": transformer_block(height, width, dim, msa(height, width, dim), ratio),
    }
    return {name: timm_blocks[name] if name in timm_blocks else (unit.macs(height, width) if unit is not None else None)
            for name, unit in units.items()}


def block_comparison(variant: str = "sepvit_tiny", img_size: int | None = None, *,
                     measure: bool = True) -> list[dict[str, Any]]:
    """At each stage's shape of `variant` on an `img_size` input: one SepViT block against a Swin pair,
    a Twins pair (timm's own blocks) and a global MSA block, MLP included, with our block_pattern blocks.

    Per stage and unit: `<unit>` = fvcore's measured MACs (None without `measure`), `<unit>_analytic` =
    the paper's convention, `<unit>_analytic_norms` = fvcore's convention. Ratios of the SepViT block to
    the Swin pair: analytic (paper convention), attention only (MLPs removed) and fvcore.
    """
    from analysis.counters import fvcore_count

    if variant not in PRESETS:
        close = difflib.get_close_matches(variant, list(PRESETS), n=3, cutoff=0.4)
        raise UsageError(f"unknown variant {variant!r}: use one of {', '.join(PRESETS)}"
                         + (f" (closest: {', '.join(close)})" if close else ""))
    cfg, note = build_config(variant, img_size)
    size = img_size or cfg.img_size
    rows = []
    for stage, (h, w) in enumerate(cfg.stage_sizes(size, size)):
        dim = cfg.embed_dims[stage]
        row: dict[str, Any] = dict(stage=stage + 1, height=h, width=w, dim=dim, heads=cfg.num_heads[stage],
                                   window=cfg.window_size, img_size=size)
        units = stage_units(cfg, stage, h, w)
        unit_macs = _unit_macs(cfg, stage, h, w, units)
        for name in BLOCK_UNITS:
            module, macs = units[name], unit_macs[name]
            if module is None:
                row[name] = row[f"{name}_analytic"] = row[f"{name}_analytic_norms"] = None
                continue
            row[f"{name}_analytic"] = macs.paper
            row[f"{name}_analytic_norms"] = macs.fvcore
            if measure:
                row[name] = fvcore_count(module.eval(), torch.zeros(1, h, w, dim)).total
            else:
                row[name] = None
        mlp_paper = mlp(h * w, dim, cfg.mlp_ratio).paper
        row["ratio_to_swin_pair_analytic"] = row["sepvit_block_analytic"] / row["swin_pair_analytic"]
        row["ratio_to_swin_pair_attention_only"] = ((row["sepvit_block_analytic"] - mlp_paper)
                                                    / (row["swin_pair_analytic"] - 2 * mlp_paper))
        row["ratio_to_twins_pair_analytic"] = row["sepvit_block_analytic"] / row["twins_pair_analytic"]
        if measure:
            row["ratio_to_swin_pair_fvcore"] = row["sepvit_block"] / row["swin_pair"]
            row["ratio_to_twins_pair_fvcore"] = row["sepvit_block"] / row["twins_pair"]
        else:
            row["ratio_to_swin_pair_fvcore"] = row["ratio_to_twins_pair_fvcore"] = None
        row["note"] = note
        rows.append(row)
    return rows


# ================================================================================== analytic sweeps (notebook)
ATTENTION_KINDS = ("global MSA", "Swin W-MSA", "Twins LSA", "Twins GSA", "SepViT DWA", "SepViT PWA",
                   "SepViT DSSA (DWA + PWA + proj)")


def _dssa_parts(height: int, width: int, dim: int, window: int) -> dict[str, Macs]:
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
        parts = _dssa_parts(height, width, dim, window)
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


def window_group_sweep(variant: str = "sepvit_tiny", stage: int = 1, img_size: int | None = None,
                       windows: Iterable[int] | None = None, groups: Iterable[int] = (1, 2, 3, 4)) -> list[dict[str, Any]]:
    """Analytic MACs of one SepViT block at a stage of `variant` (zero-based `stage`, default stage 2)
    against its window size M (DSSA block) and, at the variant's window, against the group size g of a GSA
    block (window g M). Split into DWA, PWA, projection and MLP (paper convention); padding included."""
    cfg, _ = build_config(variant, img_size)
    size = cfg.img_size if img_size is None else img_size
    h, w = cfg.stage_sizes(size, size)[stage]
    dim, ratio = cfg.embed_dims[stage], cfg.mlp_ratio
    rows = []

    def parts(window: int) -> dict[str, int]:
        unit = _dssa_parts(h, w, dim, window)
        return dict(dwa=unit["dwa"].paper, pwa=unit["pwa"].paper, proj=unit["proj"].paper,
                    mlp=mlp(h * w, dim, ratio).paper)

    for window in (windows if windows is not None else range(2, max(h, w) + 1)):
        p = parts(window)
        rows.append(dict(sweep="window", window=window, group=1, height=h, width=w, dim=dim, **p, block=sum(p.values())))
    for group in groups:
        window = group * cfg.window_size
        p = parts(window)
        rows.append(dict(sweep="group", window=window, group=group, height=h, width=w, dim=dim, **p, block=sum(p.values())))
    return rows


def pattern_comparison(variant: str = "sepvit_tiny", img_sizes: Iterable[int] = (224,),
                       patterns: Sequence[str] = BLOCK_PATTERNS) -> list[dict[str, Any]]:
    """Analytic whole-model MACs of `variant`'s backbone under each block pattern (same widths, depths, stem,
    CPE and head), per input size; paper convention and fvcore's."""
    rows = []
    for pattern in patterns:
        cfg, _ = build_config(variant, None, block_pattern=pattern)
        for size in img_sizes:
            built, _ = build_config(variant, size, block_pattern=pattern)
            macs = model_macs(built, size)
            rows.append(dict(variant=variant, block_pattern=pattern, img_size=size,
                             macs_analytic=macs.paper, macs_analytic_norms=macs.fvcore))
    return rows


# ================================================================================== output
def _gmacs(value: int | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value / 1e9:.{digits}f}"


def _mmacs(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:.1f}"


def format_model_table(rows: list[dict[str, Any]]) -> str:
    header = ["model", "px", "params (M)", "analytic", "analytic+norms", "fvcore", "norms", "fvcore-norms",
              "attn matmuls", "ptflops"]
    body = [[r["model"], str(r["img_size"]), f"{r['params'] / 1e6:.2f}", _gmacs(r["macs_analytic"]),
             _gmacs(r["macs_analytic_norms"]), _gmacs(r["macs_fvcore"]), _gmacs(r["fvcore_norms"]),
             _gmacs(r["macs_fvcore_no_norms"]), _gmacs(r["fvcore_attention_matmuls"]), _gmacs(r["macs_ptflops"])]
            for r in rows]
    notes = [f"note: {r['model']}: {r['note']}" for r in rows if r.get("note")]
    title = "GMACs (multiply-add = 1, 1e9), batch 1; counters: analytic (paper formulas), fvcore (+SDPA handle), ptflops (aten)"
    return "\n".join([title, _grid(header, body), *notes])


def format_block_table(rows: list[dict[str, Any]]) -> str:
    header = ["stage", "map", "C", "unit", "fvcore", "analytic", "analytic+norms", "/ Swin pair"]
    body = []
    for r in rows:
        for name in BLOCK_UNITS:
            if r[f"{name}_analytic"] is None:
                continue
            ratio = r[f"{name}_analytic"] / r["swin_pair_analytic"]
            body.append([str(r["stage"]), f"{r['height']}x{r['width']}", str(r["dim"]), BLOCK_UNIT_TITLES[name],
                         _mmacs(r[name]), _mmacs(r[f"{name}_analytic"]), _mmacs(r[f"{name}_analytic_norms"]),
                         f"{ratio:.3f}"])
    title = ("MMACs (multiply-add = 1, 1e6) of one block or pair, MLP included, batch 1; fvcore (+SDPA handle) "
             "counts LayerNorm, analytic (paper formulas) does not; ratio = analytic / analytic Swin pair")
    ratios = ["SepViT block / Swin pair (analytic | attention only | fvcore): "
              + "; ".join(f"stage {r['stage']}: {r['ratio_to_swin_pair_analytic']:.3f} | "
                          f"{r['ratio_to_swin_pair_attention_only']:.3f} | "
                          + (f"{r['ratio_to_swin_pair_fvcore']:.3f}" if r["ratio_to_swin_pair_fvcore"] else "-")
                          for r in rows)]
    notes = sorted({f"note: {r['note']}" for r in rows if r.get("note")})
    return "\n".join([title, _grid(header, body, left=(0, 1, 3)), *ratios, *notes])


def _grid(header: list[str], body: list[list[str]], left: Iterable[int] = (0,)) -> str:
    """Plain-text table: columns in `left` left-aligned (names), the others right-aligned (numbers)."""
    left = set(left)
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(row) for row in body)])


def to_csv(rows: list[dict[str, Any]]) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().rstrip("\n")


# ================================================================================== command line
def _model_kwargs(items: Sequence[str]) -> dict[str, Any]:
    """--model-kwargs: typed SepViTConfig fields (the workbench's one override parser)."""
    from workbench.fields import FieldError, parse_assignments

    try:
        return parse_assignments(SepViTConfig, items)
    except FieldError as error:
        raise UsageError(f"--model-kwargs {error}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="sepvit-complexity",
        description="MACs of SepViT and its peers three ways: the paper's formulas, fvcore and ptflops.",
        epilog=CONVENTIONS + """

Examples:
  sepvit-complexity --models sepvit_tiny swin_tiny_patch4_window7_224 twins_svt_small --img-size 224
  sepvit-complexity --models sepvit_tiny --model-kwargs block_pattern=swin --format json
  sepvit-complexity --blocks --variant sepvit_tiny --img-size 224 --format csv
Models: the workbench presets (sepvit_lite/tiny/small/base/micro_32/micro_64) and any timm model name;
timm models whose size is fixed at creation (Swin) are created for --img-size.""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--models", nargs="+", metavar="NAME", help="whole models to count")
    mode.add_argument("--blocks", action="store_true",
                      help="per-stage block comparison of --variant: SepViT block vs Swin pair, Twins pair, MSA block")
    parser.add_argument("--variant", default="sepvit_tiny", help="workbench preset for --blocks (default sepvit_tiny)")
    parser.add_argument("--img-size", type=int, default=None, metavar="PX",
                        help="square input side in pixels (default: each model's own size)")
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
    parser.add_argument("--model-kwargs", nargs="*", default=[], metavar="KEY=VALUE",
                        help="SepViTConfig fields for the workbench models (e.g. block_pattern=swin gsa=false)")
    parser.add_argument("--no-ptflops", action="store_true", help="skip the ptflops count (faster)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.img_size is not None and args.img_size < 1:
            raise UsageError(f"--img-size must be a positive number of pixels, got {args.img_size}")
        if args.blocks:
            if args.model_kwargs:
                raise UsageError("--model-kwargs applies to --models only")
            rows = block_comparison(args.variant, args.img_size)
            text = format_block_table(rows)
        else:
            kwargs = _model_kwargs(args.model_kwargs)
            rows = model_table(args.models, args.img_size, with_ptflops=not args.no_ptflops, **kwargs)
            text = format_model_table(rows)
    except UsageError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    if args.format == "json":
        text = json.dumps(rows, indent=1)
    elif args.format == "csv":
        text = to_csv(rows)
    try:
        print(text, flush=True)
    except BrokenPipeError:  # `... | head`: the reader left; not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
