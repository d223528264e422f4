"""ERF tables at the centre query: every compared unit at a stage's shape (at init), the blocks of a trained model
on their real inputs, and the figure of their maps.

One query (the map centre), inputs averaged before normalising (`analysis.erf`: the definition and the numbers,
`erf_stats`). These numbers include the self share, so they do not rank units by reach: `analysis.reach` does.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from sepvit.config import SepViTConfig

from analysis.analytic_macs import block_macs
from analysis.erf import (analytic_unit_macs, blocks_label, capture_block_inputs, centre, check_stages, check_units,
                          erf_map, erf_stats, initialise, model_units, own_window, preset_config, random_inputs,
                          stage_shapes)
from analysis.units import TITLES, stage_units


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



def unit_erf_table(variant: str = "sepvit_tiny", img_size: int | None = None, *, units: Sequence[str] | None = None,
                   stages: Sequence[int] | None = None, inputs: int = 8, seed: int = 0, init: str = "authors",
                   identity: bool = True, metric: str = "chebyshev", dtype: torch.dtype = torch.float32,
                   with_macs: bool = True) -> list[ERFResult]:
    """ERF of every unit of `analysis.units.stage_units` at each stage's shape of `variant` at `img_size`,
    at init (`init`, weights seeded by `seed`), on `inputs` standard-normal maps.

    stages: one-based stage numbers (default all); units: names from `analysis.units.UNITS` (default all).
    """
    cfg = preset_config(variant, img_size)
    size = cfg.img_size
    chosen_units = check_units(units)
    shapes = stage_shapes(cfg, size)
    chosen_stages = check_stages(stages, len(shapes))
    macs = analytic_unit_macs(variant, size) if with_macs else {}
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



def model_erf_table(model: nn.Module, images: torch.Tensor, *, identity: bool = True, metric: str = "chebyshev",
                    dtype: torch.dtype = torch.float32, with_cpe: bool = False,
                    stages: Sequence[int] | None = None) -> list[ERFResult]:
    """ERF of the units of `model_units(model)` on the real inputs those blocks receive from `images`
    (B, C, H, W, normalised as in training); MACs from `analysis.analytic_macs.block_macs` of the blocks run."""
    cfg: SepViTConfig = model.config
    chosen_stages = check_stages(stages, cfg.num_stages)
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
                                 erf_stats(mass, query, cfg.window_size, metric), macs, blocks_label(unit, with_cpe)))
    return results



# ================================================================================== plotting
def plot_erf(results: Sequence[ERFResult], *, vmin: float = 1e-6, vmax: float = 1.0, columns: str = "stage",
             title: str | None = None, cell: float = 1.9):
    """A matplotlib figure of ERF maps: one row per unit, one column per stage (or `columns="unit"` to
    swap), all panels on ONE logarithmic colour scale [vmin, vmax] of the share of gradient mass per
    input pixel, with one colour bar. Shares below vmin show in the darkest colour, exact zeros in white.
    The query is marked with a cross and its own window with a box."""
    # matplotlib (0.4 s to import here) loads only for this figure: the reach command line never draws
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
