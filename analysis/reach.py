"""Spatial reach of a unit, with intervals, and the verdict "comparable receptive field" (SepViT block / pair).

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

The gradient maps and the numbers of one map (`off_query_stats`) are `analysis.erf`'s.
"""
from __future__ import annotations

import argparse
import copy
import json
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from sepvit.config import EXECUTION_FIELDS, SepViTConfig
from sepvit.layers import window_geometry

from analysis.analytic_macs import block_macs
from analysis.complexity_tables import to_csv
from analysis.erf import (DTYPES, METRICS, TrainedUnit, analytic_unit_macs, blocks_label, capture_block_inputs,
                          check_stages, check_units, gradient_maps, initialise, model_units, off_query_stats,
                          preset_config, random_inputs, stage_shapes)
from analysis.units import stage_units

REACH_STATS = ("off_mean_distance", "off_radius_50", "off_radius_90", "self_share")
PRIMARY_STAT = "off_mean_distance"  # what `compare_reach` decides by (module docstring, "Comparable")
EQUIVALENCE_BAND = (0.8, 1.25)  # ratio SepViT / pair counted as equal: +-20 %, symmetric on a log scale


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
    cfg = preset_config(variant, img_size)
    chosen_units = check_units(units)
    shapes = stage_shapes(cfg, cfg.img_size)
    chosen_stages = check_stages(stages, len(shapes))
    macs = analytic_unit_macs(variant, cfg.img_size) if with_macs else {}
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
    if not models:
        raise ValueError("no model to measure")
    cfg: SepViTConfig = models[0].config
    different = [i for i, m in enumerate(models) if computed_by(m.config) != computed_by(cfg)]
    if different:
        raise ValueError(f"the seeds of one measurement must share a configuration: model(s) {different} differ "
                         f"from model 0")
    chosen_stages = check_stages(stages, cfg.num_stages)
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
                                   _stack_seeds(per_seed), macs, blocks_label(unit, with_cpe), label))
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


def stage_ranking(results: Sequence[ReachResult], stat: str = PRIMARY_STAT, **bootstrap: Any) -> list[dict[str, Any]]:
    """Per stage, every unit (with its label) by `stat`, widest first, with intervals (`bootstrap_mean`);
    `clearly_widest`: the widest unit's interval lies above every other unit's (the sanity line: global MSA
    should be that unit wherever it and a windowed unit are measured); `one_window`: the map fits in one window,
    where every unit attends globally and no ranking is expected."""
    out = []
    for stage in sorted({r.stage for r in results}):
        ranked = sorted(((r, *r.summary(stat, **bootstrap)) for r in results if r.stage == stage),
                        key=lambda item: -item[1])
        units = [dict(unit=r.unit, label=r.label, mean=mean, low=low, high=high) for r, mean, low, high in ranked]
        clearly = len(units) > 1 and all(units[0]["low"] > u["high"] for u in units[1:])
        one_window = all(r.height <= r.window and r.width <= r.window for r, *_ in ranked)
        out.append(dict(stage=stage, stat=stat, ranked=units, widest=units[0]["unit"],
                        widest_label=units[0]["label"], clearly_widest=clearly, one_window=one_window))
    return out


def verdict_summary(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Plain sentences over `compare_reach` rows: where the SepViT block is narrower than a pair (interval below
    1), where it is comparable (interval inside `band`), wider, or undecided; stages named, nothing omitted."""
    groups: dict[str, list[str]] = {}
    for c in rows:
        if c["direction"] == "narrower":
            key = "narrower, though comparable (interval inside the band), than" if c["comparable"] else \
                "narrower, and NOT comparable, than"
        elif c["direction"] == "wider":
            key = "wider, though comparable (interval inside the band), than" if c["comparable"] else "wider than"
        elif c["comparable"]:
            key = "comparable to"
        else:
            key = "undecided (interval too wide) against"
        groups.setdefault(key, []).append(f"{c['pair']} at stage {c['stage']} (ratio {c['ratio']:.2f} "
                                          f"[{c['low']:.2f}, {c['high']:.2f}])")
    order = ["narrower, and NOT comparable, than", "narrower, though comparable (interval inside the band), than",
             "comparable to", "wider, though comparable (interval inside the band), than", "wider than",
             "undecided (interval too wide) against"]
    lines = [f"The SepViT block is {key} {'; '.join(groups[key])}." for key in order if key in groups]
    if not rows:
        lines.append("No stage has both a SepViT block and a two-block pair measured on the same inputs.")
    return lines


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



# ================================================================================== shared by the two command lines
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
    return json.dumps(flat, indent=1) if fmt == "json" else to_csv(flat)
