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

Reach (`reach_values`, `unit_reach_table`, `model_reach_table`): how far a unit sees, apart from how much
gradient stays at the query. For every input b and query q (drawn at random, one per place inside the
window by default: `query_positions`), the gradient map g[b, q] (not averaged over inputs) is split into
  self_share         g at the query pixel / all of g: the shortcut and the pixel's own paths
  off_mean_distance  the mean distance from the query of the OFF-query mass (g with the query pixel removed,
                     renormalised): the decisive number (PRIMARY_STAT)
  off_radius_50/_90  the smallest radius holding 50 % / 90 % of the off-query mass
each averaged over (seeds, inputs, queries), with a 95 % percentile interval from resampling seeds, inputs
and queries independently (`bootstrap_mean`; queries are resampled freely, not within their phase, which can
only widen the interval). Why off-query: with the shortcut, the share at the query is 0.8-0.99 and differs
between units, and the mean distance of ALL the mass mostly measures that share (global MSA, which sees
everything, scored narrowest); removing the query pixel leaves where the rest goes.
What it cannot see at the authors' init: every branch is small beside the shortcut, so a pair of blocks'
gradient is about the sum of its two blocks' own fields (composition is second order). A Swin pair at init is
then an aligned and a shifted window, whose mean distance, over queries, equals one window's: only its
off_radius_90 (its wider support) is larger. With branches of the order of the shortcut (PyTorch's default
init; a trained model's branches are no longer small either) the pair composes, and its off_mean_distance
exceeds one window's (tests/test_receptive_field.py, at the nano preset's stage-1 shape).

Comparable (`compare_reach`): the ratio SepViT block / pair of off_mean_distance, on the same inputs and
queries (paired), with a 95 % interval that resamples inputs and queries jointly and each unit's seeds
separately (`reach_ratio`). "Comparable" = the whole interval lies inside EQUIVALENCE_BAND 0.80-1.25 (+-20 %,
symmetric on a log scale; the 80-125 % rule of bioequivalence testing, i.e. two one-sided tests at 2.5 %
each): an imprecise measurement cannot pass, and a large difference cannot pass however precise. The
direction is stated separately ("narrower": interval below 1; "wider": above 1), so a comparable but
narrower SepViT block is said to be narrower (`comparable_verdict`).

Centre-query numbers (`erf_stats` of `unit_erf_table` / `model_erf_table`; one query, the centre, inputs
averaged before normalising; the maps `plot_erf` draws). Their distances include the self share, so they do
not rank units by reach: use the reach numbers above for that.
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

Command line (reach tables and verdicts): `python analysis/receptive_field.py --variant sepvit_tiny --seeds 0 1 2`,
and `python experiments/trained_erf.py RUN*/last.pth ...` for trained models' blocks on their data (checkpoints
of one configuration are its seeds).
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
from sepvit.config import EXECUTION_FIELDS, PRESETS, SepViTConfig
from sepvit.layers import trunc_normal_init, window_geometry
from workbench.cli import OneLineParser, fail

METRICS = ("chebyshev", "euclidean")
INITS = ("authors", "as_built")
DTYPES = {"float64": torch.float64, "float32": torch.float32}
REACH_THRESHOLD = 1e-12  # relative to the largest pixel: below it a position counts as unreached
STAT_COLUMNS = ("radius_90", "mean_distance", "outside_window", "self_share", "reach")  # centre-query ERF
REACH_STATS = ("off_mean_distance", "off_radius_50", "off_radius_90", "self_share")
PRIMARY_STAT = "off_mean_distance"  # what `compare_reach` decides by (module docstring, "Comparable")
EQUIVALENCE_BAND = (0.8, 1.25)  # ratio SepViT / pair counted as equal: +-20 %, symmetric on a log scale


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


def _blocks_label(unit: TrainedUnit, with_cpe: bool) -> str:
    """"0+1", with " (CPE after 0)" when the stage's CPE runs between them."""
    return "+".join(str(i) for i in unit.indices) + (" (CPE after 0)" if with_cpe and len(unit.indices) > 1 else "")


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
        results.append(ERFResult(unit.stage + 1, unit.name, height, width, cfg.window_size, query, len(x), mass,
                                 erf_stats(mass, query, cfg.window_size, metric), macs, _blocks_label(unit, with_cpe)))
    return results


# ================================================================================== (c) spatial reach, with intervals
def query_positions(height: int, width: int, window: int, per_phase: int | None = 1,
                    seed: int = 0) -> list[tuple[int, int]]:
    """Query positions stratified by their place inside the window: for every phase (i mod M, j mod M) of the
    model's windows (`window_geometry`), `per_phase` distinct positions with that phase drawn at random
    (seeded), in phase order; every position when `per_phase` is None.

    Why stratified: a window unit's reach depends strongly on where the query sits in its window (a corner
    pixel's window lies on one side of it), so a random draw that happens to favour some phases moves the
    mean by more than the differences between units; one query per phase averages that out exactly."""
    if per_phase is None:
        return [(i, j) for i in range(height) for j in range(width)]
    if per_phase < 1:
        raise ValueError(f"queries per phase must be >= 1, got {per_phase}")
    wh, ww, _, _ = window_geometry(height, width, window)
    rng = np.random.default_rng(seed)
    out = []
    for pi in range(wh):
        for pj in range(ww):
            same_phase = [(i, j) for i in range(pi, height, wh) for j in range(pj, width, ww)]
            if not same_phase:  # a phase that only the padding holds
                continue
            chosen = rng.choice(len(same_phase), size=min(per_phase, len(same_phase)), replace=False)
            out += [same_phase[k] for k in sorted(chosen)]
    return out


def reach_values(unit: nn.Module, inputs: torch.Tensor, queries: Sequence[tuple[int, int]], *,
                 identity: bool = True, metric: str = "chebyshev", chunk: int = 4) -> dict[str, np.ndarray]:
    """stat -> (B, Q) array: `off_query_stats` of every input's gradient map at every query."""
    maps = gradient_maps(unit, inputs, queries, identity=identity, chunk=chunk).numpy()
    out = {name: np.zeros(maps.shape[:2]) for name in REACH_STATS}
    for b in range(maps.shape[0]):
        for k, query in enumerate(queries):
            for name, value in off_query_stats(maps[b, k], tuple(query), metric).items():
                out[name][b, k] = value
    return out


def _counts(rng: np.random.Generator, size: int, resamples: int) -> np.ndarray:
    """(resamples, size) multiplicities of a bootstrap resample of `size` items."""
    return rng.multinomial(size, np.full(size, 1.0 / size), size=resamples).astype(np.float64)


def _resampled_means(values: np.ndarray, input_counts: np.ndarray, query_counts: np.ndarray,
                     seed_counts: np.ndarray) -> np.ndarray:
    """(resamples,) means of (S, B, Q) `values` over resampled seeds, inputs and queries (crossed)."""
    s, b, q = values.shape
    return np.einsum("rs,rb,rq,sbq->r", seed_counts, input_counts, query_counts, values) / (s * b * q)


def bootstrap_mean(values: np.ndarray, *, level: float = 0.95, resamples: int = 2000,
                   seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) of (seeds, inputs, queries) values: the mean over all, and a percentile interval
    from resampling seeds, inputs and queries independently (a crossed bootstrap; each axis may vary)."""
    values = _as_sbq(values)
    rng = np.random.default_rng(seed)
    s, b, q = values.shape
    means = _resampled_means(values, _counts(rng, b, resamples), _counts(rng, q, resamples),
                             _counts(rng, s, resamples))
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(values.mean()), float(low), float(high)


def reach_ratio(a: np.ndarray, b: np.ndarray, *, level: float = 0.95, resamples: int = 2000,
                seed: int = 0) -> tuple[float, float, float]:
    """(ratio, low, high): mean(a) / mean(b) for two units measured on the SAME inputs and queries
    (arrays (seeds, inputs, queries); seed counts may differ). Inputs and queries are resampled jointly for
    both (paired), each unit's seeds independently (different models)."""
    a, b = _as_sbq(a), _as_sbq(b)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"a ratio needs the same inputs and queries for both units: shapes {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    inputs, queries = _counts(rng, a.shape[1], resamples), _counts(rng, a.shape[2], resamples)
    ratios = (_resampled_means(a, inputs, queries, _counts(rng, a.shape[0], resamples))
              / _resampled_means(b, inputs, queries, _counts(rng, b.shape[0], resamples)))
    low, high = np.quantile(ratios, [(1 - level) / 2, (1 + level) / 2])
    return float(a.mean() / b.mean()), float(low), float(high)


def _as_sbq(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 2:
        values = values[None]
    if values.ndim != 3 or 0 in values.shape:
        raise ValueError(f"values must be (seeds, inputs, queries) or (inputs, queries), got shape {values.shape}")
    return values


def comparable_verdict(ratio: float, low: float, high: float, band: tuple[float, float] = EQUIVALENCE_BAND,
                       level: float = 0.95, what: str = "SepViT / other") -> dict[str, Any]:
    """The verdict on a reach ratio and its interval (module docstring, "Comparable"):
    comparable: the whole interval lies inside `band`; at_least_comparable: its low end is inside or above the
    band (not narrower by more than the band: what "a comparable receptive field" at half the cost needs);
    direction: "narrower" (interval below 1), "wider" (above 1) or "no detectable difference"; verdict and
    sentence state them with the numbers."""
    lo_band, hi_band = band
    if not 0 < lo_band < 1 < hi_band:
        raise ValueError(f"the equivalence band must hold 1, got {band}")
    comparable_ = bool(lo_band <= low and high <= hi_band)
    direction = "narrower" if high < 1 else "wider" if low > 1 else "no detectable difference"
    if comparable_:
        verdict = "comparable" + (f", though {direction}" if direction != "no detectable difference" else "")
    elif direction == "narrower":
        verdict = "NOT comparable: narrower"
    elif direction == "wider" and low > hi_band:
        verdict = "wider, beyond the band"
    elif direction == "wider":
        verdict = "wider, by an amount the interval cannot pin inside the band"
    else:
        verdict = "undecided: the interval is too wide to call it comparable or different"
    sentence = (f"{what} = {ratio:.2f} ({100 * level:.0f} % interval {low:.2f}-{high:.2f}; comparable = interval "
                f"inside {lo_band:.2f}-{hi_band:.2f}): {verdict}")
    return dict(comparable=comparable_, at_least_comparable=bool(low >= lo_band), direction=direction,
                verdict=verdict, sentence=sentence)


@dataclass
class ReachResult:
    """The spatial reach of one unit: every stat of REACH_STATS per (seed, input, query)."""

    stage: int  # one-based
    unit: str
    height: int
    width: int
    window: int
    queries: list[tuple[int, int]]
    values: dict[str, np.ndarray]  # stat -> (seeds, inputs, queries)
    macs: int | None = None  # analytic MACs, the paper's convention (multiply-add = 1)
    blocks: str = ""
    label: str = ""  # what was measured beyond the unit, e.g. a model's name

    @property
    def seeds(self) -> int:
        return self.values[REACH_STATS[0]].shape[0]

    @property
    def inputs(self) -> int:
        return self.values[REACH_STATS[0]].shape[1]

    def summary(self, stat: str = PRIMARY_STAT, **bootstrap: Any) -> tuple[float, float, float]:
        """(mean, low, high) of one stat (`bootstrap_mean`)."""
        return bootstrap_mean(self.values[stat], **bootstrap)

    def row(self, **bootstrap: Any) -> dict[str, Any]:
        """A flat table row: where, how many seeds/inputs/queries, and each stat's mean with its interval."""
        row = dict(stage=self.stage, unit=self.unit, label=self.label, blocks=self.blocks, height=self.height,
                   width=self.width, window=self.window, seeds=self.seeds, inputs=self.inputs,
                   queries=len(self.queries))
        for stat in REACH_STATS:
            row[stat], row[f"{stat}_low"], row[f"{stat}_high"] = self.summary(stat, **bootstrap)
        row["macs"] = self.macs
        return row


def _stack_seeds(per_seed: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {stat: np.stack([values[stat] for values in per_seed]) for stat in REACH_STATS}


def unit_reach_table(variant: str = "sepvit_tiny", img_size: int | None = None, *,
                     units: Sequence[str] | None = None, stages: Sequence[int] | None = None, inputs: int = 8,
                     per_phase: int | None = 1, seeds: Sequence[int] = (0,), input_seed: int = 0,
                     init: str = "authors", identity: bool = True, metric: str = "chebyshev",
                     dtype: torch.dtype = torch.float32, with_macs: bool = True) -> list[ReachResult]:
    """Spatial reach of every unit of `analysis.units.stage_units` at each stage's shape of `variant`, at
    init (`init`), one model per init seed in `seeds`; every unit and seed sees the same `inputs`
    standard-normal maps (`input_seed`) and the same query positions (`query_positions`, `per_phase`), so
    ratios between units are paired."""
    cfg = _config(variant, img_size)
    chosen_units = _check_units(units)
    shapes = _stage_shapes(cfg, cfg.img_size)
    chosen_stages = _check_stages(stages, len(shapes))
    macs = _analytic_unit_macs(variant, cfg.img_size) if with_macs else {}
    results = []
    for stage in chosen_stages:
        height, width = shapes[stage - 1]
        x = random_inputs(inputs, height, width, cfg.embed_dims[stage - 1], seed=input_seed + stage, dtype=dtype)
        positions = query_positions(height, width, cfg.window_size, per_phase, seed=input_seed + stage)
        per_unit: dict[str, list[dict[str, np.ndarray]]] = {}
        for seed in seeds:
            torch.manual_seed(seed)
            built = stage_units(cfg, stage - 1, height, width)
            for name in chosen_units:
                if built[name] is None:
                    continue
                torch.manual_seed(seed)
                module = initialise(built[name], init).to(dtype)
                per_unit.setdefault(name, []).append(reach_values(module, x, positions, identity=identity,
                                                                  metric=metric))
        for name, per_seed in per_unit.items():
            results.append(ReachResult(stage, name, height, width, cfg.window_size, positions, _stack_seeds(per_seed),
                                       macs.get((stage, name))))
    return results


def model_reach_table(models: Sequence[nn.Module], images: torch.Tensor, *, per_phase: int | None = 1,
                      query_seed: int = 0, identity: bool = True, metric: str = "chebyshev",
                      dtype: torch.dtype = torch.float32, with_cpe: bool = False, stages: Sequence[int] | None = None,
                      label: str = "") -> list[ReachResult]:
    """Spatial reach of the units of `model_units` in `models`, several trained seeds of ONE configuration,
    each on the real inputs its blocks receive from the same `images` (B, C, H, W); queries drawn once per map
    shape (`query_positions`, `per_phase`, `query_seed`), so two tables of the same images, shapes and window
    pair input by input and query by query."""
    from analysis.complexity import block_macs

    if not models:
        raise ValueError("no model to measure")
    cfg: SepViTConfig = models[0].config
    different = [i for i, m in enumerate(models) if computed_by(m.config) != computed_by(cfg)]
    if different:
        raise ValueError(f"the seeds of one measurement must share a configuration: model(s) {different} differ "
                         f"from model 0")
    chosen_stages = _check_stages(stages, cfg.num_stages)
    per_unit: dict[tuple[int, str], list[dict[str, np.ndarray]]] = {}
    facts: dict[tuple[int, str], tuple[TrainedUnit, int, int, list[tuple[int, int]]]] = {}
    for model in models:
        units = [u for u in model_units(model, with_cpe) if u.stage + 1 in chosen_stages]
        captured = capture_block_inputs(model, images, {(u.stage, u.indices[0]) for u in units})
        for unit in units:
            x = captured[(unit.stage, unit.indices[0])].to(dtype)
            _, height, width, _ = x.shape
            positions = query_positions(height, width, cfg.window_size, per_phase, seed=query_seed)
            module = copy.deepcopy(unit.module).to(dtype)
            per_unit.setdefault((unit.stage, unit.name), []).append(
                reach_values(module, x, positions, identity=identity, metric=metric))
            facts[(unit.stage, unit.name)] = (unit, height, width, positions)
    results = []
    for key, per_seed in per_unit.items():
        unit, height, width, positions = facts[key]
        macs = sum(block_macs(cfg, unit.stage, i, height, width).paper for i in unit.indices)
        results.append(ReachResult(unit.stage + 1, unit.name, height, width, cfg.window_size, positions,
                                   _stack_seeds(per_seed), macs, _blocks_label(unit, with_cpe), label))
    return results


def computed_by(cfg: SepViTConfig) -> dict[str, Any]:
    """What a configuration's model computes: its fields less the execution details (fused attention)."""
    return {k: v for k, v in cfg.to_dict().items() if k not in EXECUTION_FIELDS}


def compare_reach(results: Sequence[ReachResult], *, stat: str = PRIMARY_STAT,
                  band: tuple[float, float] = EQUIVALENCE_BAND, level: float = 0.95, resamples: int = 2000,
                  seed: int = 0) -> list[dict[str, Any]]:
    """Per stage: the SepViT block's reach against each two-block pair ("*_pair" units) measured on the same
    inputs and queries: the ratio SepViT / pair of `stat` with its interval (`reach_ratio`), both means, the
    MACs ratio, and `comparable_verdict`. A pair measured on other inputs or queries is skipped."""
    if stat not in REACH_STATS:
        raise ValueError(f"unknown stat {stat!r}: use one of {', '.join(REACH_STATS)}")
    out = []
    for stage in sorted({r.stage for r in results}):
        here = [r for r in results if r.stage == stage]
        sepvit = next((r for r in here if r.unit == "sepvit_block"), None)
        if sepvit is None:
            continue
        for other in here:
            if not other.unit.endswith("_pair") or other.queries != sepvit.queries or other.inputs != sepvit.inputs:
                continue
            ratio, low, high = reach_ratio(sepvit.values[stat], other.values[stat], level=level, resamples=resamples,
                                           seed=seed)
            verdict = comparable_verdict(ratio, low, high, band, level, what=f"{stat} SepViT block / {other.unit}")
            out.append(dict(stage=stage, pair=other.unit, stat=stat, sepvit=float(sepvit.values[stat].mean()),
                            other=float(other.values[stat].mean()), ratio=ratio, low=low, high=high,
                            sepvit_seeds=sepvit.seeds, other_seeds=other.seeds, inputs=sepvit.inputs,
                            queries=len(sepvit.queries),
                            macs_ratio=(sepvit.macs / other.macs) if sepvit.macs and other.macs else None, **verdict))
    return out


def format_reach_comparison(rows: Sequence[dict[str, Any]]) -> str:
    """One line per stage and pair, from `compare_reach`."""
    lines = []
    for c in rows:
        macs = f", {c['macs_ratio']:.2f}x its MACs" if c["macs_ratio"] else ""
        lines.append(f"stage {c['stage']}: SepViT block vs {c['pair']}: {c['stat']} {c['sepvit']:.2f} vs "
                     f"{c['other']:.2f} px ({c['sepvit_seeds']} vs {c['other_seeds']} seed(s), {c['inputs']} inputs x {c['queries']} "
                     f"queries){macs}; ratio {c['ratio']:.2f} [{c['low']:.2f}, {c['high']:.2f}]: {c['verdict']}")
    return "\n".join(lines)


def format_reach_table(results: Sequence[ReachResult], **bootstrap: Any) -> str:
    """The reach numbers with their intervals, one line per unit."""
    header = ["stage", "map", "unit", "label", "blocks", "seeds", "inputs", "queries", "off mean d", "off r50",
              "off r90", "self", "MACs (M)"]
    body = []
    for r in results:
        row = r.row(**bootstrap)
        cells = [f"{row[s]:.2f} [{row[s + '_low']:.2f}, {row[s + '_high']:.2f}]" for s in REACH_STATS[:3]]
        body.append([str(r.stage), f"{r.height}x{r.width}", r.unit, r.label or "-", r.blocks or "-", str(r.seeds),
                     str(r.inputs), str(len(r.queries)), *cells, f"{100 * row['self_share']:.1f} %",
                     f"{r.macs / 1e6:.2f}" if r.macs is not None else "-"])
    return _aligned(header, body, left=(1, 2, 3, 4))


def _aligned(header: list[str], body: list[list[str]], left: tuple[int, ...]) -> str:
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(header)]

    def line(cells):
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(row) for row in body)])


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


# ================================================================================== legacy: the centre-query verdict
# Kept only for notebook 01 as stored before the reach measure; superseded by `compare_reach`, because the mean
# distance of ALL the mass is set by the self share (global MSA scores narrowest) and the 0.5 tolerance has no
# interval. Remove once the notebook uses `compare_reach`.
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
    p.add_argument("--seeds", type=int, nargs="+", default=[0], metavar="S", help="init seeds (one model each)")
    p.add_argument("--input-seed", type=int, default=0, help="seed of the random inputs and the query positions")
    p.add_argument("--init", choices=INITS, default="authors", help="init of the units")
    add_common_flags(p)
    return p


def add_common_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared with the trained-model command (`experiments/trained_erf.py`)."""
    p.add_argument("--queries-per-phase", type=int, default=1,
                   help="query positions drawn per place inside the window (0: every position of the map)")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples of each interval")
    p.add_argument("--no-identity", action="store_true", help="leave out the all-shortcut path (y[q] - x[q])")
    p.add_argument("--metric", choices=METRICS, default="chebyshev", help="distance for radius and mean distance")
    p.add_argument("--dtype", choices=list(DTYPES), default="float32", help="float64 agrees within 1e-6, 3x slower")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")


def check_common_flags(args: argparse.Namespace) -> str | None:
    """What is wrong with the shared flags, in one line, or None."""
    if args.queries_per_phase < 0:
        return f"--queries-per-phase must be >= 0 (0: every position), got {args.queries_per_phase}"
    if args.resamples < 1:
        return f"--resamples must be >= 1, got {args.resamples}"
    return None


def render(groups: dict[str, list[ReachResult]], fmt: str, metric: str, identity: bool,
           extra: dict[str, dict[str, Any]] | None = None, resamples: int = 2000) -> str:
    """The CLI output: per group (title -> results) the reach table, then the SepViT-vs-pair verdicts over all
    groups; or one JSON/CSV row per result (with `extra[title]` columns)."""
    if fmt == "table":
        text = [f"Spatial reach: the off-query gradient mass ({metric} distance, feature-map px; mean [95 % interval "
                f"over seeds, inputs and queries]); self = share at the query (identity path "
                f"{'included' if identity else 'excluded'}); MACs analytic, paper convention"]
        text += [f"\n{title}\n{format_reach_table(group, resamples=resamples)}" for title, group in groups.items()]
        verdicts = compare_reach([r for group in groups.values() for r in group], resamples=resamples)
        if verdicts:
            text.append(f"\nSepViT block vs two-block patterns ({PRIMARY_STAT} ratio; comparable = 95 % interval "
                        f"inside {EQUIVALENCE_BAND[0]:.2f}-{EQUIVALENCE_BAND[1]:.2f}):")
            text.append(format_reach_comparison(verdicts))
        return "\n".join(text)
    flat = [{**(extra or {}).get(title, {}), **r.row(resamples=resamples)} for title, group in groups.items()
            for r in group]
    return json.dumps(flat, indent=1) if fmt == "json" else to_csv(flat).rstrip("\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = parser.prog
    if args.inputs < 1:
        return fail(prog, f"--inputs must be >= 1, got {args.inputs}")
    if args.img_size is not None and args.img_size < 1:
        return fail(prog, f"--img-size must be >= 1, got {args.img_size}")
    problem = check_common_flags(args)
    if problem:
        return fail(prog, problem)
    try:
        results = unit_reach_table(args.variant, args.img_size, units=args.units, stages=args.stages,
                                   inputs=args.inputs, per_phase=args.queries_per_phase or None, seeds=args.seeds,
                                   input_seed=args.input_seed, init=args.init, identity=not args.no_identity,
                                   metric=args.metric, dtype=DTYPES[args.dtype])
    except (ValueError, KeyError) as error:
        return fail(prog, str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
    title = (f"{args.variant} at {args.img_size or PRESETS[args.variant].get('img_size', 224)} px, init={args.init}, "
             f"init seeds {' '.join(map(str, args.seeds))}, {args.inputs} random inputs")
    print(render({title: results}, args.format, args.metric, not args.no_identity, resamples=args.resamples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
