"""What the benchmark times, and its tables: SepViT blocks against timm's Swin and Twins pairs, whole models.

Blocks: every unit of `analysis.units.stage_units` at each stage's shape of a preset, on a (batch, H, W, C) map;
forward, or (train) forward + backward of sum(output), the input's gradient included. Models: whole timm /
workbench models on one random batch; forward, or (train) the optimisation step of `Settings.step` (the caller's
training settings, e.g. the runner's): forward, label-smoothed cross-entropy, backward, clipping, timm's optimiser.
Both are timed interleaved by `analysis.timing` (its conventions: rotated rounds, medians [IQR], same-round ratios).
MACs are never counted on a timed module: blocks use the analytic formulas (`analysis.block_counts`, the paper's
convention: weights + attention matmuls, multiply-add = 1, per image); models use fvcore on a deep copy (attention
included, multiply-add = 1, per image), plus the analytic count for workbench models.
"""
from __future__ import annotations

import copy
import difflib
import json
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import timm
import torch
from torch import nn

import sepvit  # noqa: F401  (registers sepvit_* with timm)
from sepvit.config import PRESETS, SepViTConfig
from workbench.cli import UsageError
from workbench.fields import FieldError, parse_assignments

from analysis import counters
from analysis.analytic_macs import model_macs
from analysis.complexity_tables import to_csv
from analysis.block_counts import block_comparison
from analysis.timing import (Settings, backward_step, forward_step, prepare, round_ratios, spread, time_interleaved,
                             training_step)
from analysis.units import TITLES, UNITS, stage_units

BLOCK_MACS = "analytic (paper convention: weights + attention matmuls), multiply-add = 1, per image"
MODEL_MACS = "fvcore on a deep copy (attention included), multiply-add = 1, per image"


# ================================================================================== blocks
def variant_config(variant: str, img_size: int):
    """The SepViTConfig of preset `variant` built for `img_size` (at its own size if the config refuses it)."""
    if variant not in PRESETS:
        close = difflib.get_close_matches(variant, list(PRESETS), n=3, cutoff=0.4)
        raise UsageError(f"unknown variant {variant!r}: use one of {', '.join(PRESETS)}"
                         + (f" (closest: {', '.join(close)})" if close else ""))
    cfg = SepViTConfig.preset(variant)
    try:
        return cfg.replace(img_size=img_size)
    except ValueError:
        return cfg


def benchmark_blocks(variant: str, settings: Settings, units: Sequence[str] = UNITS,
                     stages: Sequence[int] | None = None, reference: str = "swin_pair", *,
                     clock: Callable[[], float] = time.perf_counter,
                     log: Callable[[str], None] = lambda message: None) -> list[dict[str, Any]]:
    """Per stage of `variant` (1-based `stages`, default all): each unit of `analysis.units.stage_units` timed
    interleaved on a (batch, H, W, C) map; one row per stage with medians, IQRs, analytic MACs and ratios."""
    if reference not in units:
        raise UsageError(f"--reference {reference} is not among the timed units ({', '.join(units)})")
    cfg = variant_config(variant, settings.img_size)
    shapes = block_comparison(variant, settings.img_size, measure=False)  # stage shapes + analytic MACs
    wanted = stages or [row["stage"] for row in shapes]
    unknown = sorted(set(wanted) - {row["stage"] for row in shapes})
    if unknown:
        raise UsageError(f"--stages {unknown}: {variant} has stages 1-{len(shapes)}")
    rows = []
    for shape in shapes:
        stage = shape["stage"]
        if stage not in wanted:
            continue
        h, w, dim = shape["height"], shape["width"], shape["dim"]
        torch.manual_seed(0)
        built = stage_units(cfg, stage - 1, h, w)
        x = torch.randn(settings.batch_size, h, w, dim, device=settings.device)
        steps = {}
        for name in units:
            if built.get(name) is None:
                continue
            module = built[name]
            timed = prepare(module, settings, f"stage {stage} {name}")
            steps[name] = (backward_step(timed, module, x, settings) if settings.train
                           else forward_step(timed, x, settings))
        log(f"stage {stage}: {h}x{w}x{dim}, timing {', '.join(steps)}")
        timings = time_interleaved(steps, settings.rounds, settings.warmup, clock=clock, sync=settings.sync())
        # a reference absent at this stage (e.g. sepvit_gsa_block at stage 1) leaves the stage without ratios
        ratios = round_ratios(timings.seconds, reference) if reference in timings.seconds else {}
        row: dict[str, Any] = dict(variant=variant, stage=stage, height=h, width=w, dim=dim, heads=shape["heads"],
                                   window=shape["window"], reference=reference, macs_convention=BLOCK_MACS)
        ref_macs = shape[f"{reference}_analytic"]
        for name in UNITS:  # every unit's keys, None where not timed: one schema for json/csv
            measured = name in timings.seconds
            ms = spread([1000 * s for s in timings.seconds[name]]) if measured else None
            macs = shape.get(f"{name}_analytic")
            row[f"{name}_ms"] = ms.median if ms else None
            row[f"{name}_ms_q1"] = ms.q1 if ms else None
            row[f"{name}_ms_q3"] = ms.q3 if ms else None
            ratio = spread(ratios[name]) if measured and ratios else None
            row[f"{name}_time_ratio"] = ratio.median if ratio else None
            row[f"{name}_time_ratio_q1"] = ratio.q1 if ratio else None
            row[f"{name}_time_ratio_q3"] = ratio.q3 if ratio else None
            row[f"{name}_time_ratio_rounds"] = list(ratios[name]) if measured and ratios else None
            row[f"{name}_macs"] = macs if measured else None
            row[f"{name}_macs_ratio"] = macs / ref_macs if measured and ratios and macs is not None and ref_macs else None
        row.update(settings.describe())
        rows.append(row)
    return rows


# ================================================================================== whole models
@dataclass
class ModelCandidate:
    """One model to time, with the counts made before timing (on copies)."""

    name: str
    module: nn.Module
    num_classes: int
    in_chans: int = 3
    params: int = 0
    macs: int | None = None
    macs_analytic: int | None = None
    notes: list[str] = field(default_factory=list)


def parse_model_spec(spec: str) -> tuple[str, list[str]]:
    """'sepvit_tiny:block_pattern=swin:gsa=false' -> ('sepvit_tiny', ['block_pattern=swin', 'gsa=false'])."""
    name, *pairs = spec.split(":")
    return name.strip(), [p for p in pairs if p.strip()]


def _check_model_name(name: str) -> None:
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=4, cutoff=0.6)
        raise UsageError(f"unknown model {name!r}" + (f"; closest: {', '.join(close)}" if close
                                                       else "; see timm.list_models() or the sepvit_* presets"))


def build_candidate(spec: str, img_size: int, common_kwargs: Sequence[str] = (), *, count_macs: bool = True,
                    log: Callable[[str], None] = lambda message: None) -> ModelCandidate:
    """Build `spec` (NAME[:field=value]...) for `img_size`; count MACs on deep copies, never on the module."""
    name, pairs = parse_model_spec(spec)
    _check_model_name(name)
    ours = name in PRESETS
    pairs = [*common_kwargs, *pairs] if ours else pairs
    if pairs and not ours:
        raise UsageError(f"{spec}: field=value overrides apply to the workbench's sepvit_* models only")
    try:
        kwargs = parse_assignments(SepViTConfig, pairs) if ours else {}
    except FieldError as error:
        raise UsageError(f"{spec}: {error}") from None
    torch.manual_seed(0)
    try:
        if ours:
            cfg = SepViTConfig.preset(name, **kwargs).replace(img_size=img_size)
            module = timm.create_model(name, **{**kwargs, "img_size": img_size})
        else:
            try:
                module = timm.create_model(name, img_size=img_size)
            except TypeError:  # the model takes any size at run time and no img_size argument
                module = timm.create_model(name)
    except (TypeError, ValueError, RuntimeError, AssertionError) as error:
        raise UsageError(f"{spec} cannot be built for {img_size} px: {' '.join(str(error).split())}") from None
    module.eval()
    candidate = ModelCandidate(spec, module, int(getattr(module, "num_classes", 1000)),
                               int(getattr(module, "in_chans", 3) or 3),
                               params=sum(p.numel() for p in module.parameters()))
    if count_macs:
        log(f"{spec}: counting MACs (fvcore, on a deep copy)")
        candidate.macs = counters.fvcore_count(copy.deepcopy(module),
                                               torch.zeros(1, candidate.in_chans, img_size, img_size)).total
        if ours:
            candidate.macs_analytic = int(model_macs(cfg, img_size).paper)
    return candidate


def benchmark_models(candidates: Sequence[ModelCandidate], settings: Settings, reference: str | None = None, *,
                     clock: Callable[[], float] = time.perf_counter,
                     log: Callable[[str], None] = lambda message: None) -> list[dict[str, Any]]:
    """Whole models timed interleaved on one random batch; one row per model. `reference`: default the first."""
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise UsageError(f"each model may be named once (got {', '.join(names)})")
    reference = reference or names[0]
    if reference not in names:
        raise UsageError(f"--reference {reference} is not among --models ({', '.join(names)})")
    b, s = settings.batch_size, settings.img_size
    steps = {}
    torch.manual_seed(0)
    for c in candidates:
        x = torch.randn(b, c.in_chans, s, s, device=settings.device)
        if settings.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        timed = prepare(c.module, settings, c.name)
        if settings.train:
            y = torch.randint(0, c.num_classes, (b,), device=settings.device)
            steps[c.name] = training_step(timed, c.module, x, y, settings)
        else:
            steps[c.name] = forward_step(timed, x, settings)
    log(f"timing {', '.join(names)}: {settings.rounds} rounds after {settings.warmup} warm-up rounds")
    timings = time_interleaved(steps, settings.rounds, settings.warmup, clock=clock, sync=settings.sync())
    ratios = round_ratios(timings.seconds, reference)
    rows = []
    for c in candidates:
        seconds = timings.seconds[c.name]
        img_s = spread([b / t for t in seconds])
        ms = spread([1000 * t for t in seconds])
        speed = spread([1 / r for r in ratios[c.name]])
        rows.append(dict(
            model=c.name, img_per_s=img_s.median, img_per_s_q1=img_s.q1, img_per_s_q3=img_s.q3,
            ms_per_batch=ms.median, ms_per_batch_q1=ms.q1, ms_per_batch_q3=ms.q3, reference=reference,
            time_ratio=statistics.median(ratios[c.name]), time_ratio_rounds=list(ratios[c.name]),
            speed_ratio=speed.median, speed_ratio_q1=speed.q1, speed_ratio_q3=speed.q3,
            params=c.params, macs=c.macs, macs_analytic=c.macs_analytic,
            macs_convention=MODEL_MACS if c.macs is not None else None, **settings.describe(),
        ))
    return rows


# ================================================================================== tables
def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ratio_iqr(row: dict[str, Any], key: str) -> str:
    if row.get(f"{key}_q1") is None:
        return "-"
    return f"[{row[f'{key}_q1']:.2f}, {row[f'{key}_q3']:.2f}]"


def _header(rows: list[dict[str, Any]], what: str) -> str:
    r = rows[0]
    return (f"{what}, {r['mode']}, batch {r['batch_size']}, {r['img_size']} px, {r['device']}, {r['threads']} threads, "
            f"{r['dtype']}, attention {r['attention']}{', compiled' if r['compile'] else ''}"
            f"{', channels-last' if r['channels_last'] else ''}; {r['rounds']} interleaved rounds (order rotated) after "
            f"{r['warmup']} warm-up; median [IQR]; ratios: median over rounds of the same-round ratio to {r['reference']}")


def format_block_table(rows: list[dict[str, Any]]) -> str:
    ref = rows[0]["reference"]
    lines = [_header(rows, f"blocks of {rows[0]['variant']}"),
             f"MACs: {BLOCK_MACS}",
             f"{'stage':<6}{'map':<13}{'unit':<34}{'ms':>9} {'IQR':>19} {'MMACs':>9} {'time/' + ref[:10]:>16} "
             f"{'IQR':>14} {'MACs/' + ref[:10]:>16}"]
    for row in rows:
        shape = f"{row['height']}x{row['width']}x{row['dim']}"
        for name in UNITS:
            if row.get(f"{name}_ms") is None:
                continue
            iqr = f"[{_fmt(row[f'{name}_ms_q1'])}, {_fmt(row[f'{name}_ms_q3'])}]"
            macs = row[f"{name}_macs"]
            lines.append(f"{row['stage']:<6}{shape:<13}{TITLES.get(name, name):<34}{row[f'{name}_ms']:9.2f} {iqr:>19} "
                         f"{_fmt(macs and macs / 1e6, 1):>9} {_fmt(row[f'{name}_time_ratio']):>16} "
                         f"{_ratio_iqr(row, f'{name}_time_ratio'):>14} {_fmt(row[f'{name}_macs_ratio']):>16}")
    return "\n".join(lines)


def format_model_table(rows: list[dict[str, Any]]) -> str:
    ref = rows[0]["reference"]
    lines = [_header(rows, "whole models"),
             f"MACs: {MODEL_MACS}; analytic: the paper's formulas (workbench models)",
             f"{'model':<40}{'img/s':>8} {'IQR':>17} {'ms/batch':>9} {'speed vs ' + ref[:16]:>26} {'IQR':>14} "
             f"{'GMACs':>7} {'analytic':>9} {'params (M)':>11}"]
    for r in rows:
        iqr = f"[{r['img_per_s_q1']:.1f}, {r['img_per_s_q3']:.1f}]"
        lines.append(f"{r['model']:<40}{r['img_per_s']:8.1f} {iqr:>17} {r['ms_per_batch']:9.1f} "
                     f"{r['speed_ratio']:26.2f} {_ratio_iqr(r, 'speed_ratio'):>14} "
                     f"{_fmt(r['macs'] and r['macs'] / 1e9, 3):>7} "
                     f"{_fmt(r['macs_analytic'] and r['macs_analytic'] / 1e9, 3):>9} {r['params'] / 1e6:11.2f}")
    return "\n".join(lines)


def render(rows: list[dict[str, Any]], kind: str, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=1)
    if fmt == "csv":
        return to_csv(rows)
    return format_block_table(rows) if kind == "blocks" else format_model_table(rows)

