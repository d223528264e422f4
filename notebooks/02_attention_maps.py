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
# # 02 · What SepViT attends to
#
# SepViT splits self-attention into two steps (see `sepvit/attention.py`):
#
# - **DWA** (depthwise self-attention) works inside each window, over its pixels plus one *window token*;
#   the token's row of the map says what the token summarises of its window.
# - **PWA** (pointwise self-attention) works across windows: each window token asks every other one, and
#   window *i* mixes in window *j*'s DWA output, at the same relative position, with weight `A[i, j]`.
#
# This notebook records the maps with `sepvit.record_attention` (it works with fused attention: the model
# takes the explicit path only while recording), places them on the image with `analysis.attention`, and
# compares variants: learnable vs zero vs average-pooled window tokens, grouped (GSA) vs plain blocks, and
# SepViT vs the Swin block pattern. All computation is in `analysis/attention.py` (tested in
# `tests/test_attention.py`); this notebook only chooses images and draws.
#
# **Models.** If the ablation runner (`experiments/ablate.py`) has logged a finished run of a variant to MLflow
# (set `SEPVIT_TRACKING_URI` and `SEPVIT_EXPERIMENT`, which may list several experiments separated by commas; by default `<repo>/output/mlflow.db`, experiment
# `sepvit-ablation`), its best checkpoint is loaded. Otherwise each variant is trained here, briefly, on the
# built-in "distant match count" images (`experiments/synthetic.py`) with the runner's own engine, logged to a
# throw-away MLflow store, and loaded back the same way. `SEPVIT_SMOKE=1` (CI) trains only a few steps:
# the pictures then show near-initial attention, which is what the smoke run checks (that everything runs).

# %%
import os
import re
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from skimage import data as skdata
from skimage.transform import resize

import sepvit  # noqa: F401  (registers the models with timm)
from analysis import attention as A
from experiments import synthetic
from experiments.data import build_datasets
from experiments.grids import PAPER_CHAIN
from experiments.logged_models import load_logged_model, matching_runs
from sepvit import SepViTConfig, record_attention

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # mlflow is imported later, lazily
SMOKE = os.environ.get("SEPVIT_SMOKE", "0") == "1"
torch.set_num_threads(int(os.environ.get("SEPVIT_THREADS", "1")))  # the machine is shared: one thread each
ROOT = Path.cwd() if (Path.cwd() / "sepvit").is_dir() else Path.cwd().parent
EXPERIMENT = os.environ.get("SEPVIT_EXPERIMENT", "sepvit-ablation")
_default_db = ROOT / "output" / "mlflow.db"
RUNNER_URI = os.environ.get("SEPVIT_TRACKING_URI") or (f"sqlite:///{_default_db}" if _default_db.is_file() else None)
# Training budget for variants that are not in MLflow (same for every variant, so they compare fairly).
TRAIN = (dict(epochs=1, train_size=64, val_size=64) if SMOKE
         else dict(epochs=int(os.environ.get("SEPVIT_ATTN_EPOCHS", 3)), train_size=800, val_size=256))
pd.set_option("display.precision", 3)
plt.rcParams["figure.dpi"] = 80
start_time = time.time()
print(f"smoke={SMOKE}  runner store={RUNNER_URI or 'none'}  in-notebook training: {TRAIN}")

# %% [markdown]
# ## The variants
#
# All are `sepvit_nano_32`, the runner's default (32 px input, stem stride 1, window 4): stage maps 32/16/8/4 px
# = 8/4/2/1 windows per side, the window schedule SepViT-T has at 224 px, so stage 1 has 64 windows and PWA is
# 64×64 there. The Swin variant is the first step of the runner's `--grid paper` chain (Swin pattern with CPE,
# plain patch embedding), so that the runner's runs of it are found.

# %%
BASE = SepViTConfig.preset("sepvit_nano_32")
VARIANTS = {
    "learnable tokens": {},
    "zero tokens": {"window_token": "zero"},
    "avgpool tokens": {"window_token": "avgpool"},
    "plain blocks (no GSA)": {"gsa": False},
    "Swin pattern": dict(PAPER_CHAIN[0][1]),
}
CONFIGS = {name: BASE.replace(**changes) for name, changes in VARIANTS.items()}


def runner_model(cfg):
    """(model, description) of the best finished runner run with exactly this config, or None."""
    if RUNNER_URI is None:
        return None
    from experiments.report import load_runs

    found = []
    for experiment in EXPERIMENT.split(","):
        try:
            found.append(load_runs(RUNNER_URI, experiment.strip()))
        except ValueError:  # no such experiment in that store
            continue
    runs = matching_runs(pd.concat(found, ignore_index=True), cfg) if found else pd.DataFrame()
    if runs.empty:
        return None
    row = runs.iloc[0]
    description = f"runner run {row['run_id'][:8]}, best top-1 {row['best_top1']:.1f} %"
    return load_logged_model(RUNNER_URI, row["run_id"]), description


def train_here(named_configs):
    """Train each config briefly with the runner's engine, log to a temporary MLflow store, load it back."""
    from experiments.run import train_and_evaluate
    from workbench.tracking import Tracker
    from experiments.train_config import TrainConfig

    out = Path(tempfile.mkdtemp(prefix="attention-maps-"))
    uri = f"sqlite:///{out / 'mlflow.db'}"
    tracker = Tracker(uri, "attention-maps", artifact_root=out / "mlartifacts")
    datasets = build_datasets("synthetic", img_size=32, train_size=TRAIN["train_size"], val_size=TRAIN["val_size"])
    loaded = {}
    for name, cfg in named_configs.items():
        train_cfg = TrainConfig(epochs=TRAIN["epochs"], batch_size=32, warmup_epochs=0, output=str(out), seed=0)
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower())
        result = train_and_evaluate(cfg, train_cfg, tracker, run_name=name, run_dir=out / slug, datasets=datasets)
        model = load_logged_model(uri, result.run_id)
        loaded[name] = (model, f"trained here: {TRAIN['epochs']} epoch(s) x {TRAIN['train_size']} images, "
                               f"val top-1 {result.top1:.1f} %")
    return loaded


MODELS = {}
for name, cfg in CONFIGS.items():
    found = runner_model(cfg)
    if found is not None:
        MODELS[name] = found
missing = {name: cfg for name, cfg in CONFIGS.items() if name not in MODELS}
t0 = time.time()
MODELS.update(train_here(missing) if missing else {})
print(f"trained {len(missing)} variant(s) here in {time.time() - t0:.0f} s")
for name in CONFIGS:
    print(f"{name:24s} {MODELS[name][1]}")

# %%
# The runner's learning-curve plot switched matplotlib to Agg: back to inline figures.
# %matplotlib inline

# %% [markdown]
# ## Images and recording
#
# Eight validation images of the built-in task. Each holds ten 3×3 glyphs in cells that coincide with the
# stage-1 windows: one hollow **ring** (the reference) and nine filled squares; the label counts how many
# squares have the ring's colour. A model can only solve it if windows exchange information before the
# pooled head, which PWA does from stage 1 on.

# %%
train_ds, val_ds, info = build_datasets("synthetic", img_size=32, train_size=8, val_size=8)
images = torch.stack([val_ds[i][0] for i in range(8)])
layouts = [synthetic.sample_layout(0, "val", i) for i in range(8)]
display_images = [A.to_display_image(x, info.mean, info.std) for x in images]


def cell_centre(cell: int) -> tuple[int, int]:
    r, c = divmod(int(cell), synthetic.GRID)
    return r * synthetic.CELL + 1, c * synthetic.CELL + 1  # the glyph's middle pixel


def record(model, x):
    with torch.no_grad(), record_attention(model) as maps:
        logits = model(x)
    return maps, logits


RECORDS = {name: record(model, images)[0] for name, (model, _) in MODELS.items()}
for kind_counts in [pd.Series([r["kind"] for r in RECORDS["learnable tokens"]]).value_counts()]:
    print("records of the learnable-token model:", dict(kind_counts))
IMG = 0
ref_px = cell_centre(layouts[IMG]["cells"][0])
layout = layouts[IMG]
copies = [divmod(int(c), 8) for c, s in zip(layout["cells"][1:], layout["kinds"][1:]) if s == layout["kinds"][0]]
print(f"image {IMG}: label {layout['label']}, reference ring in cell {divmod(int(layout['cells'][0]), 8)} "
      f"(pixel {ref_px}), squares of its colour in cells {copies}")

# %% [markdown]
# ## Window tokens and PWA in stage 1 (learnable tokens)
#
# Left: the image, reference marked. Middle: what each window token attends to inside its window (DWA row 0,
# mean over heads; white lines = windows). Right: PWA seen from the reference's window, direction "to": how much
# every window reads from the reference window (`A[j, ref]`). If the model has learnt to broadcast the reference,
# that map lights up everywhere; a row of the PWA matrix that is flat means a window mixes all windows equally.

# %%
recs = RECORDS["learnable tokens"]
dwa1 = A.select(recs, "dwa", "stages.0.blocks.0")[0]
pwa1 = A.select(recs, "pwa", "stages.0.blocks.0")[0]
fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
axes[0].imshow(display_images[IMG])
axes[0].plot(ref_px[1], ref_px[0], "x", color="cyan", mew=2)
axes[0].set_title("input (x = the reference ring)", fontsize=9)
axes[0].axis("off")
A.plot_window_token_attention(display_images[IMG], dwa1, batch=IMG, ax=axes[1])
A.plot_query_attention(display_images[IMG], pwa1, ref_px, batch=IMG, ax=axes[2], direction="to",
                       title="stage-1 PWA: A[window, reference window]")
plt.tight_layout()

# %%
fig, axes = plt.subplots(1, 2, figsize=(14, 6.2), gridspec_kw=dict(width_ratios=[1.6, 1]))
A.plot_pwa_heatmap(pwa1, batch=IMG, ax=axes[0], title="stage-1 PWA (64 windows, mean of heads)")
A.plot_pwa_heatmap(A.select(recs, "pwa", "stages.1.blocks.0")[0], batch=IMG, ax=axes[1],
                   title="stage-2 PWA (16 windows)")
plt.tight_layout()
frame = A.pwa_matrix(pwa1, batch=IMG)
print("stage-1 PWA: windows most attended to (mean over query windows):")
print(frame.mean(axis=0).sort_values(ascending=False).head(5).round(4).to_string())
print(f"reference window {divmod(int(layouts[IMG]['cells'][0]), 8)} gets "
      f"{frame.mean(axis=0).iloc[int(layouts[IMG]['cells'][0])]:.4f} on average (uniform: {1 / 64:.4f})")

# %% [markdown]
# Does PWA single out the reference ring's window? For each of the eight images: the stage-1 PWA attention the
# reference window receives (mean over query windows and heads), as a multiple of uniform (1/64), per variant.

# %%
ref_cells = [divmod(int(lay["cells"][0]), 8) for lay in layouts]
ref_share = pd.DataFrame({
    name: [A.pwa_received_attention(A.select(RECORDS[name], "pwa", "stages.0.blocks.0")[0], b)[rc] * 64
           for b, rc in enumerate(ref_cells)]
    for name in CONFIGS if A.select(RECORDS[name], "pwa", "stages.0.blocks.0")
}, index=pd.Index(range(8), name="image"))
ref_share.describe().loc[["mean", "min", "max"]]

# %% [markdown]
# Per head: the window tokens of stage 2 (block 0, 4×4 windows of 4×4 px on the 16×16 map, 8×8 image pixels
# each) and a query pixel's DWA attention inside its window.

# %%
dwa2 = A.select(recs, "dwa", "stages.1.blocks.0")[0]
fig = A.plot_head_grid(display_images[IMG], dwa2, A.window_token_attention(dwa2, IMG),
                     title="stage-2 window tokens per head")
fig = A.plot_head_grid(display_images[IMG], dwa1, A.query_attention(dwa1, ref_px, IMG), query_px=ref_px,
                 title="stage-1 DWA of the reference pixel, per head")

# %% [markdown]
# ## A real photo
#
# scikit-image's astronaut, resized to 64 px (the model accepts any size: maps are padded to whole windows and
# learnable window tokens are resampled to the new 16×16 window grid). The model never saw a photo, so this shows
# how the learnt attention generalises, not what it was trained for.

# %%
photo = resize(skdata.astronaut()[:300, 100:400], (64, 64), anti_aliasing=True).astype(np.float32)
photo_x = ((torch.from_numpy(photo).permute(2, 0, 1) - torch.tensor(info.mean).view(3, 1, 1))
           / torch.tensor(info.std).view(3, 1, 1))[None]
photo_recs, _ = record(MODELS["learnable tokens"][0], photo_x)
p_dwa = A.select(photo_recs, "dwa", "stages.0.blocks.0")[0]
p_pwa = A.select(photo_recs, "pwa", "stages.0.blocks.0")[0]
face = (20, 34)
fig, axes = plt.subplots(1, 4, figsize=(14, 3.8))
axes[0].imshow(photo)
axes[0].axis("off")
axes[0].set_title(f"astronaut, 64 px ({p_dwa['grid'][0]}x{p_dwa['grid'][1]} stage-1 windows)", fontsize=9)
A.plot_window_token_attention(photo, p_dwa, ax=axes[1])
A.plot_query_attention(photo, p_pwa, face, ax=axes[2], title="stage-1 PWA from the face window")
A.plot_query_attention(photo, A.select(photo_recs, "msa", "stages.2.blocks.1")[0], face, ax=axes[3],
                       title="stage-3 grouped block (global) from the face")
plt.tight_layout()

# %% [markdown]
# ## Window tokens: learnable vs zero vs average-pooled
#
# Same image, stage-1 window-token attention and PWA of each token kind. `token_share` is the attention pixel
# queries give to their window token in DWA (the rest goes to pixels).

# %%
token_variants = ["learnable tokens", "zero tokens", "avgpool tokens"]
fig, axes = plt.subplots(2, 3, figsize=(12, 8))
for col, name in enumerate(token_variants):
    r_dwa = A.select(RECORDS[name], "dwa", "stages.0.blocks.0")[0]
    r_pwa = A.select(RECORDS[name], "pwa", "stages.0.blocks.0")[0]
    A.plot_window_token_attention(display_images[IMG], r_dwa, batch=IMG, ax=axes[0, col],
                                  title=f"{name}: window tokens")
    A.plot_pwa_heatmap(r_pwa, batch=IMG, ax=axes[1, col], title=f"{name}: stage-1 PWA")
plt.tight_layout()

# %% [markdown]
# ## Grouped vs plain blocks, and SepViT vs Swin
#
# Stage 2, block 1: with GSA it is a grouped block (8×8-token windows = 2×2 groups of windows, PWA among 4 groups);
# without GSA it is a plain block (4×4 windows, PWA among 16); in the Swin pattern it is a shifted-window block
# (SW-MSA, shown un-shifted). The query is the reference ring.

# %%
fig, axes = plt.subplots(1, 4, figsize=(14, 3.8))
for ax, name, kind in [(axes[0], "learnable tokens", "dwa"), (axes[1], "learnable tokens", "pwa"),
                       (axes[2], "plain blocks (no GSA)", "pwa"), (axes[3], "Swin pattern", "swin")]:
    rec = A.select(RECORDS[name], kind, "stages.1.blocks.1")[0]
    A.plot_query_attention(display_images[IMG], rec, ref_px, batch=IMG, ax=ax,
                           title=f"{name}: stage-2 block 1 {kind}")
plt.tight_layout()

# %% [markdown]
# ## Mean attention distance and entropy per block
#
# `mean_distance_px`: expected distance, in input pixels, between a query pixel and the pixels it attends to
# (windows, padding, Swin shifts and stage strides accounted for; DWA rows renormalised over pixels since the
# window token has no position). PWA rows count the distance between windows (it mixes the same relative position).
# `dwa+pwa` chains the two maps of a SepViT block into one query-to-pixel path: how far one DSSA block reaches.
# For reference, uniform attention over the whole 32×32 image gives about 16.7 px; over one 4×4 window, 2.0 px.

# %%
STATS = pd.concat([A.attention_statistics(RECORDS[name], variant=name) for name in CONFIGS], ignore_index=True)
reach = A.block_reach(STATS, by=["variant"])
fig = A.plot_mean_distance(STATS)
reach.pivot_table(index=["stage", "block"], columns="variant", values="mean_distance_px", sort=False)[list(CONFIGS)]

# %% [markdown]
# Per attention kind of the SepViT variants (bars span the heads; the Swin pattern has one kind per block, shown
# above), and the entropy of the same maps (nats; uniform attention gives the log of the number of keys: 2.83 for
# DWA over a 4×4 window plus its token, 4.16 for PWA over 64 windows, 2.77 over 16, 1.39 over 4).

# %%
sepvit_variants = [name for name, cfg in CONFIGS.items() if cfg.block_pattern == "sepvit"]
summary = A.block_summary(STATS[STATS.variant.isin(sepvit_variants)], by=["variant"])
fig = A.plot_mean_distance(STATS[STATS.variant.isin(sepvit_variants)], per_kind=True)
summary.pivot_table(index=["stage", "block", "kind"], columns="variant", values="mean_distance_px",
                    sort=False)[sepvit_variants]

# %%
summary.pivot_table(index=["stage", "block", "kind"], columns="variant", values="entropy", sort=False)[sepvit_variants]

# %%
token_table = summary[summary.kind == "dwa"].pivot_table(index="block", columns="variant", values="token_share")
print("DWA attention that pixels give to their window token:")
token_table[[c for c in token_variants + ["plain blocks (no GSA)"] if c in token_table]]

# %%
print(f"notebook ran in {time.time() - start_time:.0f} s (smoke={SMOKE})")
