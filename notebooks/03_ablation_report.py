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
# 2. each configuration against the reference: the difference with its paired interval (runs of one seed share
#    data order and the init of every shared module) and Welch's, the verdict and the rule that decided it, what
#    this call can resolve at all, and a conclusion computed from those numbers;
# 3. paper vs here: every comparison the paper reports that this call trained (`--grid paper`: the component
#    chain and the window-summary alternatives), our difference with its paired interval beside the paper's
#    ImageNet-1k figure, and whether the direction agrees (only where our verdict resolved it);
# 4. learning curves (the reported validation top-1 and the training loss per epoch);
# 5. accuracy against cost: MACs (fvcore, explicit attention, one image; multiply-add = 1) and batch-1 CPU latency
#    timed after training with every configuration interleaved in the same rounds (median and IQR).
#
# **Which runs.** `SEPVIT_TRACKING_URI` (e.g. `sqlite:////abs/path/output/mlflow.db`), `SEPVIT_EXPERIMENT` (default
# `sepvit-ablation`) and optionally `SEPVIT_PARENT_RUN` (default: the newest call; calls are never pooled here).
# Without `SEPVIT_TRACKING_URI`, it reads `output/mlflow.db` of the README's main command if that exists; with
# `SEPVIT_SMOKE=1` (CI) it makes a tiny `--grid paper` call itself, whose numbers show that the pipeline works,
# not what the components are worth. The stored outputs come from `python experiments/ablate.py --grid paper
# --seeds 3` (the runner's default benchmark and budget).
#
# All computation is in `experiments/report.py` (tested in `tests/test_report.py` and `tests/test_runner.py`).

# %%
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto in a kernel without ipywidgets
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns
from IPython.display import Markdown, display

from experiments import runner
from experiments.base_model import DEFAULT_MODEL
from experiments.grids import grid
from experiments.paper_table import format_paper_comparison, paper_comparison
from experiments.report import (apply_costs, compare_to_reference, conclusions, format_comparison, format_summary,
                                list_calls, load_call_summary, load_histories, load_runs, resolution,
                                resolution_sentence, summarize)
from experiments.rescoring import DEFAULT_VAL_SIZE, changed_verdicts, format_record, load_record, rescore, write_record
from experiments.stats import chance_interval
from experiments.train_config import TrainConfig
from sepvit.config import SepViTConfig
from workbench.tracking import sqlite_path

sns.set_theme(style="whitegrid", context="notebook")
TRACKING_URI = os.environ.get("SEPVIT_TRACKING_URI")
EXPERIMENT = os.environ.get("SEPVIT_EXPERIMENT", "sepvit-ablation")
PARENT = os.environ.get("SEPVIT_PARENT_RUN") or None
main_command_store = Path.cwd().parent / "output" / "mlflow.db"

if TRACKING_URI is None and os.environ.get("SEPVIT_SMOKE") != "1" and main_command_store.is_file():
    TRACKING_URI = f"sqlite:///{main_command_store.resolve()}"
if TRACKING_URI is None:
    # smoke mode: a tiny `--grid paper` call through the runner's API, 2 seeds x 1 epoch on 32 generated images,
    # narrow widths
    output = tempfile.mkdtemp(prefix="sepvit-report-")
    EXPERIMENT = "report-smoke"
    base = SepViTConfig.preset(DEFAULT_MODEL, embed_dims=(8, 16, 16, 32), num_heads=(1, 1, 1, 2))
    budget = TrainConfig(epochs=1, train_size=32, val_size=32, batch_size=16, output=output)
    plan = runner.plan_call(dict(grid("paper", base)), budget, seeds=2, base=base, experiment=EXPERIMENT,
                            name="paper")
    results = runner.run_call(plan)
    assert results.finished, f"the smoke call failed (exit code {results.exit_code}): see {results.folder}"
    TRACKING_URI = plan.uri
calls = list_calls(TRACKING_URI, EXPERIMENT)
call = calls.set_index("parent_run_id").loc[PARENT] if PARENT else calls.iloc[0]
shown_uri = TRACKING_URI.replace(f"{Path.cwd().parent.resolve()}/", "")  # no machine path in the stored output
print(f"tracking URI: {shown_uri} | experiment: {EXPERIMENT} | {len(calls)} call(s); showing "
      f"{call['name']!r} ({call['status']})")

# %% [markdown]
# ## The runs

# %%
runs = load_runs(TRACKING_URI, EXPERIMENT, calls=[PARENT] if PARENT else "latest")  # one call, never pooled
runs = runs[runs["status"] == "FINISHED"].sort_values("start_time").reset_index(drop=True)  # the plan's order
num_classes, val_size = int(runs["num_classes"].iloc[0]), int(runs["val_size"].iloc[0])
chance_low, chance_high = chance_interval(num_classes, val_size)  # the images each run's top-1 is on
# the learning curves are on the per-epoch images, fewer than the final ones where a run was scored on more
curve_chance_low, curve_chance_high = chance_interval(num_classes, int(runs["epoch_val_size"].iloc[0]))
stored = load_call_summary(TRACKING_URI, call["parent_run_id"])  # the call's interleaved cost timings
costs = None if stored is None else {r["config"]: r for r in stored.to_dict("records") if "latency_ms_q1" in r}
summary = summarize(runs, num_classes, val_size)
if costs:
    summary = apply_costs(summary, costs)
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
# Δ = configuration − reference. The verdict names the rule that decided, strictest first: `separated` (the two
# 95 % CIs are disjoint), `paired` (the paired interval over shared seeds excludes 0), `welch` (no shared seeds,
# Welch's interval excludes 0); when none of these holds, the 90 % interval bounds the difference (two one-sided
# tests at 5 %): `equivalent (±X)` when X lies within the equivalence margin (`experiments.stats.EQUIVALENCE_MARGIN`,
# 2 points), `unresolved (±X; ~N seeds)` when it does not, with the seeds per arm that would resolve it at the noise
# this call measured. The resolution sentence says what differences this call could have detected at all (power 0.8),
# from its own seed noise; the sentences below are computed.

# %%
print(resolution_sentence(resolution(runs)))
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
# ## 3 · Paper vs here
# The paper's differences are ImageNet-1k top-1 of SepViT-T (the ablation chain; the window-summary figures were not
# recovered, only that the learnable token won). Ours are on this call's task and budget: a direction "agrees"
# only where our verdict resolved it; otherwise the row gives the bound or says "not resolved".

# %%
against_paper = paper_comparison(runs)
if len(against_paper):
    print(format_paper_comparison(against_paper))
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(against_paper) + 1.5))
    y = range(len(against_paper))
    low = against_paper["diff"] - against_paper["paired_low"]
    high = against_paper["paired_high"] - against_paper["diff"]
    ax.errorbar(against_paper["diff"], y, xerr=[low.fillna(0), high.fillna(0)], fmt="o", color="C0", capsize=4,
                label="here: Δ top-1, paired 95 % CI")
    known = against_paper["paper_delta"].notna()
    ax.scatter(against_paper.loc[known, "paper_delta"], [i for i, k in zip(y, known) if k], marker="*", s=160,
               color="C3", zorder=3, label="paper (ImageNet-1k)")
    ax.axvline(0, color="0.4", lw=1)
    ax.set_yticks(list(y), against_paper["comparison"])
    ax.invert_yaxis()
    ax.set(xlabel="Δ top-1 (points), a − b")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    plt.tight_layout()
    plt.show()
    agree = against_paper["agrees"].value_counts().to_dict()
    display(Markdown(f"- Of {len(against_paper)} comparisons the paper reports, this call resolved "
                     f"{sum(v for k, v in agree.items() if k in ('yes', 'no'))}: {agree.get('yes', 0)} in the "
                     f"paper's direction, {agree.get('no', 0)} against it; the rest are below what "
                     f"{int(against_paper['seeds'].min())} seeds can resolve here."))
else:
    display(Markdown("- This call trained none of the pairs the paper compares (run `--grid paper`)."))

# %% [markdown]
# ## 4 · Learning curves (every seed a line)

# %%
history = load_histories(TRACKING_URI, runs, metrics=("reported", "train_loss"))
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
for ax, (metric, label) in zip(axes, [("reported", "validation top-1 (%), reported"), ("train_loss", "training loss")]):
    sns.lineplot(data=history[history.metric == metric], x="epoch", y="value", hue="config", hue_order=order,
                 errorbar=None, units="run_id", estimator=None, alpha=0.8, ax=ax, legend=ax is axes[1])
    ax.set(ylabel=label)
axes[0].axhspan(curve_chance_low, curve_chance_high, color="0.85")
axes[0].set_ylim(0, 100)
sns.move_legend(axes[1], "upper left", bbox_to_anchor=(1.01, 1), frameon=False)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 5 · Accuracy against MACs and latency
# MACs are exact counts (fvcore, explicit attention). Latency: the call timed every configuration after training,
# interleaved in the same rounds (median; compare it only within one call).

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
for ax, (column, label, scale) in zip(axes, [("macs", "MACs (M, fvcore)", 1e6), ("latency_ms", "latency bs1 (ms)", 1)]):
    data = summary.assign(x=summary[column].astype(float) / scale)
    sns.scatterplot(data=data, x="x", y="top1_mean", hue="config", hue_order=order, s=80, ax=ax, legend=ax is axes[1])
    ax.errorbar(data["x"], data["top1_mean"], yerr=data["top1_ci95"].fillna(0), fmt="none", ecolor="0.5", capsize=3)
    ax.axhspan(curve_chance_low, curve_chance_high, color="0.85")
    ax.set(xlabel=label, ylabel="top-1 (%), mean ± 95 % CI", ylim=(0, 100))
sns.move_legend(axes[1], "upper left", bbox_to_anchor=(1.01, 1), frameon=False)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 6 · The same call on more validation images
# Every run of a call is scored on the same validation images (on the generated datasets: 1000 before 2026-12-07,
# the final weights on 10000 since, `--final-val-size`; this notebook's stored call is of the former). Two models disagree
# on a few percent of them, so the draw of the images moves each seed's difference: the intervals above contain that
# noise, but it widens them. A small part of it is shared by every seed (images on which one model is systematically
# better), and no interval over seeds contains that part. `python experiments/rescore.py <call folder> --val-size
# 20000` scores the call's final weights on 20000 images of the same task (the first are the runs' own, and
# each run must reproduce its recorded top-1 on them) and writes `rescore-val20000.json` into the call folder; this
# section shows it when it exists. `± per seed` and `shared` are `experiments.stats.image_noise`. A verdict that
# changes between the two sizes was decided partly by which images were drawn.

# %%
store = sqlite_path(TRACKING_URI)
# the runner's default store lies in its output folder, and call folders are named relative to that folder
call_folder = None if store is None or call["call_folder"] is None else Path(store).parent / call["call_folder"]
rescore_size = DEFAULT_VAL_SIZE if os.environ.get("SEPVIT_SMOKE") != "1" else 96  # the smoke call has 32 images
if call_folder is not None and os.environ.get("SEPVIT_SMOKE") == "1":
    write_record(call_folder, rescore(call_folder, rescore_size)[1])  # seconds on the smoke call, done for real
record = None if call_folder is None else load_record(call_folder, rescore_size)
if record is None:
    where = f"<output>/{call['call_folder']}" if call["call_folder"] else "<call folder>"
    print(f"This call has not been rescored: python experiments/rescore.py {where} --val-size {rescore_size}")
else:
    print(format_record(record))
    changed = changed_verdicts(record)
    display(Markdown(f"- On {record['val_size']} images, {len(changed)} of {len(record.get('comparison', []))} "
                     f"comparisons against the reference changed verdict (the rule that decided, not only its bound)"
                     + (f": {', '.join(f'`{c}`' for c in changed)}." if changed else ".")))
