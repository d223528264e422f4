"""Tables and figures from runs: the runner's end-of-call summary and the ablation-report notebook.

Rows come either from in-memory `engine.Result`s (`results_frame`) or from MLflow (`load_runs`), into the same
columns, so the terminal table, the logged artifact and the notebook are computed by the same code:
run_id, config, seed, status, top1 (last epoch), best_top1, params, macs, latency_ms, img_per_s, is_reference.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from .stats import compare, mean_ci

COLUMNS = ["run_id", "config", "seed", "status", "top1", "best_top1", "params", "macs", "latency_ms", "img_per_s",
           "is_reference"]


def results_frame(results: Iterable, reference_label: str | None = None) -> pd.DataFrame:
    """One row per `engine.Result` (label = run's config label, stored in `run_name` before ' seed')."""
    rows = []
    for r in results:
        label = r.run_name.rsplit(" seed", 1)[0]
        rows.append({"run_id": r.run_id, "config": label, "seed": r.train_cfg.seed, "status": r.status,
                     "top1": r.top1, "best_top1": r.best_top1, "params": r.cost.get("params"),
                     "macs": r.cost.get("macs"), "latency_ms": r.cost.get("latency_ms"), "img_per_s": r.img_per_s,
                     "is_reference": label == reference_label})
    return pd.DataFrame(rows, columns=COLUMNS)


def load_runs(tracking_uri: str, experiment: str, parent_run_id: str | None = None) -> pd.DataFrame:
    """Child runs of an experiment (of one parent, or of all parents) as rows with COLUMNS plus model.* params."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ValueError(f"no MLflow experiment {experiment!r} at {tracking_uri}")
    query = f"tags.`mlflow.parentRunId` = '{parent_run_id}'" if parent_run_id else "tags.kind = 'train'"
    runs = client.search_runs([exp.experiment_id], filter_string=query, max_results=5000)
    rows = []
    for run in runs:
        m, t, p = run.data.metrics, run.data.tags, run.data.params
        row = {"run_id": run.info.run_id, "config": t.get("config", run.info.run_name), "seed": int(p.get("train.seed", -1)),
               "status": run.info.status, "top1": m.get("final_val_top1", m.get("val_top1")),
               "best_top1": m.get("best_val_top1"), "params": m.get("params"), "macs": m.get("macs"),
               "latency_ms": m.get("latency_ms"), "img_per_s": m.get("img_per_s"),
               "is_reference": t.get("is_reference") == "true", "parent_run_id": t.get("mlflow.parentRunId")}
        row.update({k: v for k, v in p.items() if k.startswith("model.")})
        rows.append(row)
    return pd.DataFrame(rows)


def load_histories(tracking_uri: str, runs: pd.DataFrame,
                   metrics: Sequence[str] = ("train_loss", "val_top1")) -> pd.DataFrame:
    """Long table of per-epoch metrics: run_id, config, seed, metric, epoch, value."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    rows = []
    for _, run in runs.iterrows():
        for key in metrics:
            for point in client.get_metric_history(run["run_id"], key):
                rows.append({"run_id": run["run_id"], "config": run["config"], "seed": run["seed"],
                             "metric": key, "epoch": point.step, "value": point.value})
    return pd.DataFrame(rows, columns=["run_id", "config", "seed", "metric", "epoch", "value"])


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Per configuration (in first-seen order): seeds, top-1 mean and 95 % t-CI half-width, cost columns."""
    rows = []
    done = runs[runs["status"] == "FINISHED"]
    for config in dict.fromkeys(runs["config"]):
        group = done[done["config"] == config]
        mean, half = mean_ci(group["top1"].astype(float).tolist())
        rows.append({"config": config, "seeds": len(group), "failed": int((runs["config"] == config).sum() - len(group)),
                     "top1_mean": mean, "top1_ci95": half,
                     "params": _first(group["params"]), "macs": _first(group["macs"]),
                     "latency_ms": group["latency_ms"].astype(float).median() if len(group) else math.nan,
                     "img_per_s": group["img_per_s"].astype(float).median() if len(group) else math.nan,
                     "is_reference": bool(runs.loc[runs["config"] == config, "is_reference"].any())})
    return pd.DataFrame(rows)


def compare_to_reference(runs: pd.DataFrame) -> pd.DataFrame:
    """Each configuration against the reference: difference in top-1 with a Welch 95 % CI and the noise test."""
    done = runs[runs["status"] == "FINISHED"]
    ref = done[done["is_reference"]]["top1"].astype(float).tolist()
    rows = []
    if not ref:
        return pd.DataFrame(rows)
    for config in dict.fromkeys(done.loc[~done["is_reference"], "config"]):
        values = done[done["config"] == config]["top1"].astype(float).tolist()
        d = compare(values, ref)
        rows.append({"config": config, "diff": d.diff, "welch_low": d.low, "welch_high": d.high, "welch_df": d.df,
                     "welch_excludes_0": d.welch_excludes_zero, "cis_overlap": d.cis_overlap,
                     "exceeds_seed_noise": d.exceeds_noise})
    return pd.DataFrame(rows)


def _first(values: pd.Series):
    values = values.dropna()
    return values.iloc[0] if len(values) else math.nan


def format_summary(summary: pd.DataFrame, markdown: bool = False) -> str:
    """Plain-text or markdown table: configuration, seeds, top-1 mean ± 95 % CI, params, MACs, images/s."""
    header = ["configuration", "seeds", "top-1 % (mean ± 95% CI)", "params (M)", "MACs (M, fvcore)",
              "latency bs1 (ms)", "train img/s"]
    lines = []
    for _, r in summary.iterrows():
        ci = "n/a" if math.isnan(r["top1_ci95"]) else f"{r['top1_ci95']:.2f}"
        name = r["config"] + (" *" if r["is_reference"] else "")
        seeds = f"{r['seeds']}" + (f" (+{r['failed']} failed)" if r["failed"] else "")
        lines.append([name, seeds, f"{r['top1_mean']:.2f} ± {ci}", _fmt(r["params"], 1e6, 3), _fmt(r["macs"], 1e6, 1),
                      _fmt(r["latency_ms"], 1, 2), _fmt(r["img_per_s"], 1, 0)])
    return _table(header, lines, markdown) + "\n* = reference (every switch at its default)"


def format_comparison(comparison: pd.DataFrame, markdown: bool = False) -> str:
    header = ["configuration", "Δ top-1 vs reference", "Welch 95% CI", "CIs overlap", "exceeds seed noise"]
    lines = []
    for _, r in comparison.iterrows():
        ci = "n/a (needs 2 seeds)" if math.isnan(r["welch_low"]) else f"[{r['welch_low']:+.2f}, {r['welch_high']:+.2f}]"
        noise = {True: "yes", False: "no", None: "n/a"}[r["exceeds_seed_noise"]]
        overlap = {True: "yes", False: "no", None: "n/a"}[r["cis_overlap"]]
        lines.append([r["config"], f"{r['diff']:+.2f}", ci, overlap, noise])
    return _table(header, lines, markdown)


def _fmt(value, scale: float, digits: int) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if math.isnan(value) else f"{value / scale:.{digits}f}"


def _table(header: list[str], lines: list[list[str]], markdown: bool) -> str:
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    fmt = lambda row: "  ".join(str(x).ljust(w) for x, w in zip(row, widths))  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(line) for line in lines])


def learning_curve_figure(history: list[dict[str, float]], path: str | Path, title: str = "") -> Path:
    """Train loss and val top-1 against epoch, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3))
    ax1.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    ax1.plot(epochs, [h["val_loss"] for h in history], marker="o", label="val")
    ax1.set(xlabel="epoch", ylabel="loss")
    ax1.legend()
    ax2.plot(epochs, [h["val_top1"] for h in history], marker="o", label="val top-1")
    ax2.plot(epochs, [h["train_top1"] for h in history], marker=".", linestyle="--", label="train top-1")
    ax2.set(xlabel="epoch", ylabel="accuracy (%)")
    ax2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
