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
# # 02 · What SepViT attends to, next to Swin, Twins, global MSA and window attention alone
#
# SepViT splits self-attention into two steps (paper Sec. 3.1-3.2; `sepvit/attention.py`):
#
# - **DWA** (depthwise self-attention) works inside each window, over its pixels plus one *window token*; the
#   token's row of the map says what the token summarises of its window.
# - **PWA** (pointwise self-attention) works across windows: each window token attends to every other one, and
#   window *i* mixes in window *j*'s DWA output, at the same relative position, with weight `A[i, j]`.
# - **GSA** (grouped self-attention) is the same over groups of 2×2 windows, in every second block of stages 2-3.
#
# This notebook records the attention maps of eight models (`sepvit.record_attention`, fused attention
# included), places them on the image (`analysis/attention/`, tested in `tests/test_attention.py`) and
# compares them, trained and freshly initialised, with numbers beside the pictures: mean attention distance
# and entropy per block, whether GSA's attention has collapsed onto one group, how the attention distance relates
# to the receptive-field reach of `01_complexity.ipynb`, and where our results run against the paper's.
#
# **The models** come from `experiments/zoo`: ordinary runs of the ablation runner, all at one budget (the
# runner's default: 9 epochs of its built-in task, with the ring cue, `--synthetic-cue ring`, the default until
# 2026-12-06: one far cell names the colour to count, which is what the maps below follow; the new default's
# frame cue spreads that cell over the border), at the seeds of `ZOO_LOOKUP` below, logged to
# `output/mlflow.db` (experiment `notebook-models`) and loaded from there; a missing one is trained first (a few
# minutes each on a CPU; `python -m workbench.notebooks --check` says when one is missing). The maps are those of
# seed 0; collapse and the paper-vs-here table use every seed. Each model's accuracy is printed beside its maps,
# and a model whose accuracy is at chance is flagged and not interpreted. `SEPVIT_SMOKE=1` (CI) trains tiny
# throw-away models at seed 0 only (one epoch of 64 images, near chance by design): the notebook then flags them
# wherever they appear.
#
# **Your own image:** set `YOUR_IMAGE` in the next cell to an image file; the last section shows the same maps
# on it (and section 3 reads GSA's collapse on it).

# %%
YOUR_IMAGE = None  # the path of an image of your own (any size; centre-cropped, resized to 32 px); None: a bundled photo
YOUR_QUERY = None  # (y, x) in the 32 px image; None: its centre

import contextlib
import io
import os
import time
import warnings

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import Markdown, display

warnings.filterwarnings("ignore", message="IProgress not found")  # timm imports tqdm.auto; no widgets here
from skimage import data as skdata

import sepvit  # noqa: F401  (registers the models with timm)
from analysis import attention as A
from analysis import reach as rc
from experiments import synthetic, zoo
from experiments.data import build_datasets
from experiments.stats import chance_interval
from sepvit import record_attention

SMOKE = os.environ.get("SEPVIT_SMOKE", "0") == "1"
torch.set_num_threads(int(os.environ.get("SEPVIT_THREADS", "1")))  # the machine is shared: one thread each
pd.set_option("display.precision", 3)
plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80})
start_time = time.time()
print(f"smoke={SMOKE}")

# %% [markdown]
# ## 1 · The models and their accuracy
#
# All are the runner's default model, `sepvit_nano_32` (32 px input, stem stride 1, window 4: stage maps of
# 32/16/8/4 px = 8/4/2/1 windows per side, the window schedule SepViT-T has at 224 px; 1/1/2/4 heads), with one
# switch each: window tokens zero or average-pooled instead of learnt, plain blocks instead of GSA, no DSSA at
# all (the local-only model: window attention in every block), or another block pattern (Swin, Twins, global MSA)
# in the same backbone. "Untrained" below is the same configuration freshly initialised (seed 0).
#
# The maps are those of each model's seed-0 checkpoint (its best epoch), so the accuracy shown beside them, `top1`,
# is that checkpoint's validation top-1 (the run's last-epoch top-1 is in the table too). A model is **at chance**
# when it lies within or below the 95 % interval that guessing reaches on the same number of images
# (`experiments.stats.chance_interval`). Every seed's top-1 is in the second table.

# %%
ZOO_LOOKUP = {"sepvit": (0, 1, 2), "sepvit, zero tokens": (0, 1, 2), "sepvit, avgpool tokens": (0, 1, 2),
              "sepvit without GSA": (0, 1, 2), "local-only": (0,), "swin": (0, 1, 2), "twins": (0, 1, 2),
              "msa": (0, 1, 2)}
NAMES = list(ZOO_LOOKUP)
t0 = time.time()
with contextlib.redirect_stderr(io.StringIO()):  # a model missing from the store is trained here: no progress lines
    ZOO_SEEDS = zoo.trained_seeds({name: seeds[:1] if SMOKE else seeds for name, seeds in ZOO_LOOKUP.items()},
                                  smoke=SMOKE)
ZOO_MODELS = {name: runs[0] for name, runs in ZOO_SEEDS.items()}  # seed 0: the maps
fresh = [f"{name} seed {m.seed}" for name, runs in ZOO_SEEDS.items() for m in runs if m.trained_here]
print(f"{sum(map(len, ZOO_SEEDS.values()))} models in {time.time() - t0:.0f} s; trained now: "
      f"{', '.join(fresh) or 'none (all loaded)'}")
# the maps are those of the best epoch's checkpoint: its top-1 is the accuracy beside them
ACCURACY = A.chance_table({name: m.best_top1 for name, m in ZOO_MODELS.items()},
                          {name: chance_interval(m.num_classes, m.val_size) for name, m in ZOO_MODELS.items()})
LABELS = {name: A.model_label(ACCURACY, name) for name in NAMES}
ACCURACY.assign(last_epoch_top1=[ZOO_MODELS[name].top1 for name in ACCURACY.index],
                val_images=[ZOO_MODELS[name].val_size for name in ACCURACY.index],
                run_id=[ZOO_MODELS[name].run_id[:8] for name in ACCURACY.index])

# %%
A.plot_accuracy(ACCURACY, title="Validation top-1 of the compared models (one budget, seed 0)")
plt.show()
display(Markdown(A.chance_markdown(ACCURACY)))
SEED_ACCURACY = zoo.accuracy_table(ZOO_SEEDS)
SEED_ACCURACY[["model", "seeds", "top1", "mean", "half_width", "chance_high", "at_chance", "matched"]].round(2)


# %%
def untrained(model, seed=0):
    """The same configuration, freshly initialised."""
    torch.manual_seed(seed)
    return model.config.build().eval()


MODELS = {"trained": {name: m.model.eval() for name, m in ZOO_MODELS.items()},
          "untrained": {name: untrained(m.model) for name, m in ZOO_MODELS.items()}}
WINDOW = ZOO_MODELS["sepvit"].model.config.window_size  # feature pixels; at stride 1, image pixels of stage 1

# %% [markdown]
# ## 2 · Images, query and how to read the maps
#
# Eight validation images of the built-in task ("distant match count", `experiments/synthetic.py`). Each holds
# ten 3×3 glyphs in cells that coincide with the stage-1 windows: one hollow **ring** (the reference) and nine
# filled squares; the label counts the squares of the ring's colour. Solving it needs windows to exchange
# information before the pooled head. The **query** (cyan ×) is the centre of the ring in image 0.
#
# **Reading the maps.** Every map shows attention probabilities on one fixed logarithmic colour scale,
# 10⁻⁴ to 1, with its colour bar: uniform attention over *n* keys has colour 1/*n* (1/16 for a 4×4 window, 1/1024
# for the whole stage-1 map), so an untrained model's flat maps look flat. Grey: not a key of the query (outside
# its window); black: below 10⁻⁴ (e.g. the pixels Swin's shift mask cuts off). White lines: the block's windows
# (solid; shifted for SW-MSA; Twins' sub-sampled key cells), and the windows inside a GSA group (dotted). A
# stage-*s* feature pixel covers stride × stride image pixels (1, 2, 4, 8 in stages 1-4). Multi-head maps show
# the mean over heads (per head in section 5). A SepViT block is shown as one map from the query to pixels:
# DWA then PWA chained (the query reaches pixel *k* of window *j* with weight `A_pwa[i, j] · A_dwa(j)[p, k]`, DWA
# renormalised over pixels, inner shortcuts left out). Under each model's maps, a table gives its blocks' mean
# attention distance and normalised entropy over all eight images and every query (defined in section 6).

# %%
CUE = zoo.ZOO_TRAIN["synthetic_cue"]  # the task the zoo's models learnt
_, val_ds, INFO = build_datasets("synthetic", img_size=32, train_size=8, val_size=8, synthetic_cue=CUE)
images = torch.stack([val_ds[i][0] for i in range(8)])
layouts = [synthetic.sample_layout(0, "val", i, synthetic.task_for(CUE)) for i in range(8)]
display_images = [A.to_display_image(x, INFO.mean, INFO.std) for x in images]
ring_cells = [divmod(int(layout["cells"][0]), synthetic.GRID) for layout in layouts]
ring_px = [(r * synthetic.CELL + 1, c * synthetic.CELL + 1) for r, c in ring_cells]  # the ring's middle pixel
IMG, QUERY = 0, ring_px[0]

fig, axes = plt.subplots(1, 8, figsize=(13, 2.2), layout="constrained")
for i, ax in enumerate(axes):
    A.draw_image(ax, display_images[i], ring_px[i], WINDOW, title=f"image {i}: label {layouts[i]['label']}")
fig.suptitle("Validation images (× = the ring; lines = the stage-1 windows)", fontsize=10)
plt.show()


# %%
def record(model, x):
    with torch.no_grad(), record_attention(model) as maps:
        model(x)
    return maps


RECORDS = {state: {name: record(model, images) for name, model in models.items()}
           for state, models in MODELS.items()}
# per block, over the eight images and every query pixel (section 6 explains and plots them)
STATS = pd.concat([A.attention_statistics(RECORDS[state][name], model=name, state=state)
                   for state in RECORDS for name in NAMES], ignore_index=True)
COMPARISON = A.trained_vs_untrained(STATS)
SUMMARY_COLUMNS = {"mean_distance_px_trained": "mean distance (px), trained",
                   "mean_distance_px_untrained": "mean distance (px), untrained",
                   "entropy_ratio_trained": "entropy / log(keys), trained",
                   "entropy_ratio_untrained": "entropy / log(keys), untrained"}


def show_model(name, title):
    """The model's accuracy (a warning when at chance), every block's map for the query, trained vs untrained, and
    the blocks' mean attention distance and normalised entropy (all images, all queries)."""
    if ACCURACY.loc[name, "at_chance"]:
        display(Markdown(A.chance_markdown(ACCURACY, [name])))
    else:
        display(Markdown(f"**{LABELS[name]}** (above chance)"))
    A.plot_block_maps(display_images[IMG], [(f"trained\n{LABELS[name]}", RECORDS["trained"][name]),
                                            ("untrained\n(seed 0)", RECORDS["untrained"][name])],
                      QUERY, batch=IMG, base_window=WINDOW, window_px=WINDOW, title=title)
    plt.show()
    rows = COMPARISON[COMPARISON.model == name].set_index("unit")
    display(rows[list(SUMMARY_COLUMNS)].rename(columns=SUMMARY_COLUMNS).T.round(2))


# %% [markdown]
# ## 3 · SepViT: DWA, window tokens, PWA and GSA groups
#
# DSSA taken apart in stage 1 (64 windows of 4×4 px), for the query's window: DWA of the query inside its window
# (the share it gives its window token aside), what every window token attends to in its window, PWA *from*
# the query's window (`A[i, j]`: how much window *i* mixes in each window *j*) and *to* it (`A[j, i]`: how much
# every window reads from the ring's), the two chained into one map, and the whole 64×64 PWA matrix (the query
# window's row outlined).

# %%
A.plot_dssa_anatomy(display_images[IMG], [
    (f"trained\n{LABELS['sepvit']}", RECORDS["trained"]["sepvit"], "stages.0.blocks.0"),
    ("untrained", RECORDS["untrained"]["sepvit"], "stages.0.blocks.0"),
], QUERY, batch=IMG, base_window=WINDOW, title="SepViT, stage 1: DSSA taken apart")
plt.show()

# %% [markdown]
# Every block of the SepViT model: DSSA in stage 1 and the first blocks of stages 2-3, GSA (DSSA over 2×2-window
# groups) in the second block of stage 2, and global attention where one window or group covers the map
# (stage 3's second block, stage 4).

# %%
show_model("sepvit", "SepViT (learnt window tokens, GSA): every block's attention from the ring")

# %% [markdown]
# ### Window tokens: learnt vs zero vs average-pooled
#
# The same anatomy for the three kinds of window token (stage 1). Below it: the stage-1 PWA attention that the
# ring's window receives, averaged over query windows and heads, as a multiple of the uniform share (1 = no
# window singled out), over the eight images.

# %%
TOKEN_MODELS = ["sepvit", "sepvit, zero tokens", "sepvit, avgpool tokens"]
A.plot_dssa_anatomy(display_images[IMG], [(LABELS[name].replace(" · top-1", "\ntop-1"), RECORDS["trained"][name],
                                           "stages.0.blocks.0") for name in TOKEN_MODELS],
                    QUERY, batch=IMG, base_window=WINDOW, title="Window tokens, stage 1 (trained)")
plt.show()

# %%
PWA_MODELS = ["sepvit", "sepvit, zero tokens", "sepvit, avgpool tokens", "sepvit without GSA"]
ring_share = pd.DataFrame({
    (state, name): A.received_share(A.select(RECORDS[state][name], "pwa", "stages.0.blocks.0")[0], ring_cells)
    for name in PWA_MODELS for state in ("trained", "untrained")})
ring_share.columns.names = ["state", "model"]
ring_share.index.name = "image"
share = ring_share.agg(["mean", "min", "max"]).T.unstack("state")
lines = []
for name in PWA_MODELS:
    if ACCURACY.loc[name, "at_chance"]:
        lines.append(f"- {name}: at chance, not interpreted.")
    else:
        lines.append(f"- {name} ({ACCURACY.loc[name, 'top1']:.1f} %): the ring's window receives "
                     f"{share.loc[name, ('mean', 'trained')]:.2f}× the uniform share in stage-1 PWA (range "
                     f"{share.loc[name, ('min', 'trained')]:.2f}–{share.loc[name, ('max', 'trained')]:.2f} over the "
                     f"images), untrained {share.loc[name, ('mean', 'untrained')]:.2f}×.")
display(Markdown("\n".join(lines)))
share

# %% [markdown]
# ### GSA groups vs plain blocks
#
# Stage 2, second block: with GSA it is DSSA over 4 groups of 2×2 windows (8×8 feature pixels = 16×16 image
# pixels: DWA inside the group, PWA among 4 group tokens); without GSA it is a plain DSSA block (16 windows).

# %%
A.plot_dssa_anatomy(display_images[IMG], [
    (f"GSA, trained\n{LABELS['sepvit']}", RECORDS["trained"]["sepvit"], "stages.1.blocks.1"),
    ("GSA, untrained", RECORDS["untrained"]["sepvit"], "stages.1.blocks.1"),
    (f"plain, trained\n{LABELS['sepvit without GSA']}", RECORDS["trained"]["sepvit without GSA"], "stages.1.blocks.1"),
], QUERY, batch=IMG, base_window=WINDOW, title="Stage 2, block 2: GSA groups vs a plain DSSA block")
plt.show()

# %% [markdown]
# ### Has GSA's attention collapsed?
#
# Read, not only drawn: in the GSA block every group's token attends to the group tokens (4 here); the block has
# **collapsed** when most queries put nearly all their attention on one group (`analysis.attention.pwa_collapse`:
# more than 50 % of the (image, head, query group) rows put over 90 % of their weight on one key), and "every group
# reads from the same group" when that key is the same for nearly all of them. Measured for every seed of the
# trained SepViT on the eight validation images and on the photo of section 8, and for the untrained model (its
# near-uniform PWA is the baseline). The DSSA blocks' PWA (between windows) is read the same way.

# %%
PHOTO = A.load_image(YOUR_IMAGE if YOUR_IMAGE is not None else skdata.chelsea(), size=32)
PHOTO_INPUT = A.to_model_input(PHOTO, INFO.mean, INFO.std)
collapse_rows = []
for m in ZOO_SEEDS["sepvit"]:
    for what, x in (("the 8 validation images", images), ("the photo", PHOTO_INPUT)):
        collapse_rows.append(A.collapse_table(record(m.model.eval(), x), WINDOW, seed=m.seed, state="trained",
                                              images=what, top1=m.best_top1))
collapse_rows.append(A.collapse_table(RECORDS["untrained"]["sepvit"], WINDOW, seed=0, state="untrained",
                                      images="the 8 validation images", top1=float("nan")))
COLLAPSE = pd.concat(collapse_rows, ignore_index=True)
at_chance = ACCURACY.loc["sepvit", "at_chance"]
lines = []
for (state, what), part in COLLAPSE.groupby(["state", "images"], sort=False):
    for line in A.collapse_sentences(part, by="seed", attention="GSA"):
        lines.append(f"**GSA, {state} SepViT, {what}** — {line}")
    for line in A.collapse_sentences(part, by="seed", attention="DSSA"):
        lines.append(f"DSSA PWA, {state} SepViT, {what} — {line}")
if at_chance:
    lines.insert(0, "**The trained SepViT is at chance: its collapse figures are not interpreted.**")
display(Markdown("\n".join(f"- {line}" for line in lines)))
COLLAPSE[["state", "images", "seed", "label", "attention", "one_key_share", "same_key_share", "top_key",
          "entropy_ratio", "collapsed"]].round(3)

# %%
show_model("sepvit without GSA", "SepViT without GSA (plain DSSA blocks): every block's attention from the ring")

# %% [markdown]
# ## 4 · The other patterns in the same backbone
#
# **Swin**: W-MSA (windows of 4) then SW-MSA (windows shifted by 2; the shift mask keeps pixels that were not
# neighbours apart, black). **Twins**: LSA (windows of 4) then Twins' GSA (every pixel attends to a sub-sampled
# map: sr×sr cells, sr = 8/4/2/1 by stage; stage 1 has only its LSA block). **Global MSA**: every block attends
# to the whole map. **Local-only** (`dssa=False`): window attention of 4 in every block, no window tokens, no PWA,
# no groups; stage 4 (one window) is global.

# %%
show_model("swin", "Swin pattern: W-MSA / SW-MSA")

# %%
show_model("twins", "Twins pattern: LSA / GSA (sub-sampled global)")

# %%
show_model("msa", "Global MSA in every block")

# %%
show_model("local-only", "Local-only (dssa=False): window attention alone")

# %% [markdown]
# ## 5 · Per head
#
# `sepvit_nano_32` has one head in stages 1-2, two in stage 3 and four in stage 4, so heads can differ only in
# stages 3-4: every model's map for the query, head by head (trained).

# %%
HEAD_BLOCKS = ["stages.2.blocks.0", "stages.2.blocks.1", "stages.3.blocks.0"]
A.plot_head_maps(display_images[IMG], [(LABELS[name].replace(" · top-1", "\ntop-1"), RECORDS["trained"][name])
                                       for name in NAMES],
                 HEAD_BLOCKS, QUERY, batch=IMG, base_window=WINDOW, title="Stages 3-4, per head (trained)")
plt.show()
display(Markdown(A.chance_markdown(ACCURACY)))

# %% [markdown]
# ## 6 · How far and how sharply each block attends, trained vs untrained
#
# Over all eight images and every query pixel, per block (mean over heads):
#
# - **mean attention distance**: the expected distance, in input pixels, between a query pixel and the pixels
#   it attends to (windows, padding, Swin's shift and the stage's stride accounted for). A SepViT block counts as
#   its DWA-then-PWA path, how far one DSSA block reaches. Uniform attention over the whole 32×32 image gives
#   about 16.7 px; over one 4×4 window of stage 1, 2.0 px.
# - **normalised entropy**: entropy / log(number of keys); 1 = uniform over the keys, lower = sharper. The keys
#   are the whole window, so Swin's shifted blocks stay below 1 even untrained: the shift mask removes some.

# %%
A.plot_block_statistics(COMPARISON, "mean_distance_px", LABELS, title="Mean attention distance per block")
plt.show()
A.plot_block_statistics(COMPARISON, "entropy_ratio", LABELS, title="Normalised entropy per block")
plt.show()

# %% [markdown]
# What the numbers above say (computed from them; models at chance are named, not interpreted):

# %%
display(Markdown("**Trained vs untrained**\n\n" + A.training_effect_markdown(COMPARISON, ACCURACY)
                 + "\n\n**Reach of the trained models per stage** (mean attention distance, mean over the stage's "
                   "blocks, farthest first)\n\n" + A.reach_markdown(COMPARISON, ACCURACY)))
COMPARISON.set_index(["model", "unit"])[["mean_distance_px_trained", "mean_distance_px_untrained",
                                         "entropy_ratio_trained", "entropy_ratio_untrained"]]

# %% [markdown]
# ### The attention distance here and the reach in `01_complexity.ipynb`: two different figures
#
# The **mean attention distance** above reads the attention probabilities alone: the expected distance from a query
# to its keys (Euclidean, input pixels), a SepViT block counted as its DWA-then-PWA path with the inner shortcuts
# left out. PWA mixes the *same relative position* of every window, so a query's path reaches every window as soon
# as PWA is not sharply peaked: with near-uniform PWA the figure approaches the mean distance between same-place
# pixels of all windows, as for uniform attention over the whole 32 px image (about 16.7 px), whatever DWA does.
# The **reach** of 01 (`analysis.reach`) reads gradients of the whole block (shortcuts, value and output
# projections, MLP) and keeps the share at the query apart: how far the input that actually changes the output
# lies (Chebyshev, feature pixels of the stage, here times the stage's stride to input pixels). The two differ
# because the attention figure ignores how much of the output comes through each path: the shortcut and the
# query's own window carry most of it, so the reach is shorter wherever the far paths are weak. Both for every
# unit of the seed-0 models, trained and untrained, on the same eight images:

# %%
REACH = {state: {name: rc.model_reach_table([MODELS[state][name]], images, label=name) for name in NAMES}
         for state in ("trained", "untrained")}
RECONCILE = A.attention_vs_reach(COMPARISON, REACH, img_size=images.shape[-1])
display(Markdown(("**SepViT at chance: not interpreted.**\n\n" if ACCURACY.loc["sepvit", "at_chance"] else "")
                 + A.reconcile_markdown(RECONCILE, "sepvit")))
nearer = A.nearer_stages(COMPARISON, ACCURACY, "swin", "local-only")
if nearer:
    display(Markdown("\n".join(
        f"- Stage {n['stage']}: the Swin model's blocks attend nearer ({n['name_px']:.1f} px) than the local-only "
        f"model's ({n['other_px']:.1f} px), although a Swin pair is the wider unit by 01's reach. Per block, W-MSA "
        "and SW-MSA windows are as large as local-only's, and the shift mask removes the keys across the rolled "
        "border, so a shifted window offers fewer, nearer keys; the pair's extra reach comes from composing two "
        "blocks, which a per-block attention distance does not see." for n in nearer)))
elif ACCURACY.loc[["swin", "local-only"], "at_chance"].any():
    display(Markdown("- Swin against local-only: not interpreted (a model at chance)."))
else:
    display(Markdown("- The Swin model's blocks attend at least as far as the local-only model's at every stage."))
RECONCILE.round(2)

# %% [markdown]
# ## 7 · Paper vs here
#
# Wherever the zoo can make a comparison the paper makes, our top-1 difference over seeds (paired interval over
# the shared seeds, else Welch's; the verdict of `experiments.stats.compare`) beside the paper's ImageNet-1k figure,
# and whether the direction agrees; a difference that does not resolve has no direction. The paper's figures:
# `experiments.grids.PAPER_STEPS` (its ablation chain) and `analysis.published.PUBLISHED_TOP1`.

# %%
PAPER = zoo.paper_comparison(ZOO_SEEDS)
chance_models = set(SEED_ACCURACY.loc[SEED_ACCURACY.at_chance, "model"])
lines = [line + (" Not interpreted: a model at chance." if {a, b} & chance_models else "")
         for line, a, b in zip(zoo.paper_sentences(PAPER), PAPER["a"], PAPER["b"])]
display(Markdown("\n".join(f"- {line}" for line in lines) + f"\n\n{zoo.setting_sentence(ZOO_SEEDS)}"))
PAPER[["comparison", "seeds_a", "seeds_b", "top1_a", "top1_b", "diff", "paired_low", "paired_high", "welch_low",
       "welch_high", "verdict", "paper_delta", "agrees"]].round(2)

# %%
fig, ax = plt.subplots(figsize=(8, 0.55 * len(PAPER) + 1.5))
for i, r in enumerate(PAPER.itertuples()):
    low, high = (r.paired_low, r.paired_high) if not pd.isna(r.paired_low) else (r.welch_low, r.welch_high)
    if pd.isna(low):
        ax.plot(r.diff, i, "o", color="tab:blue", label="here (no interval)" if i == 0 else None)
    else:
        ax.errorbar(r.diff, i, xerr=[[r.diff - low], [high - r.diff]], fmt="o", color="tab:blue", capsize=3,
                    label="here, 95 % interval over seeds" if i == 0 else None)
    if r.paper_delta is not None and not pd.isna(r.paper_delta):
        ax.plot(r.paper_delta, i, "x", color="tab:red", ms=9, mew=2, label="paper (ImageNet-1k)")
ax.axvline(0, color="k", lw=0.8)
ax.set_yticks(range(len(PAPER)), [f"{r.comparison}\n({r.a} − {r.b})" for r in PAPER.itertuples()], fontsize=7)
ax.invert_yaxis()
ax.set(xlabel="top-1 difference a − b (points)", title="Paper vs here: each comparison's difference")
handles, labels = ax.get_legend_handles_labels()
unique = dict(zip(labels, handles))
ax.legend(unique.values(), unique.keys(), loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 8 · Your own image
#
# `YOUR_IMAGE` (first code cell) names an image file; without one, scikit-image's bundled photo of Chelsea the
# cat is used (no download). It is centre-cropped and resized to the models' 32 px input, normalised like the
# training images, and the query is `YOUR_QUERY` (default: the centre). The models never saw a photo: this shows
# how their learnt attention behaves on one, not what they were trained for.

# %%
own = PHOTO
own_query = tuple(YOUR_QUERY) if YOUR_QUERY is not None else (16, 16)
own_records = {name: record(model, PHOTO_INPUT) for name, model in MODELS["trained"].items()}
A.plot_block_maps(own, [(LABELS[name].replace(" · top-1", "\ntop-1"), own_records[name]) for name in NAMES],
                  own_query, base_window=WINDOW, window_px=WINDOW,
                  title=f"{YOUR_IMAGE or 'scikit-image chelsea'}: every model's attention from pixel {own_query}")
plt.show()
display(Markdown(A.chance_markdown(ACCURACY)))

# %%
print(f"notebook ran in {time.time() - start_time:.0f} s (smoke={SMOKE})")
