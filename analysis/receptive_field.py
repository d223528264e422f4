"""Effective receptive field (ERF) of the compared units: the receptive-field half of the paper's claim.

The paper claims one SepViT block costs about half of a Swin (W-MSA + SW-MSA) or Twins (LSA + GSA) pair of
blocks "with a comparable receptive field". `analysis.complexity` checks the cost; this module measures
the receptive field, in the sense of Luo et al. (2016, "Understanding the effective receptive field"):

    ERF(p) = mean over inputs x of  sum_c | d( sum_c' y[q, c'] ) / d x[p, c] |,   normalised to sum 1

for a unit y = f(x) mapping a channels-last map (B, H, W, C) to the same shape, one output position q (the
query) and every input position p. Choices (each a parameter):
  - query: the map centre (H // 2, W // 2); on an even side that is the lower/right one of the two middle
    pixels. At SepViT-T's stage shapes at 224 (56/28/14/7, window 7) and the nano presets' (32/16/8/4,
    window 4) it is the top-left pixel of a window, except at the last stage (one window, its middle).
  - output: summed over channels before the gradient; input: |gradient| summed over channels.
  - inputs: the |gradient| maps are averaged over inputs first, then normalised (inputs with larger
    gradients weigh more, as in Luo et al.); units are per-sample (no batch statistics), so one backward
    pass over a batch gives every sample's gradient.
  - identity: by default the gradient includes the units' shortcut path, so the query pixel itself holds
    a large share (`self_share`); `identity=False` takes the gradient of y[q] - x[q] instead, i.e. every
    path except the one that skips all blocks.
  - dtype: float32 by default; float64 (`dtype=torch.float64`, `--dtype float64`) gave the same SepViT-T
    table at 224 within 1e-6 in every number and takes about 3x as long. Swin's shift mask adds -100 to
    masked logits, whose weight exp(-100) is tiny but not zero: `reach` counts only gradient above 1e-12
    of the largest, in either dtype.
  - init: "authors" re-initialises every unit with the authors' (and timm's) init, Linear trunc-normal
    std 0.02, bias 0, LayerNorm 1/0 (`sepvit.layers.trunc_normal_init`), so that every unit starts alike;
    "as_built" keeps PyTorch's default init of stand-alone layers.
Numbers per unit (`erf_stats`):
  radius_90       the smallest radius (feature-map pixels) around the query holding >= 90 % of the mass
  mean_distance   mass-weighted mean distance from the query
  outside_window  share of mass outside the query's own window (the stage's base window M, placed as
                  the model places it: from the top-left, the map zero-padded at the bottom/right; a map
                  that fits in one window is one window)
  self_share      share at the query pixel itself
  reach           share of input positions with any gradient (> 1e-12 of the largest): the theoretical
                  receptive field, as opposed to the effective one
Distances are Chebyshev by default (max(|di|, |dj|): a radius r is a (2r+1) x (2r+1) square, the shape
of a window); `metric="euclidean"` is the alternative.

What the numbers mean at init: with random weights (std 0.02) attention is almost uniform and every
branch is small next to the shortcut, so the ERF is the shortcut spike at the query plus a faint,
architecture-shaped floor: it shows where gradient *can* flow (window, shifted window, same position in
every window for PWA, sub-sampled cells for Twins' GSA, everywhere for MSA), with weights that come
from the init, not from anything learnt. After training, the ERF also shows what the unit uses; for
that, `model_erf_table` captures a trained model's real stage inputs on real images.

Command line: `python analysis/receptive_field.py --variant sepvit_tiny --img-size 224 --format table`,
and `python experiments/trained_erf.py RUN/last.pth ...` for trained models' blocks on their data.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

if __package__ in (None, ""):  # `python analysis/receptive_field.py`: make the repository root importable
    import os

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import torch
from torch import nn

from analysis.units import TITLES, UNITS, StageBlocks, stage_units
from sepvit.config import PRESETS, SepViTConfig
from sepvit.layers import trunc_normal_init, window_geometry
from workbench.cli import OneLineParser, fail

METRICS = ("chebyshev", "euclidean")
INITS = ("authors", "as_built")
DTYPES = {"float64": torch.float64, "float32": torch.float32}
REACH_THRESHOLD = 1e-12  # relative to the largest pixel: below it a position counts as unreached
STAT_COLUMNS = ("radius_90", "mean_distance", "outside_window", "self_share", "reach")


# ================================================================================== the ERF map
def centre(height: int, width: int) -> tuple[int, int]:
    """The default query: (H // 2, W // 2), the lower/right middle pixel on an even side."""
    return height // 2, width // 2


def erf_map(unit: nn.Module, inputs: torch.Tensor, query: tuple[int, int] | None = None, *,
            identity: bool = True, chunk: int = 4) -> torch.Tensor:
    """The ERF of `unit` at output position `query` (default: `centre`): an (H, W) float64 tensor of
    input-position shares summing to 1 (see the module docstring for the definition).

    inputs: (B, H, W, C) maps in the dtype of the unit's parameters; processed `chunk` at a time.
    identity=False: gradient of y[q] - x[q] (every path except the all-shortcut one).
    """
    if inputs.ndim != 4:
        raise ValueError(f"inputs must be channels-last maps (B, H, W, C), got shape {tuple(inputs.shape)}")
    _, height, width, _ = inputs.shape
    qi, qj = centre(height, width) if query is None else query
    if not (0 <= qi < height and 0 <= qj < width):
        raise ValueError(f"query {(qi, qj)} lies outside the {height}x{width} map")
    unit.eval()
    total = torch.zeros(height, width, dtype=torch.float64)
    for part in inputs.split(max(1, int(chunk))):
        x = part.detach().clone().requires_grad_(True)
        y = unit(x)
        if y.shape != x.shape:
            raise ValueError(f"the unit maps {tuple(x.shape)} to {tuple(y.shape)}: it must keep the map's shape")
        out = y[:, qi, qj, :]
        if not identity:
            out = out - x[:, qi, qj, :]
        (grad,) = torch.autograd.grad(out.sum(), x)
        total += grad.abs().sum(dim=-1).sum(dim=0).to(torch.float64)
    mass = total.sum()
    if not torch.isfinite(mass) or mass <= 0:
        raise ValueError("no finite gradient reaches the input from the query: the ERF is undefined")
    return total / mass


def random_inputs(count: int, height: int, width: int, dim: int, *, seed: int = 0,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`count` i.i.d. standard-normal maps (B, H, W, C): the scale of a LayerNorm'd patch embedding."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, height, width, dim, generator=generator, dtype=torch.float64).to(dtype)


# ================================================================================== numbers per map
def own_window(height: int, width: int, window: int, query: tuple[int, int]) -> tuple[slice, slice]:
    """Rows and columns of the base window that holds `query`, placed as the model places windows
    (`sepvit.layers.window_geometry`: from the top-left, padding at the bottom/right; a map that fits in
    one window is one window)."""
    wh, ww, _, _ = window_geometry(height, width, window)
    top, left = (query[0] // wh) * wh, (query[1] // ww) * ww
    return slice(top, min(top + wh, height)), slice(left, min(left + ww, width))


def distances(height: int, width: int, query: tuple[int, int], metric: str = "chebyshev") -> np.ndarray:
    """(H, W) distance of every position from `query`, in feature-map pixels."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
    di = np.abs(np.arange(height) - query[0])[:, None].astype(np.float64)
    dj = np.abs(np.arange(width) - query[1])[None, :].astype(np.float64)
    if metric == "chebyshev":
        return np.maximum(di, dj)
    return np.sqrt(di**2 + dj**2)


def radius(mass: np.ndarray, query: tuple[int, int], share: float = 0.9, metric: str = "chebyshev") -> float:
    """The smallest distance r such that positions within r of the query hold >= `share` of the mass."""
    if not 0.0 < share <= 1.0:
        raise ValueError(f"share must be in (0, 1], got {share}")
    dist = distances(*mass.shape, query, metric).ravel()
    order = np.argsort(dist, kind="stable")
    sorted_dist, cumulative = dist[order], np.cumsum(mass.ravel()[order])
    # positions at the same distance enter together: read the cumulative mass at the last of each distance
    last_of_each = np.r_[sorted_dist[1:] != sorted_dist[:-1], True]
    candidates, reached = sorted_dist[last_of_each], cumulative[last_of_each]
    index = int(np.searchsorted(reached, share * reached[-1] * (1 - 1e-12)))
    return float(candidates[min(index, len(candidates) - 1)])


def erf_stats(mass: np.ndarray | torch.Tensor, query: tuple[int, int], window: int,
              metric: str = "chebyshev", share: float = 0.9) -> dict[str, float]:
    """radius_90, mean_distance, outside_window, self_share and reach of one ERF map (module docstring)."""
    mass = np.asarray(mass, dtype=np.float64)
    mass = mass / mass.sum()
    height, width = mass.shape
    rows, cols = own_window(height, width, window, query)
    outside = np.ones_like(mass, dtype=bool)
    outside[rows, cols] = False
    return dict(
        radius_90=radius(mass, query, share, metric),
        mean_distance=float((mass * distances(height, width, query, metric)).sum()),
        outside_window=float(mass[outside].sum()),
        self_share=float(mass[query]),
        reach=float((mass > REACH_THRESHOLD * mass.max()).mean()),
    )


# ================================================================================== (a) units at a stage's shape
def initialise(unit: nn.Module, init: str = "authors") -> nn.Module:
    """Re-initialise a unit: "authors" = trunc-normal(0.02) Linear, LayerNorm 1/0 (also timm's model init
    for Swin, Twins and ViT); "as_built" = leave PyTorch's per-layer defaults."""
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}: use one of {', '.join(INITS)}")
    if init == "authors":
        unit.apply(trunc_normal_init)
    return unit


@dataclass
class ERFResult:
    """One ERF: where it was measured, the normalised map, and its numbers."""

    stage: int  # one-based
    unit: str
    height: int
    width: int
    window: int
    query: tuple[int, int]
    inputs: int
    mass: np.ndarray
    stats: dict[str, float]
    macs: int | None = None  # analytic MACs, the paper's convention (multiply-add = 1)
    blocks: str = ""

    def row(self) -> dict[str, Any]:
        """A flat table row (no map)."""
        return dict(stage=self.stage, unit=self.unit, blocks=self.blocks, height=self.height, width=self.width,
                    window=self.window, query=list(self.query), inputs=self.inputs, **self.stats, macs=self.macs)


def _stage_shapes(cfg: SepViTConfig, img_size: int) -> list[tuple[int, int]]:
    return [(cfg.stage_resolution(s, img_size),) * 2 for s in range(cfg.num_stages)]


def _analytic_unit_macs(variant: str, img_size: int) -> dict[tuple[int, str], int]:
    """(stage, unit) -> analytic MACs (paper convention) from `analysis.complexity.block_comparison`."""
    from analysis.complexity import block_comparison

    out = {}
    for row in block_comparison(variant, img_size, measure=False):
        for name in UNITS:
            if row.get(f"{name}_analytic") is not None:
                out[(row["stage"], name)] = int(row[f"{name}_analytic"])
    return out


def unit_erf_table(variant: str = "sepvit_tiny", img_size: int | None = None, *, units: Sequence[str] | None = None,
                   stages: Sequence[int] | None = None, inputs: int = 8, seed: int = 0, init: str = "authors",
                   identity: bool = True, metric: str = "chebyshev", dtype: torch.dtype = torch.float32,
                   with_macs: bool = True) -> list[ERFResult]:
    """ERF of every unit of `analysis.units.stage_units` at each stage's shape of `variant` at `img_size`,
    at init (`init`, weights seeded by `seed`), on `inputs` standard-normal maps.

    stages: one-based stage numbers (default all); units: names from `analysis.units.UNITS` (default all).
    """
    cfg = _config(variant, img_size)
    size = cfg.img_size
    chosen_units = _check_units(units)
    shapes = _stage_shapes(cfg, size)
    chosen_stages = _check_stages(stages, len(shapes))
    macs = _analytic_unit_macs(variant, size) if with_macs else {}
    results = []
    for stage in chosen_stages:
        height, width = shapes[stage - 1]
        dim = cfg.embed_dims[stage - 1]
        torch.manual_seed(seed)
        built = stage_units(cfg, stage - 1, height, width)
        x = random_inputs(inputs, height, width, dim, seed=seed + stage, dtype=dtype)
        query = centre(height, width)
        for name in chosen_units:
            module = built[name]
            if module is None:
                continue
            torch.manual_seed(seed)
            module = initialise(module, init).to(dtype)
            mass = erf_map(module, x, query, identity=identity).numpy()
            results.append(ERFResult(stage, name, height, width, cfg.window_size, query, inputs, mass,
                                     erf_stats(mass, query, cfg.window_size, metric), macs.get((stage, name))))
    return results


# ================================================================================== (b) blocks of a trained model
def capture_block_inputs(model: nn.Module, images: torch.Tensor, keys: Iterable[tuple[int, int]],
                         batch: int = 64) -> dict[tuple[int, int], torch.Tensor]:
    """The real inputs (B, H, W, C) of blocks (stage, index), zero-based, on `images`, via forward pre-hooks."""
    keys = list(keys)
    captured: dict[tuple[int, int], list[torch.Tensor]] = {key: [] for key in keys}
    handles = []
    for stage, index in keys:
        block = model.stages[stage].blocks[index]
        handles.append(block.register_forward_pre_hook(
            lambda _module, args, key=(stage, index): captured[key].append(args[0].detach().clone())))
    try:
        model.eval()
        with torch.no_grad():
            for part in images.split(batch):
                model(part)
    finally:
        for handle in handles:
            handle.remove()
    return {key: torch.cat(maps) for key, maps in captured.items()}


@dataclass
class TrainedUnit:
    """Consecutive blocks of one stage of a model, measured from the input of the first."""

    stage: int  # zero-based
    name: str
    indices: tuple[int, ...]
    module: nn.Module


def model_units(model: nn.Module, with_cpe: bool = False) -> list[TrainedUnit]:
    """The compared units inside each stage of a SepViT-family model (any block_pattern):
    sepvit: block 0 ("sepvit_block") and, in grouped stages, block 1 ("sepvit_gsa_block");
    swin / twins: blocks 0 and 1 ("ours_swin_pair", "ours_twins_pair"; only block 0 in a stage of depth 1,
    named "..._block0"); msa: block 0 ("ours_msa_block").
    with_cpe: run the stage's CPE after block 0 as the stage does (default off: blocks only, like
    `analysis.units`)."""
    cfg: SepViTConfig = model.config
    units = []
    for s, stage in enumerate(model.stages):
        depth = len(stage.blocks)
        if cfg.block_pattern == "sepvit":
            plan = [("sepvit_block", (0,))]
            if s in cfg.gsa_stages and depth > 1 and cfg.block_window_sizes(s)[1] != cfg.window_size:
                plan.append(("sepvit_gsa_block", (1,)))
        elif cfg.block_pattern == "msa":
            plan = [("ours_msa_block", (0,))]
        else:
            plan = [(f"ours_{cfg.block_pattern}_pair", (0, 1)) if depth > 1
                    else (f"ours_{cfg.block_pattern}_block0", (0,))]
        for name, indices in plan:
            modules = []
            for i in indices:
                modules.append(stage.blocks[i])
                if i == 0 and with_cpe and stage.cpe is not None and i != indices[-1]:
                    modules.append(stage.cpe)
            units.append(TrainedUnit(s, name, indices, StageBlocks(*modules)))
    return units


def model_erf_table(model: nn.Module, images: torch.Tensor, *, identity: bool = True, metric: str = "chebyshev",
                    dtype: torch.dtype = torch.float32, with_cpe: bool = False,
                    stages: Sequence[int] | None = None) -> list[ERFResult]:
    """ERF of the units of `model_units(model)` on the real inputs those blocks receive from `images`
    (B, C, H, W, normalised as in training); MACs from `analysis.complexity.block_macs` of the blocks run."""
    from analysis.complexity import block_macs

    cfg: SepViTConfig = model.config
    chosen_stages = _check_stages(stages, cfg.num_stages)
    units = [u for u in model_units(model, with_cpe) if u.stage + 1 in chosen_stages]
    inputs = capture_block_inputs(model, images, {(u.stage, u.indices[0]) for u in units})
    results = []
    for unit in units:
        x = inputs[(unit.stage, unit.indices[0])].to(dtype)
        _, height, width, _ = x.shape
        query = centre(height, width)
        mass = erf_map(copy.deepcopy(unit.module).to(dtype), x, query, identity=identity).numpy()
        macs = sum(block_macs(cfg, unit.stage, i, height, width).paper for i in unit.indices)
        blocks = "+".join(str(i) for i in unit.indices) + (" (CPE after 0)" if with_cpe and len(unit.indices) > 1 else "")
        results.append(ERFResult(unit.stage + 1, unit.name, height, width, cfg.window_size, query, len(x), mass,
                                 erf_stats(mass, query, cfg.window_size, metric), macs, blocks))
    return results


# ================================================================================== plotting
def plot_erf(results: Sequence[ERFResult], *, vmin: float = 1e-6, vmax: float = 1.0, columns: str = "stage",
             title: str | None = None, cell: float = 1.9):
    """A matplotlib figure of ERF maps: one row per unit, one column per stage (or `columns="unit"` to
    swap), all panels on ONE logarithmic colour scale [vmin, vmax] of the share of gradient mass per
    input pixel, with one colour bar. Shares below vmin show in the darkest colour, exact zeros in white.
    The query is marked with a cross and its own window with a box."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Rectangle

    if not results:
        raise ValueError("no ERF results to plot")
    row_key, col_key = ("unit", "stage") if columns == "stage" else ("stage", "unit")
    row_names = list(dict.fromkeys(getattr(r, row_key) for r in results))
    col_names = list(dict.fromkeys(getattr(r, col_key) for r in results))
    fig, axes = plt.subplots(len(row_names), len(col_names), figsize=(cell * len(col_names) + 1.2,
                                                                      cell * len(row_names) + 0.6),
                             squeeze=False, layout="constrained")
    base = plt.get_cmap("magma")
    cmap = base.with_extremes(bad="white", under=base(0.0))
    norm = LogNorm(vmin=vmin, vmax=vmax, clip=False)
    image = None
    for ax in axes.ravel():
        ax.set_axis_off()
    for r in results:
        ax = axes[row_names.index(getattr(r, row_key)), col_names.index(getattr(r, col_key))]
        ax.set_axis_on()
        shown = np.ma.masked_where(r.mass <= 0, r.mass)
        image = ax.imshow(shown, cmap=cmap, norm=norm, interpolation="nearest")
        rows, cols = own_window(r.height, r.width, r.window, r.query)
        ax.add_patch(Rectangle((cols.start - 0.5, rows.start - 0.5), cols.stop - cols.start, rows.stop - rows.start,
                               fill=False, edgecolor="cyan", linewidth=0.8))
        ax.plot(r.query[1], r.query[0], marker="x", color="cyan", markersize=4, markeredgewidth=0.8)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"r90={r.stats['radius_90']:g}, out={100 * r.stats['outside_window']:.0f}%", fontsize=7)
    filled = {(row_names.index(getattr(r, row_key)), col_names.index(getattr(r, col_key))) for r in results}
    for i, name in enumerate(row_names):  # label each row and column on its first panel that holds a map
        j = min(j for (ii, j) in filled if ii == i)
        axes[i, j].set_ylabel(_label(row_key, name, results), fontsize=7)
    for j, name in enumerate(col_names):
        i = min(i for (i, jj) in filled if jj == j)
        axes[i, j].set_title(f"{_label(col_key, name, results)}\n{axes[i, j].get_title()}", fontsize=7)
    fig.colorbar(image, ax=axes, shrink=0.8, extend="min", label="share of gradient mass per input pixel (log)")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def _label(key: str, value, results: Sequence[ERFResult]) -> str:
    if key == "stage":
        r = next(r for r in results if r.stage == value)
        return f"stage {value} ({r.height}x{r.width})"
    if value.endswith("_block0"):  # a stage of depth 1 in a swin/twins model: no pair to measure
        return f"our {value[len('ours_'):-len('_block0')]} pattern, block 0 alone"
    return TITLES.get(value, value)


# ================================================================================== tables
def comparable(results: Sequence[ERFResult], tolerance: float = 0.5) -> list[dict[str, Any]]:
    """Per stage: the SepViT block against each two-block pair (units named "*_pair"), side by side:
    radius_90, mean distance, share outside the own window, reach and analytic MACs. A swin/twins model's
    stage of depth 1 has no pair ("*_block0"): it is left out, as it is not the paper's comparison.

    Verdict `comparable`: the SepViT block's mean distance is at least (1 - tolerance) times the pair's,
    i.e. it sees about as far (within a factor 2 at the default) or farther. Mean distance decides because
    radius_90 jumps when the shortcut spike at the query crosses 90 % of the mass.
    """
    out = []
    for stage in sorted({r.stage for r in results}):
        here = {r.unit: r for r in results if r.stage == stage}
        sepvit = here.get("sepvit_block")
        if sepvit is None:
            continue
        for name, r in here.items():
            if not name.endswith("_pair"):
                continue
            a, b = sepvit.stats, r.stats
            ratio = a["mean_distance"] / b["mean_distance"] if b["mean_distance"] else math.inf
            out.append(dict(stage=stage, pair=name, sepvit_radius_90=a["radius_90"], pair_radius_90=b["radius_90"],
                            sepvit_mean_distance=a["mean_distance"], pair_mean_distance=b["mean_distance"],
                            mean_distance_ratio=ratio, sepvit_outside_window=a["outside_window"],
                            pair_outside_window=b["outside_window"], sepvit_reach=a["reach"], pair_reach=b["reach"],
                            macs_ratio=(sepvit.macs / r.macs) if sepvit.macs and r.macs else None,
                            comparable=bool(ratio >= 1 - tolerance)))
    return out


def format_comparison(rows: list[dict[str, Any]]) -> str:
    """One sentence per stage and pair, from the numbers of `comparable`."""
    lines = []
    for c in rows:
        macs = f", {c['macs_ratio']:.2f}x its MACs" if c["macs_ratio"] else ""
        lines.append(
            f"stage {c['stage']}: SepViT block vs {c['pair']}: mean distance {c['sepvit_mean_distance']:.2f} vs "
            f"{c['pair_mean_distance']:.2f} px (ratio {c['mean_distance_ratio']:.2f}), r90 {c['sepvit_radius_90']:g} vs "
            f"{c['pair_radius_90']:g}, outside own window {100 * c['sepvit_outside_window']:.1f} % vs "
            f"{100 * c['pair_outside_window']:.1f} %, reach {100 * c['sepvit_reach']:.0f} % vs "
            f"{100 * c['pair_reach']:.0f} %{macs}: " + ("comparable or wider" if c["comparable"] else "NOT comparable"))
    return "\n".join(lines)


def format_table(results: Sequence[ERFResult]) -> str:
    header = ["stage", "map", "unit", "blocks", "r90", "mean d", "outside win", "self", "reach", "MACs (M)"]
    body = []
    for r in results:
        s = r.stats
        body.append([str(r.stage), f"{r.height}x{r.width}", r.unit, r.blocks or "-", f"{s['radius_90']:g}",
                     f"{s['mean_distance']:.2f}", f"{100 * s['outside_window']:.1f} %", f"{100 * s['self_share']:.1f} %",
                     f"{100 * s['reach']:.0f} %", f"{r.macs / 1e6:.2f}" if r.macs is not None else "-"])
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(header)]

    def line(cells):
        return "  ".join(c.ljust(w) if i in (1, 2, 3) else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(row) for row in body)])


def to_csv(rows: list[dict[str, Any]]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (json.dumps(v) if isinstance(v, (list, tuple)) else v) for k, v in row.items()})
    return buffer.getvalue()


# ================================================================================== helpers and CLI
def _config(variant: str, img_size: int | None) -> SepViTConfig:
    if variant not in PRESETS:
        raise ValueError(f"unknown variant {variant!r}: use one of {', '.join(PRESETS)}")
    cfg = SepViTConfig.preset(variant)
    return cfg if img_size in (None, cfg.img_size) else cfg.replace(img_size=img_size)


def _check_units(units: Sequence[str] | None) -> list[str]:
    if units is None:
        return list(UNITS)
    unknown = [u for u in units if u not in UNITS]
    if unknown:
        raise ValueError(f"unknown unit(s) {', '.join(unknown)}: use names from {', '.join(UNITS)}")
    return list(units)


def _check_stages(stages: Sequence[int] | None, count: int) -> list[int]:
    if stages is None:
        return list(range(1, count + 1))
    bad = [s for s in stages if not 1 <= s <= count]
    if bad:
        raise ValueError(f"stage(s) {bad} do not exist: the model has stages 1-{count}")
    return list(stages)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="receptive_field.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", default="sepvit_tiny", help=f"stage shapes of this preset: {', '.join(PRESETS)}")
    p.add_argument("--img-size", type=int, help="input side (default: the preset's)")
    p.add_argument("--units", nargs="+", metavar="UNIT", help=f"units at init (default all): {', '.join(UNITS)}")
    p.add_argument("--stages", type=int, nargs="+", metavar="S", help="one-based stages (default all)")
    p.add_argument("--inputs", type=int, default=8, help="random input maps averaged over")
    p.add_argument("--seed", type=int, default=0, help="init and input seed")
    p.add_argument("--init", choices=INITS, default="authors", help="init of the units")
    add_common_flags(p)
    return p


def add_common_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared with the trained-model command (`experiments/trained_erf.py`)."""
    p.add_argument("--no-identity", action="store_true", help="leave out the all-shortcut path (y[q] - x[q])")
    p.add_argument("--metric", choices=METRICS, default="chebyshev", help="distance for radius and mean distance")
    p.add_argument("--dtype", choices=list(DTYPES), default="float32", help="float64 agrees within 1e-6, 3x slower")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")


def render(groups: dict[str, list[ERFResult]], fmt: str, metric: str, identity: bool,
           extra: dict[str, dict[str, Any]] | None = None) -> str:
    """The CLI output: per group (title -> results) a table with the verdicts, or one JSON/CSV row per result
    (with `extra[title]` columns)."""
    if fmt == "table":
        text = [f"ERF ({metric} distance, query = centre pixel, identity path {'included' if identity else 'excluded'};"
                " MACs analytic, paper convention)"]
        text += [f"\n{title}\n{format_table(group)}" for title, group in groups.items()]
        verdicts = comparable([r for group in groups.values() for r in group])
        if verdicts:
            text.append("\nSepViT block vs two-block patterns (comparable = mean distance at least half the pair's):")
            text.append(format_comparison(verdicts))
        return "\n".join(text)
    flat = [{**(extra or {}).get(title, {}), **r.row()} for title, group in groups.items() for r in group]
    return json.dumps(flat, indent=1) if fmt == "json" else to_csv(flat).rstrip("\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = parser.prog
    if args.inputs < 1:
        return fail(prog, f"--inputs must be >= 1, got {args.inputs}")
    if args.img_size is not None and args.img_size < 1:
        return fail(prog, f"--img-size must be >= 1, got {args.img_size}")
    try:
        results = unit_erf_table(args.variant, args.img_size, units=args.units, stages=args.stages,
                                 inputs=args.inputs, seed=args.seed, init=args.init,
                                 identity=not args.no_identity, metric=args.metric, dtype=DTYPES[args.dtype])
    except (ValueError, KeyError) as error:
        return fail(prog, str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
    title = (f"{args.variant} at {args.img_size or PRESETS[args.variant].get('img_size', 224)} px, init={args.init}, "
             f"{args.inputs} random inputs")
    print(render({title: results}, args.format, args.metric, not args.no_identity))
    return 0


if __name__ == "__main__":
    sys.exit(main())
