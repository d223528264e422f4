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
# This notebook reads **one call** of `experiments/ablate.py` (its parent run and children in MLflow) and shows
#
# 1. top-1 per configuration, every seed as a dot, with the mean and its 95 % confidence interval (Student t over
#    seeds), against the band that guessing reaches (the 95 % binomial interval of chance);
# 2. each configuration against the reference: the difference with a Welch 95 % interval, whether it exceeds seed
#    noise (the two 95 % CIs do not overlap), and a conclusion computed from those numbers;
# 3. learning curves (the reported validation top-1 and the training loss per epoch);
# 4. accuracy against cost: MACs (fvcore, explicit attention, one image; multiply-add = 1) and batch-1 CPU latency
#    measured in the run's own process (compare latency only within one call).
#
# **Which runs.** `SEPVIT_TRACKING_URI` (e.g. `sqlite:////abs/path/output/mlflow.db`), `SEPVIT_EXPERIMENT` (default
# `sepvit-ablation`) and optionally `SEPVIT_PARENT_RUN` (default: the newest call; calls are never pooled here).
# Without `SEPVIT_TRACKING_URI`, it reads `output/mlflow.db` of the README's main command if that exists; with
# `SEPVIT_SMOKE=1` (CI) it makes a tiny call itself, whose numbers show that the pipeline works, not what the
# components are worth. The stored outputs come from `python experiments/ablate.py --no-dssa --compare --seeds 3`.
#
# All computation is in `experiments/report.py` (tested in `tests/test_report.py` and `tests/test_runner.py`).

# %%
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns
from IPython.display import Markdown, display

from experiments import ablate
from experiments.report import (compare_to_reference, conclusions, format_comparison, format_summary, list_calls,
                                load_histories, load_runs, summarize)
from experiments.stats import chance_interval

sns.set_theme(style="whitegrid", context="notebook")
TRACKING_URI = os.environ.get("SEPVIT_TRACKING_URI")
EXPERIMENT = os.environ.get("SEPVIT_EXPERIMENT", "sepvit-ablation")
PARENT = os.environ.get("SEPVIT_PARENT_RUN") or None
main_command_store = Path.cwd().parent / "output" / "mlflow.db"

if TRACKING_URI is None and os.environ.get("SEPVIT_SMOKE") != "1" and main_command_store.is_file():
    TRACKING_URI = f"sqlite:///{main_command_store.resolve()}"
if TRACKING_URI is None:
    # smoke mode: a tiny --no-gsa --compare call, 2 seeds x 2 epochs on 32 generated images
    output = tempfile.mkdtemp(prefix="sepvit-report-")
    EXPERIMENT = "report-smoke"
    ablate.main(["--no-gsa", "--compare", "--seeds", "2", "--epochs", "2", "--train-size", "32", "--val-size", "32",
                 "-b", "16", "--output", output, "--experiment", EXPERIMENT])
    TRACKING_URI = f"sqlite:///{output}/mlflow.db"
calls = list_calls(TRACKING_URI, EXPERIMENT)
call = calls.set_index("parent_run_id").loc[PARENT] if PARENT else calls.iloc[0]
print(f"tracking URI: {TRACKING_URI} | experiment: {EXPERIMENT} | {len(calls)} call(s); showing "
      f"{call['name']!r} ({call['status']})")

# %% [markdown]
# ## The runs

# %%
runs = load_runs(TRACKING_URI, EXPERIMENT, calls=[PARENT] if PARENT else "latest")  # one call, never pooled
runs = runs[runs["status"] == "FINISHED"].reset_index(drop=True)
num_classes, val_size = int(runs["num_classes"].iloc[0]), int(runs["val_size"].iloc[0])
chance_low, chance_high = chance_interval(num_classes, val_size)
summary = summarize(runs, num_classes, val_size)
print(format_summary(summary, num_classes=num_classes, val_size=val_size))
runs[["config", "seed", "top1", "best_top1", "reported_metric", "params", "macs", "latency_ms", "img_per_s"]]

# %% [markdown]
# ## 1 · Top-1 per configuration (dots = seeds, diamond = mean ± 95 % CI, grey band = chance)

# %%
order = list(summary["config"])
fig, ax = plt.subplots(figsize=(8, 0.7 * len(order) + 1.6))
ax.axvspan(chance_low, chance_high, color="0.85", label=f"chance, 95 % ({chance_low:.1f}–{chance_high:.1f} %)")
sns.stripplot(data=runs, y="config", x="top1", order=order, ax=ax, color="0.3", size=6, jitter=0.1)
ax.errorbar(summary["top1_mean"], range(len(order)), xerr=summary["top1_ci95"].fillna(0), fmt="D", color="C3",
            capsize=4, label="mean ± 95 % CI (t)")
ax.set(xlabel="validation top-1 (%)", ylabel="", xlim=(0, 100))
ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 2 · Against the reference
# Δ = configuration − reference. "exceeds seed noise" needs both 95 % CIs to be disjoint; the Welch interval
# excluding 0 is the weaker test. Both need at least two seeds per configuration. The sentences below are computed.

# %%
comparison = compare_to_reference(runs)
if len(comparison):
    print(format_comparison(comparison))
    display(Markdown("\n".join(f"- {sentence}" for sentence in conclusions(summary, comparison))))
else:
    display(Markdown("- This call trained no reference: there is nothing to compare against."))
at_chance = summary.loc[summary["at_chance"] == True, "config"].tolist()  # noqa: E712
if at_chance:
    display(Markdown(f"**Warning:** {', '.join(at_chance)} did not rise above chance; read nothing into their "
                     "numbers beyond that."))

# %% [markdown]
# ## 3 · Learning curves (every seed a line)

# %%
history = load_histories(TRACKING_URI, runs, metrics=("reported", "train_loss"))
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
for ax, (metric, label) in zip(axes, [("reported", "validation top-1 (%), reported"), ("train_loss", "training loss")]):
    sns.lineplot(data=history[history.metric == metric], x="epoch", y="value", hue="config", hue_order=order,
                 errorbar=None, units="run_id", estimator=None, alpha=0.8, ax=ax, legend=ax is axes[1])
    ax.set(ylabel=label)
axes[0].axhspan(chance_low, chance_high, color="0.85")
axes[0].set_ylim(0, 100)
sns.move_legend(axes[1], "upper left", bbox_to_anchor=(1.01, 1), frameon=False)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 4 · Accuracy against MACs and latency
# MACs are exact counts (fvcore, explicit attention). Latency is the median of 10 batch-1 forward passes on the
# machine that trained the run; on a shared CPU compare it only within one call.

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
for ax, (column, label, scale) in zip(axes, [("macs", "MACs (M, fvcore)", 1e6), ("latency_ms", "latency bs1 (ms)", 1)]):
    data = summary.assign(x=summary[column].astype(float) / scale)
    sns.scatterplot(data=data, x="x", y="top1_mean", hue="config", hue_order=order, s=80, ax=ax, legend=ax is axes[1])
    ax.errorbar(data["x"], data["top1_mean"], yerr=data["top1_ci95"].fillna(0), fmt="none", ecolor="0.5", capsize=3)
    ax.axhspan(chance_low, chance_high, color="0.85")
    ax.set(xlabel=label, ylabel="top-1 (%), mean ± 95 % CI", ylim=(0, 100))
sns.move_legend(axes[1], "upper left", bbox_to_anchor=(1.01, 1), frameon=False)
plt.tight_layout()
plt.show()
