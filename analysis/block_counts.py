"""One SepViT block against timm's Swin and Twins pairs and a global MSA block, per stage, in MACs; sweeps.

`block_comparison` counts every unit of `analysis.units.stage_units` at each stage's shape of a preset: ours as
the modules count themselves, timm's blocks by the formulas of `analysis.analytic_macs`, and fvcore on the built
modules. `window_group_sweep` and `pattern_comparison` vary one setting of a preset analytically.
"""
from __future__ import annotations

import difflib
from typing import Any, Iterable, Sequence

import torch

from sepvit.config import BLOCK_PATTERNS, PRESETS, SepViTConfig
from sepvit.macs import Macs
from workbench.cli import UsageError

from analysis.analytic_macs import dssa_parts, model_macs, mlp, msa, transformer_block, twins_gsa, window_msa
from analysis.counters import fvcore_count
from analysis.model_counts import build_config
from analysis.units import UNITS, stage_units


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
        for name in UNITS:
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
        unit = dssa_parts(h, w, dim, window)
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


