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
import os
import sys
from typing import Any, Callable, Iterable, Sequence

if __package__ in (None, ""):  # `python analysis/complexity.py`: make the repository root importable
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
from workbench.quiet import native_stderr_silenced

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
# The same models as other papers quote them (params_m None: not recorded here). A reader meets both numbers.
PUBLISHED_ELSEWHERE = [
    dict(model="twins_svt_small", params_m=None, gmacs=2.9, source="SepViT paper's comparison table"),
]

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


# ================================================================================== published values, explained
# How a whole-model count can be read off one measured row of `model_table` (GMACs = MACs / 1e9). Consecutive
# conventions differ by one term: norms (fvcore's LayerNorm), then the attention matmuls (q k^T and attn v);
# ptflops replaces the norms by bias adds.
COUNT_CONVENTIONS = {
    "fvcore": "fvcore (weights + attention matmuls + norms)",
    "paper": "paper convention (weights + attention matmuls)",
    "no_attention_matmuls": "without attention matmuls (weights only)",
    "ptflops": "ptflops (weights + bias adds)",
}


def convention_counts(row: dict[str, Any]) -> dict[str, int | None]:
    """The MACs of one `measure_model` row in every convention of COUNT_CONVENTIONS (None: not counted)."""
    no_norms = row["macs_fvcore_no_norms"]
    return dict(fvcore=row["macs_fvcore"], paper=no_norms,
                no_attention_matmuls=no_norms - row["fvcore_attention_matmuls"], ptflops=row.get("macs_ptflops"))


def published_precision(value: float) -> int:
    """Decimals a published figure is given to (2.9 -> 1, 4.53 -> 2, 15 -> 0)."""
    import decimal

    return max(0, -decimal.Decimal(str(value)).normalize().as_tuple().exponent)


def rounds_to(count_g: float, published: float) -> bool:
    """Whether a count (in G) rounds to the published figure at the precision it is published with."""
    half_step = 0.5 * 10 ** -published_precision(published)
    return abs(count_g - published) <= half_step + 1e-12


def published_comparison(rows: Sequence[dict[str, Any]], own: dict[str, dict[str, Any]] | None = None,
                         elsewhere: Sequence[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every published figure of the measured models (`rows` from `model_table`) beside the counts in each
    convention: which conventions round to it (`matches`), which is closest, and the two terms that separate
    the conventions (norms, attention matmuls), in GMACs. Defaults: PUBLISHED and PUBLISHED_ELSEWHERE."""
    own = PUBLISHED if own is None else own
    elsewhere = PUBLISHED_ELSEWHERE if elsewhere is None else elsewhere
    out = []
    for row in rows:
        name = row["model"]
        sources = ([dict(model=name, **own[name])] if name in own else []) + [e for e in elsewhere if e["model"] == name]
        counts = {key: (None if value is None else value / 1e9) for key, value in convention_counts(row).items()}
        for source in sources:
            published = source["gmacs"]
            known = {key: value for key, value in counts.items() if value is not None}
            out.append(dict(
                model=name, source=source["source"], published_gmacs=published, published_params_m=source["params_m"],
                params_m=row["params"] / 1e6, **{f"{key}_gmacs": value for key, value in counts.items()},
                matches=[key for key, value in known.items() if rounds_to(value, published)],
                closest=min(known, key=lambda key: abs(known[key] - published)),
                norms_gmacs=row["fvcore_norms"] / 1e9, attention_matmuls_gmacs=row["fvcore_attention_matmuls"] / 1e9,
            ))
    return out


def published_sentences(comparison: Sequence[dict[str, Any]]) -> list[str]:
    """One sentence per published figure, from the numbers of `published_comparison`: which convention it
    matches and how large the terms that separate the conventions are."""
    lines = []
    for c in comparison:
        counts = ", ".join(f"{key} {c[f'{key}_gmacs']:.3f}" for key in COUNT_CONVENTIONS if c[f"{key}_gmacs"] is not None)
        if c["matches"]:
            verdict = "is what " + ", ".join(COUNT_CONVENTIONS[k] for k in c["matches"]) + " round to"
        else:
            verdict = f"matches no convention at its precision (closest: {COUNT_CONVENTIONS[c['closest']]})"
        lines.append(f"{c['model']}: {c['published_gmacs']:g} G ({c['source']}) {verdict}; counted here (G): {counts}; "
                     f"the attention matmuls are {c['attention_matmuls_gmacs']:.3f} G, the norms {c['norms_gmacs']:.3f} G.")
    return lines


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


# ================================================================================== time against MACs (notebook 05)
# Operators whose work a MAC counter counts (fvcore's and ptflops' matmul/conv handles, and SDPA with our handle);
# every other operator (norms, softmax outside SDPA, GELU, copies, padding, rolls, adds) costs time and no MACs.
MAC_OPERATORS = frozenset({"mm", "bmm", "addmm", "baddbmm", "addbmm", "matmul", "linear", "einsum", "conv2d",
                           "convolution", "_convolution", "mkldnn_convolution", "scaled_dot_product_attention"})


def counted_by_macs(operator: str) -> bool:
    """Whether a profiler operator name (e.g. 'aten::addmm') is work that the MAC counts count."""
    name = operator.split("::")[-1]
    return name in MAC_OPERATORS or name.startswith(("_scaled_dot_product", "_mkl_linear"))


def follows_macs(time_ratio: float, macs_ratio: float, tolerance: float = 0.2) -> bool:
    """Time follows MACs when the time ratio to a reference is within a factor (1 + tolerance) of the MAC ratio."""
    excess = time_ratio / macs_ratio
    return 1 / (1 + tolerance) <= excess <= 1 + tolerance


def block_time_vs_macs(rows: Sequence[dict[str, Any]], tolerance: float = 0.2) -> list[dict[str, Any]]:
    """One row per stage and timed unit of `analysis.benchmark.benchmark_blocks` rows: median time [IQR], analytic
    MACs per image, time and MAC ratios to the run's reference, achieved GMAC/s, and whether time follows MACs."""
    out = []
    for row in rows:
        batch, reference = row["batch_size"], row["reference"]
        for name in UNITS:
            ms, macs = row.get(f"{name}_ms"), row.get(f"{name}_macs")
            if ms is None or macs is None:
                continue
            time_ratio, macs_ratio = row[f"{name}_time_ratio"], row[f"{name}_macs_ratio"]
            out.append(dict(
                group=f"stage {row['stage']}", stage=row["stage"], name=name, title=TITLES[name], reference=reference,
                ms=ms, ms_q1=row[f"{name}_ms_q1"], ms_q3=row[f"{name}_ms_q3"], macs=macs,
                gmacs_per_s=macs * batch / (ms / 1000) / 1e9,
                time_ratio=time_ratio, time_ratio_q1=row[f"{name}_time_ratio_q1"],
                time_ratio_q3=row[f"{name}_time_ratio_q3"], macs_ratio=macs_ratio,
                time_per_mac=None if time_ratio is None or not macs_ratio else time_ratio / macs_ratio,
                follows=None if time_ratio is None or not macs_ratio else follows_macs(time_ratio, macs_ratio, tolerance),
            ))
    return out


def model_time_vs_macs(rows: Sequence[dict[str, Any]], tolerance: float = 0.2) -> list[dict[str, Any]]:
    """One row per model of `analysis.benchmark.benchmark_models` rows (MACs counted): median time per batch
    [IQR], MACs per image, time and MAC ratios to the run's reference model, GMAC/s, and whether time follows."""
    by_name = {r["model"]: r for r in rows}
    out = []
    for r in rows:
        reference = by_name[r["reference"]]
        if r["macs"] is None or reference["macs"] is None:
            raise ValueError(f"{r['model']}: no MAC count (benchmark the models with count_macs=True)")
        macs_ratio = r["macs"] / reference["macs"]
        out.append(dict(
            group="models", stage=None, name=r["model"], title=r["model"], reference=r["reference"],
            ms=r["ms_per_batch"], ms_q1=r["ms_per_batch_q1"], ms_q3=r["ms_per_batch_q3"], macs=r["macs"],
            gmacs_per_s=r["macs"] * r["batch_size"] / (r["ms_per_batch"] / 1000) / 1e9,
            time_ratio=r["time_ratio"], time_ratio_q1=1 / r["speed_ratio_q3"], time_ratio_q3=1 / r["speed_ratio_q1"],
            macs_ratio=macs_ratio, time_per_mac=r["time_ratio"] / macs_ratio,
            follows=follows_macs(r["time_ratio"], macs_ratio, tolerance),
        ))
    return out


def timing_noise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """How noisy a run was: the inter-quartile range of each timed candidate relative to its median
    (rows from `block_time_vs_macs` or `model_time_vs_macs`)."""
    spreads = sorted(((r["ms_q3"] - r["ms_q1"]) / r["ms"], f"{r['group']} {r['name']}") for r in rows)
    if not spreads:
        raise ValueError("no timed rows")
    return dict(median_relative_iqr=spreads[len(spreads) // 2][0], max_relative_iqr=spreads[-1][0],
                noisiest=spreads[-1][1], candidates=len(spreads))


def op_profile(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1, top: int = 3,
               macs: int | None = None) -> dict[str, Any]:
    """Where the time of `fn()` goes on the CPU, by torch.profiler: self CPU time of every operator, per call,
    split into operators a MAC count counts (`counted_by_macs`) and the rest; the `top` slowest of the rest.
    `macs`: the MACs one call does (all images), for the rate the MAC operators reach (`mac_gmacs_per_s`).
    Profiled calls carry the profiler's overhead: read shares and rates side by side, not as absolute times."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(warmup):
        fn()
    with native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            fn()
    per_op: dict[str, float] = {}
    for event in prof.key_averages():
        if event.key.startswith("ProfilerStep"):
            continue
        per_op[event.key] = per_op.get(event.key, 0.0) + event.self_cpu_time_total / 1000 / repeats
    mac_ms = sum(ms for op, ms in per_op.items() if counted_by_macs(op))
    total_ms = sum(per_op.values())
    others = sorted(((op, ms) for op, ms in per_op.items() if not counted_by_macs(op)), key=lambda item: -item[1])
    return dict(total_ms=total_ms, mac_ms=mac_ms, other_ms=total_ms - mac_ms,
                mac_share=mac_ms / total_ms if total_ms else 0.0, top_other=others[:top],
                mac_gmacs_per_s=macs / (mac_ms / 1000) / 1e9 if macs is not None and mac_ms else None)


def profile_stage_units(variant: str = "sepvit_tiny", img_size: int | None = None, batch_size: int = 8, *,
                        units: Sequence[str] | None = None, stages: Sequence[int] | None = None,
                        repeats: int = 3) -> list[dict[str, Any]]:
    """`op_profile` of every unit of `analysis.units.stage_units` (forward, eval, inference mode) at each stage's
    shape of `variant`, as `analysis.benchmark.benchmark_blocks` times them (seed 0, a random batch), with the
    unit's analytic MACs and the rate its MAC operators reach (GMAC/s, under the profiler)."""
    cfg, _ = build_config(variant, img_size)
    chosen = list(UNITS) if units is None else list(units)
    rows = []
    for shape in block_comparison(variant, img_size, measure=False):
        stage, h, w, dim = shape["stage"], shape["height"], shape["width"], shape["dim"]
        if stages is not None and stage not in stages:
            continue
        torch.manual_seed(0)
        built = stage_units(cfg, stage - 1, h, w)
        x = torch.randn(batch_size, h, w, dim)
        for name in chosen:
            module, macs = built.get(name), shape.get(f"{name}_analytic")
            if module is None:
                continue
            module.eval()

            def forward(module=module, x=x):
                with torch.inference_mode():
                    module(x)

            found = op_profile(forward, repeats=repeats, macs=macs * batch_size)
            rows.append(dict(group=f"stage {stage}", stage=stage, name=name, title=TITLES[name], macs=macs,
                             batch_size=batch_size, **found))
    return rows


def time_sentences(rows: Sequence[dict[str, Any]], profiles: dict[tuple[str, str], dict[str, Any]] | None = None,
                   tolerance: float = 0.2) -> list[str]:
    """Does time follow MACs, and where not, why: one sentence per timed candidate other than the reference, from
    `block_time_vs_macs` / `model_time_vs_macs` rows and, where given, `op_profile` results keyed by (group, name)
    (e.g. from `profile_stage_units`).

    Where time does not follow MACs, the profiles split the gap: against the reference's profile scaled by the MAC
    ratio, how many ms more (or fewer) the candidate spends in MAC operators (they run at another rate) and in the
    operators no MAC count sees (norms, softmax, GELU, copies, padding, rolls, adds); the larger part in the
    direction of the gap is named. Where the profiled pass does not show the gap itself (beyond the tolerance, in
    the same direction), no reason is named and the sentence says so."""
    profiles = profiles or {}
    lines = []
    for r in rows:
        if r["name"] == r["reference"] or r["time_ratio"] is None or not r["macs_ratio"]:
            continue
        label = f"{r['group']}, {r['title']}" if r["group"] != "models" else r["title"]
        head = f"{label}: time {r['time_ratio']:.2f}x the reference's ({r['reference']}), MACs {r['macs_ratio']:.2f}x: "
        if r["follows"]:
            lines.append(head + f"time follows MACs (within {100 * tolerance:.0f} %).")
            continue
        slower = r["time_per_mac"] > 1
        head += f"{r['time_per_mac']:.2f}x the time its MACs predict ({'slower' if slower else 'faster'})"
        mine, ref = profiles.get((r["group"], r["name"])), profiles.get((r["group"], r["reference"]))
        if not (mine and ref):
            lines.append(head + ".")
            continue
        profiled = mine["total_ms"] / ref["total_ms"] / r["macs_ratio"]
        if follows_macs(profiled, 1.0, tolerance) or (profiled > 1) != slower:
            lines.append(head + f"; the profiled pass does not reproduce the gap (there it takes {profiled:.2f}x the "
                                "time its MACs predict): no reason is named.")
            continue
        mac_part = mine["mac_ms"] - r["macs_ratio"] * ref["mac_ms"]
        other_part = mine["other_ms"] - r["macs_ratio"] * ref["other_ms"]
        rate = (f", at {mine['mac_gmacs_per_s']:.0f} vs {ref['mac_gmacs_per_s']:.0f} GMAC/s"
                if mine.get("mac_gmacs_per_s") and ref.get("mac_gmacs_per_s") else "")
        top = ", ".join(f"{op} {ms:.1f} ms" for op, ms in mine["top_other"])
        sign = 1 if slower else -1
        mostly = "its MAC operators" if sign * mac_part >= sign * other_part else "the operators outside the MAC count"
        lines.append(head + f". Profiled, against the reference scaled by MACs: MAC operators {mac_part:+.1f} ms{rate}; "
                            f"other operators {other_part:+.1f} ms ({100 * (1 - mine['mac_share']):.0f} % of its operator "
                            f"time vs {100 * (1 - ref['mac_share']):.0f} %; largest: {top}): mostly {mostly}.")
    return lines


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
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
