# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Complexity and receptive field: the paper's claim, both halves
#
# SepViT's efficiency argument: one SepViT block (DWA + PWA) costs about half of Swin's two-block pattern
# (W-MSA + SW-MSA) and of Twins' (LSA + GSA) *with a comparable receptive field*. Sections 1–5 check the cost,
# counted three ways; sections 6–7 measure the receptive field, at init and after training.
# Measured time against MACs is in `05_latency.ipynb`.
#
# **Conventions.** All counts are **MACs** (one multiply-add = 1; FLOPs would be 2×), batch 1.
# *analytic* = the paper's formulas (Linear/conv weights + attention matmuls, no norms, no biases), composed by
# `analysis.complexity` over the geometry the code really runs (padding, single windows, window tokens).
# *fvcore* = fvcore with an op handle for `scaled_dot_product_attention`; it also counts LayerNorm at 5 MACs per
# element, so *analytic + norms* is fvcore's convention (equal, tested). *ptflops* (aten backend, math attention
# kernel) counts bias adds and no norms. Published numbers come from their sources, each with its own convention.
#
# Every statement of a result below is printed from the numbers of this run. All computation lives in
# `analysis/` (`complexity.py`, `receptive_field.py`, tested in `tests/`) and `experiments/` (the trained
# models); this notebook calls it and plots. `SEPVIT_SMOKE=1` (CI) counts the smaller whole models only, averages
# the receptive fields over fewer inputs and trains throw-away models (which stay at chance).

# %%
import contextlib
import io
import os
import warnings

warnings.filterwarnings("ignore")  # before the imports: tqdm warns at import time in a kernel without widgets

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from IPython.display import Markdown, display
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from analysis import complexity as cx
from analysis.receptive_field import comparable, format_comparison, model_erf_table, plot_erf, unit_erf_table
from experiments import zoo
from experiments.stats import chance_interval
from experiments.trained_erf import validation_images

torch.set_num_threads(1)
SMOKE = os.environ.get("SEPVIT_SMOKE", "0") == "1"
sns.set_theme(style="whitegrid", context="notebook")
pd.set_option("display.width", 160)
pd.set_option("display.max_columns", 30)


def legend_outside(ax, **kwargs):
    """Legends sit to the right of the axes, never on the data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, **kwargs)


# %% [markdown]
# ## 1 · One SepViT block against a Swin pair, a Twins pair and a global MSA block
#
# At each stage's shape of SepViT-T at 224 px, MLP included. The Swin and Twins pairs are timm's own blocks
# (`SwinTransformerBlock` without and with shift; Twins' `Block` with locally-grouped then global sub-sampled
# attention), the MSA block is timm's ViT block; our `block_pattern` blocks are beside them.

# %%
blocks = pd.DataFrame(cx.block_comparison("sepvit_tiny", 224))
long = []
for _, row in blocks.iterrows():
    for unit in cx.BLOCK_UNITS:
        if row[f"{unit}_analytic"] is None or pd.isna(row[f"{unit}_analytic"]):
            continue
        long.append(dict(stage=int(row["stage"]), map=f"{row['height']}x{row['width']}", C=row["dim"],
                         unit=cx.BLOCK_UNIT_TITLES[unit], fvcore_MMACs=row[unit] / 1e6,
                         analytic_MMACs=row[f"{unit}_analytic"] / 1e6,
                         ratio_to_swin_pair=row[f"{unit}_analytic"] / row["swin_pair_analytic"]))
long = pd.DataFrame(long)
table = long.pivot_table(index="unit", columns="stage", values=["analytic_MMACs", "fvcore_MMACs"], sort=False).round(1)
table

# %%
ratios = blocks[["stage", "height", "dim", "ratio_to_swin_pair_analytic", "ratio_to_swin_pair_attention_only",
                 "ratio_to_swin_pair_fvcore", "ratio_to_twins_pair_analytic", "ratio_to_twins_pair_fvcore"]]
ratios.round(3)

# %%
curves = [("ratio_to_swin_pair_fvcore", "/ Swin pair (fvcore)", "o"),
          ("ratio_to_swin_pair_analytic", "/ Swin pair (analytic)", "s"),
          ("ratio_to_swin_pair_attention_only", "/ Swin pair (analytic, attention only)", "^"),
          ("ratio_to_twins_pair_fvcore", "/ Twins pair (fvcore)", "D"),
          ("ratio_to_twins_pair_analytic", "/ Twins pair (analytic)", "v")]
fig, ax = plt.subplots(figsize=(8.5, 3.8))
for column, label, marker in curves:
    ax.plot(blocks["stage"], blocks[column], marker=marker, label=label)
ax.axhline(0.5, color="k", ls="--", lw=1, label="one half")
ax.set(xticks=blocks["stage"], ylim=(0, 1), xlabel="stage of SepViT-T at 224 px",
       ylabel="MACs of one SepViT block / a pair", title="The halving, on a linear axis")
legend_outside(ax)
plt.tight_layout()
plt.show()

# %%
shown = ["SepViT block (DSSA, window M)", "SepViT GSA block (window gM)", "Swin pair (timm W-MSA + SW-MSA)",
         "Twins pair (timm LSA + GSA)", "global MSA block (timm ViT)"]
palette = dict(zip(shown, sns.color_palette(n_colors=len(shown))))
fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
for ax, (stage, part) in zip(axes, long[long.unit.isin(shown)].groupby("stage")):
    part = part.set_index("unit").reindex([u for u in shown if u in set(part.unit)])
    ax.bar(range(len(part)), part.analytic_MMACs, color=[palette[u] for u in part.index])
    ax.axhline(part.loc[shown[2], "analytic_MMACs"] / 2, ls="--", color="k", lw=1)
    ax.set(xticks=[], title=f"stage {stage}: {part['map'].iloc[0]}, C = {part['C'].iloc[0]}")
axes[0].set_ylabel("MMACs per block (analytic)")
handles = [Patch(color=palette[u], label=u) for u in shown] + [Line2D([], [], ls="--", color="k", label="half a Swin pair")]
fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=8, frameon=False)
fig.suptitle("One block (or pair) at each stage shape of SepViT-T, 224 px, MLP included; linear axes")
plt.tight_layout()
plt.show()

# %%
low, high = blocks["ratio_to_swin_pair_fvcore"].min(), blocks["ratio_to_swin_pair_fvcore"].max()
near_half = blocks.loc[(blocks["ratio_to_swin_pair_fvcore"] - 0.5).abs() <= 0.05, "stage"].tolist()
twins_low, twins_high = blocks["ratio_to_twins_pair_fvcore"].min(), blocks["ratio_to_twins_pair_fvcore"].max()
exact = (blocks["sepvit_block"] == blocks["sepvit_block_analytic_norms"]).all()
lines = [(f"One SepViT block costs {low:.3f}–{high:.3f} of a timm Swin pair (fvcore) and {twins_low:.3f}–{twins_high:.3f} "
          f"of a timm Twins pair, over stages 1–{len(blocks)}; within 0.05 of one half at stage(s) "
          f"{', '.join(map(str, near_half)) or 'none'}."),
         f"fvcore {'equals' if exact else 'differs from'} the analytic count with norms at every stage."]
for _, b in blocks.iterrows():
    (parts,) = cx.window_group_sweep("sepvit_tiny", stage=int(b["stage"]) - 1, windows=[int(b["window"])], groups=())
    excess = (b["sepvit_block_analytic"] - b["swin_pair_analytic"] / 2) / 1e6
    windows = -(-b["height"] // b["window"]) * -(-b["width"] // b["window"])
    pwa = (f"its PWA (attention between {windows} windows) costs {parts['pwa'] / 1e6:.1f} MMACs" if windows > 1
           else "one window: no window token, no PWA")
    lines.append(f"Stage {b['stage']}: the SepViT block is {excess:+.1f} MMACs from half a Swin pair; {pwa}.")
display(Markdown("\n".join(f"- {line}" for line in lines)))

# %% [markdown]
# ## 2 · MACs against input resolution for each attention kind
#
# On the stride-4 map (stage 1 of SepViT-T / Swin-T, C = 96, window 7, Twins sr = 8), attention units only
# (no MLP). By the formulas, global MSA grows with (HW)² and windowed attention linearly in HW. SepViT's PWA has
# two terms: the window-to-window map N²C and the mixing of window features N·HW·C = (HW)²C/M², quadratic in the
# tokens too, only M² times smaller. The dotted lines mark where that term reaches DWA's attention matmuls
# (HW = 2(M²+1)²) and the block's attention linears (HW = 4CM²). (Twins' LSA is Swin's W-MSA formula: left out.)

# %%
# Resolutions in steps of 28 px keep the stride-4 map a whole number of 7x7 windows (no padding steps).
resolutions = list(range(112, 1009, 28)) + [1024]
sweep = pd.DataFrame(cx.attention_vs_resolution(resolutions, dim=96, stride=4, window=7, sr_ratio=8))
cross = cx.pwa_crossovers(dim=96, window=7, stride=4)
fig, ax = plt.subplots(figsize=(10, 4.5))
sns.lineplot(data=sweep[sweep.kind != "Twins LSA"], x="resolution", y="macs", hue="kind", style="kind", ax=ax)
ax.set(yscale="log", xlabel="input resolution (px, square)", ylabel="MACs (analytic, log scale)",
       title="Attention units on the stride-4 map: quadratic global vs linear windowed")
for key, label in (("image_side_vs_dwa_matmuls", "PWA N·HW·C = DWA matmuls"),
                   ("image_side_vs_attention_linears", "PWA N·HW·C = 4HWC²")):
    ax.axvline(cross[key], ls=":", c="k")
    ax.text(cross[key] + 5, ax.get_ylim()[0] * 3, label, rotation=90, fontsize=8)
legend_outside(ax)
plt.tight_layout()
plt.show()
pd.Series(cross).round(0)

# %%
share = sweep.pivot_table(index="resolution", columns="kind", values="macs")
share = (share["SepViT PWA"] / share["SepViT DSSA (DWA + PWA + proj)"]).rename("PWA share of DSSA")
print(f"PWA's share of the DSSA unit's MACs: {share.iloc[0]:.3f} at {share.index[0]} px, "
      f"{share.loc[224]:.3f} at 224 px, {share.iloc[-1]:.3f} at {share.index[-1]} px")
share.iloc[::4].round(3)

# %% [markdown]
# ## 3 · MACs against window size and group size for a SepViT stage
#
# One SepViT block at stage 1 (56×56, C = 96) and stage 2 (28×28, C = 192) of SepViT-T at 224, window M from 2 to
# the map size (padded to whole windows). DWA's matmuls grow like 2·HW·M²·C, PWA's mixing shrinks like (HW)²C/M²:
# on maps of whole windows the attention cost is smallest near M⁴ ≈ HW/2; padding and the window token move it.
# The GSA blocks of stages 2 and 3 use a group of g×g windows (window gM); stage 1 has none in SepViT and is
# shown for comparison.

# %%
win = pd.concat([pd.DataFrame(cx.window_group_sweep("sepvit_tiny", stage=s)).assign(stage=s + 1) for s in (0, 1)])
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
for ax, stage in zip(axes[:2], (1, 2)):
    part = win[(win.sweep == "window") & (win.stage == stage)].melt(
        id_vars=["window"], value_vars=["dwa", "pwa", "proj", "mlp", "block"], var_name="part", value_name="macs")
    sns.lineplot(data=part, x="window", y="macs", hue="part", marker="o", ax=ax, legend=stage == 2)
    ax.set(yscale="log", title=f"stage {stage} block vs window size M", ylabel="MACs (analytic, log scale)")
legend_outside(axes[1])
groups = win[win.sweep == "group"].assign(label=lambda d: "g=" + d.group.astype(str), stage=lambda d: d.stage.astype(str))
sns.barplot(data=groups, x="label", y="block", hue="stage", ax=axes[2])
axes[2].set(title="GSA block vs group size g (window 7g)", ylabel="MACs (analytic)", xlabel="group size")
legend_outside(axes[2], title="stage")
plt.tight_layout()
plt.show()
attention = win[win.sweep == "window"].assign(attention=lambda d: d.dwa + d.pwa)
for stage, part in attention.groupby("stage"):
    best = part.loc[part.attention.idxmin()]
    print(f"stage {stage} ({best.height}x{best.width}): DWA + PWA smallest at window {best.window} "
          f"(M^4 = HW/2 gives {(best.height * best.width / 2) ** 0.25:.1f}); the model uses 7")
win[win.sweep == "group"][["stage", "group", "window", "dwa", "pwa", "block"]]

# %% [markdown]
# ## 4 · Whole models: analytic, fvcore and ptflops side by side, and the published values
#
# Every model at 224 px, counted by fvcore (with the SDPA handle) and ptflops, and, for ours, by the formulas.
# A whole-model count can be read in four conventions that differ by one term each: **fvcore** (weights +
# attention matmuls + LayerNorm), the **paper convention** (fvcore − norms: weights + attention matmuls),
# **without attention matmuls** (weights only), and **ptflops** (weights + bias adds, no norms). A published figure
# "matches" a convention when that count rounds to it at the precision it is published with. Twins-SVT-S is
# quoted twice: 2.8 G in Twins' README and 2.9 G in the SepViT paper's comparison table.

# %%
names = ["sepvit_lite", "sepvit_tiny", "sepvit_small", "sepvit_base",
         "swin_tiny_patch4_window7_224", "swin_small_patch4_window7_224", "swin_base_patch4_window7_224",
         "twins_svt_small", "twins_svt_base", "twins_svt_large"]
if SMOKE:  # CI: the four smaller models only (the larger ones take most of the counting time)
    names = ["sepvit_lite", "sepvit_tiny", "swin_tiny_patch4_window7_224", "twins_svt_small"]
measured = cx.model_table(names, 224, with_ptflops=True)
models = pd.DataFrame(measured)
side_by_side = pd.DataFrame({
    "model": models.model,
    "params (M)": models.params / 1e6,
    "analytic": models.macs_analytic / 1e9,
    "analytic + norms": models.macs_analytic_norms / 1e9,
    "fvcore": models.macs_fvcore / 1e9,
    "ptflops": models.macs_ptflops / 1e9,
    "fvcore − norms": models.macs_fvcore_no_norms / 1e9,
    "norms": models.fvcore_norms / 1e9,
    "attention matmuls": models.fvcore_attention_matmuls / 1e9,
}).round(3)
print("GMACs (1e9 multiply-adds), batch 1; analytic exists for our models only")
side_by_side

# %%
comparison = cx.published_comparison(measured)
published = pd.DataFrame([{
    "model": c["model"], "source": c["source"], "published G": c["published_gmacs"],
    **{cx.COUNT_CONVENTIONS[k]: c[f"{k}_gmacs"] for k in cx.COUNT_CONVENTIONS},
    "matches": ", ".join(c["matches"]) or "none", "published params (M)": c["published_params_m"],
    "params (M)": c["params_m"]} for c in comparison]).round(3)
published

# %%
display(Markdown("\n".join(f"- {line}" for line in cx.published_sentences(comparison))))

# %%
markers = dict(zip(cx.COUNT_CONVENTIONS, ["o", "s", "X", "^"]))
fig, ax = plt.subplots(figsize=(10, 0.45 * len(comparison) + 1.5))
for i, c in enumerate(comparison):
    half_step = 100 * 0.5 * 10 ** -cx.published_precision(c["published_gmacs"]) / c["published_gmacs"]
    ax.fill_betweenx([i - 0.35, i + 0.35], -half_step, half_step, color="0.85", lw=0,
                     label="rounds to the published figure" if i == 0 else None)
    for key, marker in markers.items():
        if c[f"{key}_gmacs"] is not None:
            ax.scatter(100 * (c[f"{key}_gmacs"] / c["published_gmacs"] - 1), i, marker=marker, s=40,
                       color=sns.color_palette()[list(markers).index(key)],
                       label=cx.COUNT_CONVENTIONS[key] if i == 0 else None, zorder=3)
ax.axvline(0, color="k", lw=0.8)
ax.set_yticks(range(len(comparison)), [f"{c['model']}\n{c['source']}" for c in comparison], fontsize=7)
ax.invert_yaxis()
ax.set(xlabel="count / published figure − 1 (%)", title="Which counting convention each published figure used")
legend_outside(ax)
plt.tight_layout()
plt.show()

# %%
ref = side_by_side.set_index("model")
tiny = ref.loc["sepvit_tiny", "fvcore − norms"]
for name in ("swin_tiny_patch4_window7_224", "twins_svt_small"):
    print(f"{name} / sepvit_tiny, one convention (fvcore − norms): {ref.loc[name, 'fvcore − norms'] / tiny:.3f}")
gap = (models.macs_ptflops - models.macs_fvcore_no_norms) / models.macs_fvcore_no_norms
print(f"ptflops − (fvcore − norms), the bias adds: {100 * gap.min():.2f}–{100 * gap.max():.2f} % of the paper convention")
ours = models[models.macs_analytic.notna()]
print(f"analytic == fvcore − norms for all {len(ours)} of our models: {bool((ours.macs_analytic == ours.macs_fvcore_no_norms).all())}")

# %% [markdown]
# ## 5 · Our backbone under each block pattern, equal widths and depths
#
# SepViT-T's stem, widths, depths, CPE and head with each `block_pattern`: "sepvit" (one SepViT block per block,
# GSA alternating), "swin" (W-MSA / SW-MSA), "twins" (LSA / GSA, sr 8/4/2/1) and "msa" (global attention).
# Analytic against resolution, and fvcore at 224 as a cross-check. At equal depths a SepViT block replaces one Swin
# block (not a pair), so the totals are close: the paper's saving is that one SepViT block does the local + global
# work of a two-block pair.

# %%
sizes = [224, 288, 384, 512] if SMOKE else [224, 256, 288, 320, 384, 448, 512]
patterns = pd.DataFrame(cx.pattern_comparison("sepvit_tiny", sizes, patterns=("sepvit", "swin", "twins", "msa")))
by_pattern = pd.DataFrame([cx.measure_model("sepvit_tiny", 224, with_ptflops=False, block_pattern=p)
                           | dict(block_pattern=p) for p in ("sepvit", "swin", "twins", "msa")])
at224 = patterns[patterns.img_size == 224].merge(by_pattern[["block_pattern", "params", "macs_fvcore"]], on="block_pattern")
at224 = at224.assign(params_M=at224.params / 1e6, analytic_G=at224.macs_analytic / 1e9,
                     analytic_norms_G=at224.macs_analytic_norms / 1e9, fvcore_G=at224.macs_fvcore / 1e9)
fig, ax = plt.subplots(figsize=(8, 4))
sns.lineplot(data=patterns.assign(GMACs=patterns.macs_analytic / 1e9), x="img_size", y="GMACs",
             hue="block_pattern", marker="o", ax=ax)
ax.set(yscale="log", xlabel="input resolution (px)", ylabel="GMACs (analytic, log scale)",
       title="SepViT-T backbone under each block pattern")
legend_outside(ax, title="block_pattern")
plt.tight_layout()
plt.show()
at224[["block_pattern", "params_M", "analytic_G", "analytic_norms_G", "fvcore_G"]].round(3)

# %% [markdown]
# ## 6 · The receptive-field half of the claim, at init
#
# Effective receptive field (Luo et al. 2016, `analysis.receptive_field`): the gradient of the centre output
# pixel (summed over channels) with respect to every input pixel, |·| summed over channels, averaged over random
# input maps and normalised to sum 1. Units as above, at SepViT-T's stage shapes (224 px), the authors' init
# (trunc-normal 0.02). Numbers per unit: **r90**, the radius (Chebyshev, feature-map pixels) holding 90 % of the
# gradient mass; **mean distance** from the query; the share **outside** the query's own 7×7 window; the **self**
# share at the query; **reach**, the share of pixels with any gradient. Two readings: *with the shortcut path*
# (the gradient of y[q], whose all-shortcut path puts a spike at the query) and *without it* (y[q] − x[q]).
# Verdict per stage (`receptive_field.comparable`): the SepViT block's field is comparable when its mean distance
# is at least half the pair's.
#
# At init, attention is almost uniform: the maps show where gradient *can* flow (window, shifted window, the same
# position in every window for PWA, sub-sampled cells for Twins' GSA, everywhere for MSA), not what is learnt.

# %%
ERF_INPUTS = 2 if SMOKE else 8
PLOTTED = ["sepvit_block", "sepvit_gsa_block", "swin_pair", "twins_pair", "msa_block"]
erf_init = {"with shortcut": unit_erf_table("sepvit_tiny", 224, inputs=ERF_INPUTS),
            "without shortcut": unit_erf_table("sepvit_tiny", 224, inputs=ERF_INPUTS, identity=False)}


def erf_frame(results_by_reading, units):
    """One row per (stage, unit): the unit's MACs and the ERF numbers of each reading side by side."""
    frames = []
    for reading, results in results_by_reading.items():
        frame = pd.DataFrame([r.row() for r in results if r.unit in units]).set_index(["stage", "unit"])
        if not frames:
            frames.append(frame[["height"]].rename(columns={"height": "map side"}).assign(MMACs=frame.macs / 1e6))
        numbers = frame[["radius_90", "mean_distance", "outside_window", "self_share", "reach"]]
        frames.append(numbers.add_prefix(f"{reading}: "))
    return pd.concat(frames, axis=1).round(3)


erf_frame(erf_init, PLOTTED)

# %%
fig = plot_erf([r for r in erf_init["with shortcut"] if r.unit in PLOTTED],
               title=f"ERF at init, SepViT-T stage shapes (224 px), with the shortcut path; mean of {ERF_INPUTS} random inputs")
plt.show()

# %%
fig, axes = plt.subplots(2, 4, figsize=(14, 6.2), sharex="col")
for row, (reading, results) in enumerate(erf_init.items()):
    for ax, stage in zip(axes[row], range(1, 5)):
        for r in results:
            if r.stage == stage and r.unit in PLOTTED:
                ax.scatter(r.macs / 1e6, r.stats["mean_distance"], color=sns.color_palette()[PLOTTED.index(r.unit)],
                           s=50, label=cx.BLOCK_UNIT_TITLES[r.unit])
        ax.set(ylim=(0, None), title=f"stage {stage}, {reading}", xlim=(0, None))
        if row == 1:
            ax.set_xlabel("MMACs (analytic)")
    axes[row, 0].set_ylabel("mean distance (px)")
handles = [Line2D([], [], marker="o", ls="", color=sns.color_palette()[i], label=cx.BLOCK_UNIT_TITLES[u])
           for i, u in enumerate(PLOTTED)]
fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=8, frameon=False)
fig.suptitle("Receptive field (mean distance) against cost at init; linear axes from zero")
plt.tight_layout()
plt.show()


# %%
VERDICTS = {}  # "phase, reading" -> per stage: comparable to every pair?


def verdict_lines(results, label, timm_pairs_only=True):
    """One verdict per stage (kept in VERDICTS), then format_comparison's sentences (at init: against timm's pairs)."""
    verdicts = [v for v in comparable(results) if not (timm_pairs_only and v["pair"].startswith("ours_"))]
    per_stage = pd.DataFrame(verdicts).groupby("stage")["comparable"].all() if verdicts else pd.Series(dtype=bool)
    VERDICTS[label] = per_stage
    summary = "; ".join(f"stage {s}: {'comparable' if ok else 'NOT comparable'}" for s, ok in per_stage.items())
    return [f"**{label}** — {summary or 'no stage with a SepViT block and a pair'}"] + format_comparison(verdicts).splitlines()


for reading, results in erf_init.items():
    display(Markdown("\n".join(f"- {line}" for line in verdict_lines(results, f"At init, {reading}"))))
ours_vs_timm = [abs(a.stats["mean_distance"] - b.stats["mean_distance"])
                for a in erf_init["with shortcut"] for b in erf_init["with shortcut"]
                if a.stage == b.stage and a.unit == f"ours_{b.unit}"]
print(f"our block_pattern units vs timm's at init: largest difference in mean distance {max(ours_vs_timm):.2g} px "
      f"over {len(ours_vs_timm)} stage/unit pairs (the trained models below use ours)")

# %% [markdown]
# ## 7 · The receptive field after training
#
# The zoo's models (`experiments/zoo.py`): our backbone under the "sepvit", "swin", "twins" and "msa" patterns,
# each an ordinary runner run on the built-in synthetic task at one shared budget. Their blocks are measured on the
# inputs those blocks really receive from 64 validation images (`model_erf_table`), beside the same configurations
# freshly initialised (seed 0) on the same images. The models are the runner's default size (`sepvit_nano_32`:
# 32 px, stage maps 32/16/8/4, window 4: SepViT-T's window schedule); stages 1 and 4 have one block, so the Swin and
# Twins models have a pair at stages 2 and 3 only. A model whose top-1 lies inside the 95 % band that guessing
# reaches is not interpreted. The budget is shared, the accuracies it buys are not: each model's top-1 is printed
# beside its numbers.

# %%
with contextlib.redirect_stderr(io.StringIO()):  # a model missing from the store is trained here: no progress lines
    trained = zoo.trained(["sepvit", "swin", "twins", "msa"], smoke=SMOKE)
facts = []
for name, m in trained.items():
    lo, hi = chance_interval(m.num_classes, m.val_size)
    facts.append(dict(model=name, block_pattern=m.model.config.block_pattern, top1=m.top1, best_top1=m.best_top1,
                      chance_band=f"{lo:.1f}–{hi:.1f} %", at_chance=m.top1 <= hi, val_images=m.val_size,
                      trained_now=m.trained_here))
facts = pd.DataFrame(facts)
for f in facts.itertuples():
    print(f"{f.model:7s} top-1 {f.top1:5.1f} % (best {f.best_top1:.1f} %), chance band {f.chance_band} on {f.val_images} "
          f"images: {'AT CHANCE' if f.at_chance else 'above chance'}")
interpretable = facts.loc[~facts.at_chance, "model"].tolist()
for f in facts[facts.at_chance].itertuples():
    display(Markdown(f"**Warning:** `{f.model}` is at chance (top-1 {f.top1:.1f} % inside {f.chance_band}): "
                     "its receptive field is not interpreted and it is left out of the verdicts."))
facts

# %%
any_model = next(iter(trained.values())).model
images = validation_images("synthetic", 64, any_model.config.img_size)
erf_trained, erf_fresh = {}, {}
for identity, reading in ((True, "with shortcut"), (False, "without shortcut")):
    erf_trained[reading] = {n: model_erf_table(m.model, images, identity=identity) for n, m in trained.items()}
    fresh = {}
    for n, m in trained.items():
        torch.manual_seed(0)
        fresh[n] = model_erf_table(m.model.config.build().eval(), images, identity=identity)
    erf_fresh[reading] = fresh
rows = []
for reading in erf_trained:
    for n in trained:
        for t, u in zip(erf_trained[reading][n], erf_fresh[reading][n]):
            rows.append(dict(reading=reading, model=n, stage=t.stage, unit=t.unit, blocks=t.blocks,
                             r90=t.stats["radius_90"], mean_distance=t.stats["mean_distance"],
                             outside_window=t.stats["outside_window"], self_share=t.stats["self_share"],
                             untrained_r90=u.stats["radius_90"], untrained_mean_distance=u.stats["mean_distance"],
                             MMACs=t.macs / 1e6, interpreted=n in interpretable))
trained_table = pd.DataFrame(rows).round(3)
trained_table

# %%
shown_models = interpretable or (list(trained) if SMOKE else [])
if shown_models:
    maps = [r for n in shown_models for r in erf_trained["with shortcut"][n]]
    caption = ("SMOKE RUN: these models are at chance; the maps only exercise the code" if not interpretable else
               f"trained ({', '.join(f'{n} {trained[n].top1:.0f} %' for n in shown_models)} top-1)")
    fig = plot_erf(maps, title=f"ERF of the trained blocks on {len(images)} validation images, with the shortcut path; {caption}")
    plt.show()
else:
    print("No trained model is above chance: no map is drawn.")

# %%
for reading in erf_trained:
    results = [r for n in interpretable for r in erf_trained[reading][n]]
    if "sepvit" not in interpretable:
        display(Markdown(f"- **After training, {reading}** — no verdict: the SepViT model is at chance."))
        continue
    lines = verdict_lines(results, f"After training, {reading}", timm_pairs_only=False)
    display(Markdown("\n".join(f"- {line}" for line in lines)))
moved = trained_table[trained_table.interpreted & (trained_table.reading == "without shortcut")]
if len(moved):
    grew = moved.assign(change=moved.mean_distance - moved.untrained_mean_distance)
    print("mean distance after training minus untrained (without shortcut), px:")
    print(grew.pivot_table(index="unit", columns="stage", values="change").round(2).to_string())

# %% [markdown]
# ### The receptive-field half of the claim, stage by stage
#
# "comparable" = the SepViT block's mean distance is at least half that of every pair it is compared with at that
# stage (at init: timm's Swin and Twins pairs at SepViT-T's shapes; after training: our Swin and Twins pattern pairs
# in the trained models, stages that have a pair). Empty: no comparison at that stage.

# %%
overview = pd.DataFrame(VERDICTS).T.rename_axis(index="measured", columns="stage")
overview = overview.apply(lambda column: column.map({True: "comparable", False: "NOT comparable"})).fillna("–")
not_comparable = [f"{label}, stage {stage}" for label, per_stage in VERDICTS.items()
                  for stage, ok in per_stage.items() if not ok]
display(Markdown(f"- Comparable in {sum(int(v.sum()) for v in VERDICTS.values())} of "
                 f"{sum(len(v) for v in VERDICTS.values())} stage verdicts"
                 + (f"; not comparable: {'; '.join(not_comparable)}." if not_comparable else ".")))
overview
