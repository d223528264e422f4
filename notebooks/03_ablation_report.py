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
# # 03 · Ablation report: what switching a component off did
#
# This notebook reads the runs of one MLflow experiment written by `experiments/ablate.py` and shows
#
# 1. top-1 per configuration, every seed as a dot, with the mean and its 95 % confidence interval
#    (Student t over seeds; with one seed there is no interval);
# 2. each configuration against the reference: the difference with a Welch 95 % interval, and whether it
#    exceeds seed noise (the two configurations' 95 % CIs do not overlap);
# 3. learning curves (validation top-1 and training loss per epoch);
# 4. accuracy against cost: MACs (fvcore, explicit attention, one 1-image forward pass; multiply-add = 1)
#    and batch-1 CPU latency measured in the run's own process (noisy on a shared machine).
#
# **Which runs.** Set `SEPVIT_TRACKING_URI` (e.g. `sqlite:////abs/path/output/mlflow.db`) and
# `SEPVIT_EXPERIMENT` (default `sepvit-ablation`); optionally `SEPVIT_PARENT_RUN` to show one call only.
# Without `SEPVIT_TRACKING_URI` (CI), the notebook first makes a tiny experiment itself by calling the
# runner in-process with very small settings: those numbers show that the pipeline works, not what
# the components are worth.
#
# All computation is in `experiments/report.py` (tested in `tests/test_runner.py`); this notebook only plots.

# %%
import os
import tempfile

import matplotlib.pyplot as plt
import seaborn as sns

from experiments import ablate
from experiments.report import (compare_to_reference, format_comparison, format_summary, load_histories,
                                load_runs, summarize)

sns.set_theme(style="whitegrid", context="notebook")
TRACKING_URI = os.environ.get("SEPVIT_TRACKING_URI")
EXPERIMENT = os.environ.get("SEPVIT_EXPERIMENT", "sepvit-ablation")
PARENT = os.environ.get("SEPVIT_PARENT_RUN") or None

if TRACKING_URI is None:
    # smoke mode: a tiny --no-gsa --compare call, 2 seeds x 2 epochs on 32 generated images
    output = tempfile.mkdtemp(prefix="sepvit-report-")
    EXPERIMENT = "report-smoke"
    ablate.main(["--no-gsa", "--compare", "--seeds", "2", "--epochs", "2", "--train-size", "32", "--val-size", "32",
                 "-b", "16", "--output", output, "--experiment", EXPERIMENT])
    TRACKING_URI = f"sqlite:///{output}/mlflow.db"
print("tracking URI:", TRACKING_URI, "| experiment:", EXPERIMENT)

# %% [markdown]
# ## The runs

# %%
runs = load_runs(TRACKING_URI, EXPERIMENT, calls=[PARENT] if PARENT else "latest")  # one call, never pooled
runs = runs[runs["status"] == "FINISHED"].reset_index(drop=True)
summary = summarize(runs)
print(format_summary(summary))
runs[["config", "seed", "top1", "best_top1", "params", "macs", "latency_ms", "img_per_s"]]

# %% [markdown]
# ## 1 · Top-1 per configuration (dots = seeds, bar = mean ± 95 % CI)

# %%
order = list(summary["config"])
fig, ax = plt.subplots(figsize=(7, 0.6 * len(order) + 1.5))
sns.stripplot(data=runs, y="config", x="top1", order=order, ax=ax, color="0.4", size=6, jitter=0.1)
ax.errorbar(summary["top1_mean"], range(len(order)), xerr=summary["top1_ci95"].fillna(0), fmt="D", color="C3",
            capsize=4, label="mean ± 95 % CI (t)")
ax.set(xlabel="validation top-1 (%)", ylabel="")
ax.legend(loc="lower right")
plt.tight_layout()

# %% [markdown]
# ## 2 · Against the reference
# Δ = configuration − reference. "exceeds seed noise" needs both 95 % CIs to be disjoint; the Welch
# interval excluding 0 is the weaker test. Both need at least two seeds per configuration.

# %%
comparison = compare_to_reference(runs)
print(format_comparison(comparison) if len(comparison) else "no reference among these runs")

# %% [markdown]
# ## 3 · Learning curves

# %%
history = load_histories(TRACKING_URI, runs, metrics=("val_top1", "train_loss"))
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
for ax, (metric, label) in zip(axes, [("val_top1", "validation top-1 (%)"), ("train_loss", "training loss")]):
    sns.lineplot(data=history[history.metric == metric], x="epoch", y="value", hue="config", hue_order=order,
                 errorbar=None, units="run_id", estimator=None, alpha=0.8, ax=ax)
    ax.set(ylabel=label)
plt.tight_layout()

# %% [markdown]
# ## 4 · Accuracy against MACs and latency
# MACs are exact counts (fvcore, explicit attention). Latency is the median of 10 batch-1 forward passes
# on the machine that trained the run; on a shared CPU compare it only within one call.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for ax, (column, label, scale) in zip(axes, [("macs", "MACs (M, fvcore)", 1e6), ("latency_ms", "latency bs1 (ms)", 1)]):
    data = summary.assign(x=summary[column].astype(float) / scale)
    sns.scatterplot(data=data, x="x", y="top1_mean", hue="config", hue_order=order, s=80, ax=ax, legend=ax is axes[1])
    ax.errorbar(data["x"], data["top1_mean"], yerr=data["top1_ci95"].fillna(0), fmt="none", ecolor="0.5", capsize=3)
    ax.set(xlabel=label, ylabel="top-1 (%), mean ± 95 % CI")
if axes[1].get_legend() is not None:
    sns.move_legend(axes[1], "upper left", bbox_to_anchor=(1, 1))
plt.tight_layout()
