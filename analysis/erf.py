"""Effective receptive field (ERF): the gradient maps of a unit and the numbers read off one map.

The paper claims one SepViT block costs about half of a Swin (W-MSA + SW-MSA) or Twins (LSA + GSA) pair of
blocks "with a comparable receptive field". `analysis.block_counts` checks the cost; this module and
`analysis.erf_tables` (centre-query ERF of units and trained blocks, figures) and `analysis.reach` (spatial reach
with intervals, the verdict) measure the receptive field, in the sense of Luo et al. (2016, "Understanding the
effective receptive field"):

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

Centre-query numbers (`erf_stats`, as `analysis.erf_tables` uses them; one query, the centre, inputs
averaged before normalising; the maps `plot_erf` draws). Their distances include the self share, so they do
not rank units by reach: use the reach numbers (`off_query_stats`, `analysis.reach`) for that.
  radius_90       the smallest radius (feature-map pixels) around the query holding >= 90 % of the mass
  mean_distance   mass-weighted mean distance from the query (ALL the mass, self share included)
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
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from sepvit.config import PRESETS, SepViTConfig
from sepvit.layers import trunc_normal_init, window_geometry

from analysis.block_counts import block_comparison
from analysis.units import UNITS, StageBlocks

METRICS = ("chebyshev", "euclidean")
INITS = ("authors", "as_built")
DTYPES = {"float64": torch.float64, "float32": torch.float32}
REACH_THRESHOLD = 1e-12  # relative to the largest pixel: below it a position counts as unreached
STAT_COLUMNS = ("radius_90", "mean_distance", "outside_window", "self_share", "reach")  # centre-query ERF


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
    _check_inputs(inputs)
    _, height, width, _ = inputs.shape
    query = centre(height, width) if query is None else query
    total = gradient_maps(unit, inputs, [query], identity=identity, chunk=chunk)[:, 0].sum(dim=0)
    mass = total.sum()
    if not torch.isfinite(mass) or mass <= 0:
        raise ValueError("no finite gradient reaches the input from the query: the ERF is undefined")
    return total / mass


def gradient_maps(unit: nn.Module, inputs: torch.Tensor, queries: Sequence[tuple[int, int]], *,
                  identity: bool = True, chunk: int = 4) -> torch.Tensor:
    """(B, Q, H, W) float64: for every input b and query q, sum over input channels of
    |d (sum_c y[b, q, c]) / d x[b, p, :]| at every input position p, not normalised.

    One forward pass per `chunk` of inputs and one backward pass per query (the units are per-sample, so a
    chunk's summed output gives each sample its own gradient). identity=False: the gradient of y[q] - x[q].
    """
    _check_inputs(inputs)
    count, height, width, _ = inputs.shape
    queries = [(int(i), int(j)) for i, j in queries]
    for qi, qj in queries:
        if not (0 <= qi < height and 0 <= qj < width):
            raise ValueError(f"query {(qi, qj)} lies outside the {height}x{width} map")
    unit.eval()
    maps = torch.zeros(count, len(queries), height, width, dtype=torch.float64)
    start = 0
    for part in inputs.split(max(1, int(chunk))):
        x = part.detach().clone().requires_grad_(True)
        y = unit(x)
        if y.shape != x.shape:
            raise ValueError(f"the unit maps {tuple(x.shape)} to {tuple(y.shape)}: it must keep the map's shape")
        for k, (qi, qj) in enumerate(queries):
            out = y[:, qi, qj, :]
            if not identity:
                out = out - x[:, qi, qj, :]
            (grad,) = torch.autograd.grad(out.sum(), x, retain_graph=k + 1 < len(queries))
            maps[start:start + len(part), k] = grad.abs().sum(dim=-1).to(torch.float64)
        start += len(part)
    return maps


def _check_inputs(inputs: torch.Tensor) -> None:
    if inputs.ndim != 4:
        raise ValueError(f"inputs must be channels-last maps (B, H, W, C), got shape {tuple(inputs.shape)}")


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


def off_query_stats(grad: np.ndarray | torch.Tensor, query: tuple[int, int],
                    metric: str = "chebyshev") -> dict[str, float]:
    """The spatial reach of one gradient map (H, W), apart from its self share (module docstring, "Reach"):
    self_share, and over the off-query mass alone (the map with the query pixel removed, renormalised)
    off_mean_distance, off_radius_50 and off_radius_90. A map with no off-query mass reaches nowhere: 0."""
    grad = np.asarray(grad, dtype=np.float64)
    total = grad.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("no finite gradient reaches the input from the query: the reach is undefined")
    off = grad.copy()
    off[query] = 0.0
    off_total = off.sum()
    stats = dict(self_share=float(grad[query] / total))
    if off_total <= 0:
        return dict(stats, off_mean_distance=0.0, off_radius_50=0.0, off_radius_90=0.0)
    off /= off_total
    return dict(stats, off_mean_distance=float((off * distances(*off.shape, query, metric)).sum()),
                off_radius_50=radius(off, query, 0.5, metric), off_radius_90=radius(off, query, 0.9, metric))


# ================================================================================== units at a stage's shape
def initialise(unit: nn.Module, init: str = "authors") -> nn.Module:
    """Re-initialise a unit: "authors" = trunc-normal(0.02) Linear, LayerNorm 1/0 (also timm's model init
    for Swin, Twins and ViT); "as_built" = leave PyTorch's per-layer defaults."""
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}: use one of {', '.join(INITS)}")
    if init == "authors":
        unit.apply(trunc_normal_init)
    return unit



def stage_shapes(cfg: SepViTConfig, img_size: int) -> list[tuple[int, int]]:
    """(H, W) of each stage's map on an `img_size` input."""
    return [(cfg.stage_resolution(s, img_size),) * 2 for s in range(cfg.num_stages)]


def analytic_unit_macs(variant: str, img_size: int) -> dict[tuple[int, str], int]:
    """(stage, unit) -> analytic MACs (paper convention) from `analysis.block_counts.block_comparison`."""
    out = {}
    for row in block_comparison(variant, img_size, measure=False):
        for name in UNITS:
            if row.get(f"{name}_analytic") is not None:
                out[(row["stage"], name)] = int(row[f"{name}_analytic"])
    return out



# ================================================================================== blocks of a trained model
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


def blocks_label(unit: TrainedUnit, with_cpe: bool) -> str:
    """"0+1", with " (CPE after 0)" when the stage's CPE runs between them."""
    return "+".join(str(i) for i in unit.indices) + (" (CPE after 0)" if with_cpe and len(unit.indices) > 1 else "")


# ================================================================================== checks
def preset_config(variant: str, img_size: int | None) -> SepViTConfig:
    """Preset `variant` built for `img_size` (default its own); ValueError naming the presets for an unknown one."""
    if variant not in PRESETS:
        raise ValueError(f"unknown variant {variant!r}: use one of {', '.join(PRESETS)}")
    cfg = SepViTConfig.preset(variant)
    return cfg if img_size in (None, cfg.img_size) else cfg.replace(img_size=img_size)


def check_units(units: Sequence[str] | None) -> list[str]:
    """The unit names asked for (default all of `analysis.units.UNITS`); ValueError for an unknown one."""
    if units is None:
        return list(UNITS)
    unknown = [u for u in units if u not in UNITS]
    if unknown:
        raise ValueError(f"unknown unit(s) {', '.join(unknown)}: use names from {', '.join(UNITS)}")
    return list(units)


def check_stages(stages: Sequence[int] | None, count: int) -> list[int]:
    """The one-based stages asked for (default all `count`); ValueError for one the model does not have."""
    if stages is None:
        return list(range(1, count + 1))
    bad = [s for s in stages if not 1 <= s <= count]
    if bad:
        raise ValueError(f"stage(s) {bad} do not exist: the model has stages 1-{count}")
    return list(stages)
