"""Tables and figures from runs: the runner's end-of-call summary and the ablation-report notebook.

Rows come either from in-memory `run.Result`s (`results_frame`) or from MLflow (`load_runs`), into the same
columns, so the terminal table, the logged artifact and the notebook are computed by the same code:
run_id, config, seed, status, top1 (the reported metric: the final weights, on the final validation images where
scored), best_top1, params, macs, latency_ms, img_per_s, is_reference.

Reporting rules (one place):
- One call by default. `load_runs` reads the newest call (parent run) of an experiment. Pooling several calls is
  an explicit choice (`calls="all"` or a list of parent run ids); then runs that repeat a (configuration,
  training configuration, seed) are dropped, keeping the newest, so a deterministic seed is never counted twice,
  and a label that names different configurations in different calls is refused. A run logged before a
  training field existed reads as having that field's earlier value (`TrainConfig.as_logged_before`), so it pools
  with a newer run that trained alike.
- A configuration whose mean top-1 lies within (or below) the 95 % binomial interval of chance (1/num_classes on
  the validation set's size) is flagged "at chance": its comparisons say nothing about the component.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from workbench.tracking import flatten

from .stats import (EQUIVALENCE_MARGIN, SEEDS_LIMIT, VERDICT_RULES, chance_interval, compare, mean_ci,
                    min_detectable_difference, repeated_looks_error, verdict_text)
from .data import final_val_images
from .train_config import TrainConfig

COLUMNS = ["run_id", "config", "seed", "status", "top1", "best_top1", "params", "macs", "latency_ms", "img_per_s",
           "is_reference"]
# training-config fields that do not change what is learnt: ignored when deciding that two runs are the same
BOOKKEEPING = ("train.seed", "train.output", "train.device", "train.workers", "train.checkpoint_every")


class ReportError(ValueError):
    """Runs that cannot be reported together; the message says why and what to do."""


def results_frame(results: Iterable, reference_label: str | None = None) -> pd.DataFrame:
    """One row per `run.Result` (label = run's config label, stored in `run_name` before ' seed')."""
    rows = []
    for r in results:
        label = r.run_name.rsplit(" seed", 1)[0]
        rows.append({"run_id": r.run_id, "config": label, "seed": r.train_cfg.seed, "status": r.status,
                     "top1": r.top1, "best_top1": r.best_top1, "params": r.cost.get("params"),
                     "macs": r.cost.get("macs"), "latency_ms": r.cost.get("latency_ms"), "img_per_s": r.img_per_s,
                     "is_reference": label == reference_label})
    return pd.DataFrame(rows, columns=COLUMNS)


def open_store(tracking_uri: str):
    """An `MlflowClient` on a store that exists and can be read; else ReportError in one line. Reading never
    creates a store: MLflow would make an empty `mlflow.db` for a mistyped SQLite path."""
    from mlflow.tracking import MlflowClient

    from workbench.tracking import mask_secrets, sqlite_path, sqlite_store_problem

    path = sqlite_path(tracking_uri)
    problem = sqlite_store_problem(path) if path is not None else None
    if problem:
        raise ReportError(f"{problem}: pass the tracking URI of a runner's store (sqlite:///<output>/mlflow.db)")
    try:
        return MlflowClient(tracking_uri=tracking_uri)
    except Exception as exc:  # noqa: BLE001  (MLflow and SQLAlchemy raise assorted types)
        raise ReportError(f"the MLflow store {mask_secrets(tracking_uri)} cannot be opened: "
                          f"{_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__


def _experiment(client, tracking_uri: str, experiment: str):
    from workbench.tracking import mask_secrets

    try:
        exp = client.get_experiment_by_name(experiment)
    except Exception as exc:  # noqa: BLE001
        raise ReportError(f"the MLflow store {mask_secrets(tracking_uri)} cannot be read: {_first_line(exc)}") from None
    if exp is None:
        raise ReportError(f"no MLflow experiment {experiment!r} at {mask_secrets(tracking_uri)}")
    return exp


def list_calls(tracking_uri: str, experiment: str) -> pd.DataFrame:
    """The calls (parent runs) of an experiment, newest first: parent_run_id, name, start_time, status, configs,
    call_folder (relative to the runner's output folder)."""
    client = open_store(tracking_uri)
    exp = _experiment(client, tracking_uri, experiment)
    parents = client.search_runs([exp.experiment_id], filter_string="tags.kind = 'parent'",
                                 order_by=["attributes.start_time DESC"], max_results=5000)
    return pd.DataFrame([{"parent_run_id": r.info.run_id, "name": r.info.run_name, "start_time": r.info.start_time,
                          "status": r.info.status, "configs": r.data.tags.get("configs", ""),
                          "call_folder": r.data.tags.get("call_folder")} for r in parents],
                        columns=["parent_run_id", "name", "start_time", "status", "configs", "call_folder"])


def load_runs(tracking_uri: str, experiment: str, calls: str | Sequence[str] = "latest") -> pd.DataFrame:
    """Child runs as rows with COLUMNS plus parent_run_id, start_time, num_classes, val_size and model.*/train.*.

    calls: "latest" (default: the newest call), "all" (every call, pooled), or parent run ids (pooled).
    Pooled rows are de-duplicated and checked as the module docstring says.
    """
    client = open_store(tracking_uri)
    exp = _experiment(client, tracking_uri, experiment)
    if calls == "latest":
        newest = list_calls(tracking_uri, experiment)
        if newest.empty:
            raise ReportError(f"experiment {experiment!r} holds no runner call")
        calls = [newest["parent_run_id"].iloc[0]]
    query = "tags.kind = 'train'"
    runs = client.search_runs([exp.experiment_id], filter_string=query, max_results=5000)
    if calls != "all":
        runs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in set(calls)]
    frame = pd.DataFrame([_row(run) for run in runs])
    if frame.empty:
        return pd.DataFrame(columns=COLUMNS)
    frame = _one_per_planned_run(frame)
    pooled = calls == "all" or len(calls) > 1
    return pool(frame) if pooled else frame.reset_index(drop=True)


def _one_per_planned_run(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per planned run of a call (parent, configuration, seed): a call resumed by older code may hold a
    second child of the same run beside an abandoned one; the FINISHED one counts, else the newest."""
    ranked = frame.assign(_finished=frame["status"] == "FINISHED").sort_values(["_finished", "start_time"],
                                                                               ascending=False)
    kept = ranked.drop_duplicates(subset=["parent_run_id", "config", "seed"], keep="first")
    return kept.drop(columns="_finished").sort_index().reset_index(drop=True)  # in the store's order, as before


def _row(run) -> dict:
    m, t, p = run.data.metrics, run.data.tags, run.data.params
    reported = t.get("reported_metric", "val_top1")
    row = {"run_id": run.info.run_id, "config": t.get("config", run.info.run_name),
           "seed": int(p.get("train.seed", -1)), "status": run.info.status,
           "top1": m.get("final_val_top1", m.get(reported)), "best_top1": m.get("best_val_top1"),
           "params": m.get("params"), "macs": m.get("macs"), "latency_ms": m.get("latency_ms"),
           "img_per_s": m.get("img_per_s"), "is_reference": t.get("is_reference") == "true",
           "parent_run_id": t.get("mlflow.parentRunId"), "start_time": run.info.start_time,
           "reported_metric": reported,
           "num_classes": int(p["data.num_classes"]) if "data.num_classes" in p else None,
           "val_size": _scored_images(m, p),
           "epoch_val_size": int(p["data.val_size"]) if "data.val_size" in p else None}
    logged = {k.removeprefix("train."): v for k, v in p.items() if k.startswith("train.")}
    if logged:
        trained = TrainConfig.as_logged_before(logged)
        trained["final_val_size"] = _final_images_logged(trained)
        row.update(flatten(trained, "train."))
    row.update({k: v for k, v in p.items() if k.startswith("model.")})
    return row


def _final_images_logged(train: dict) -> str:
    """The logged `final_val_size` as the images it means (unset: 10000 or none, by dataset and per-epoch size),
    so that two spellings of one scoring identify the same training (the search compares it alike)."""
    def number(value):
        return None if value in (None, "None") else int(value)

    try:
        return str(final_val_images(TrainConfig(dataset=str(train["dataset"]), val_size=number(train["val_size"]),
                                                final_val_size=number(train["final_val_size"]))))
    except (TypeError, ValueError):  # not a size this code accepts: compared as logged
        return str(train["final_val_size"])


def _scored_images(metrics: dict, params: dict) -> int | None:
    """How many validation images a run's reported top-1 is on: its final scoring's, else its per-epoch set's."""
    if "final_val_images" in metrics:
        return int(metrics["final_val_images"])
    return int(params["data.val_size"]) if "data.val_size" in params else None


def identity_columns(frame: pd.DataFrame) -> list[str]:
    """The params that define what a run learnt: every model.* and train.* param except bookkeeping."""
    return sorted(c for c in frame.columns if c.startswith(("model.", "train.")) and c not in BOOKKEEPING)


def pool(frame: pd.DataFrame) -> pd.DataFrame:
    """Runs of several calls: one row per (configuration, training configuration, seed), the newest; a label
    that names different configurations is refused (ReportError)."""
    key = identity_columns(frame)
    for label, group in frame.groupby("config", sort=False):
        distinct = group[key].fillna("").drop_duplicates()
        if len(distinct) > 1:
            differing = [c for c in key if distinct[c].nunique() > 1]
            raise ReportError(f"label {label!r} names {len(distinct)} different configurations in the pooled calls "
                              f"(they differ in {', '.join(differing[:5])}): report one call, or pool calls that "
                              "trained the same configurations")
    newest_first = frame.sort_values("start_time", ascending=False)
    kept = newest_first.drop_duplicates(subset=[*key, "seed"], keep="first")
    return kept.sort_values("start_time").reset_index(drop=True)


def summarize(runs: pd.DataFrame, num_classes: int | None = None, val_size: int | None = None) -> pd.DataFrame:
    """Per configuration (in first-seen order): seeds, top-1 mean and 95 % t-CI half-width, cost columns, and
    `at_chance` (mean top-1 within or below the 95 % binomial interval of chance; None if classes are unknown)."""
    num_classes = num_classes or _single(runs, "num_classes")
    val_size = val_size or _single(runs, "val_size")
    chance = chance_interval(num_classes, val_size) if num_classes and val_size else None
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
                     "is_reference": bool(runs.loc[runs["config"] == config, "is_reference"].any()),
                     "at_chance": None if chance is None or math.isnan(mean) else bool(mean <= chance[1])})
    return pd.DataFrame(rows)


def apply_costs(summary: pd.DataFrame, costs: dict[str, dict[str, float]] | None) -> pd.DataFrame:
    """The summary with its latency and throughput replaced by the interleaved timings (`experiments.runner.call_costs`):
    median and quartiles per configuration, all timed in the same rounds."""
    if not costs:
        return summary
    summary = summary.copy()
    for column in ("latency_ms", "latency_ms_q1", "latency_ms_q3", "img_per_s", "img_per_s_q1", "img_per_s_q3"):
        summary[column] = [costs.get(c, {}).get(column, math.nan) for c in summary["config"]]
    first = next(iter(costs.values()))
    rounds = f"{first['timing_rounds']:g} " if isinstance(first.get("timing_rounds"), (int, float)) else ""
    threads = f", {first['timing_threads']:g} thread(s)" if isinstance(first.get("timing_threads"), (int, float)) else ""
    summary.attrs["timing"] = (f"latency (batch 1, forward) and train img/s (one optimisation step at the call's "
                               f"batch size): median (IQR) of {rounds}interleaved rounds after training{threads}, "
                               "every configuration in the same rounds")
    return summary


def _single(runs: pd.DataFrame, column: str):
    values = runs[column].dropna().unique() if column in runs else []
    return int(values[0]) if len(values) == 1 else None


def compare_to_reference(runs: pd.DataFrame) -> pd.DataFrame:
    """Each configuration against the reference: the difference in top-1 with its paired interval (over the seeds
    both trained: they share data order and init), Welch's interval, and the verdict with the rule that decided
    (`experiments.stats.VERDICT_RULES`)."""
    done = runs[runs["status"] == "FINISHED"]
    reference = done[done["is_reference"]]
    ref, ref_seeds = reference["top1"].astype(float).tolist(), reference["seed"].astype(int).tolist()
    rows = []
    if not ref:
        return pd.DataFrame(rows)
    for config in dict.fromkeys(done.loc[~done["is_reference"], "config"]):
        group = done[done["config"] == config]
        values, seeds = group["top1"].astype(float).tolist(), group["seed"].astype(int).tolist()
        d = compare(values, ref, seeds_a=seeds, seeds_b=ref_seeds)
        paired = d.paired or (math.nan, math.nan, math.nan)
        rows.append({"config": config, "diff": d.diff, "paired_diff": paired[0], "paired_low": paired[1],
                     "paired_high": paired[2], "paired_seeds": d.paired_seeds, "welch_low": d.low,
                     "welch_high": d.high, "welch_df": d.df, "welch_excludes_0": d.welch_excludes_zero,
                     "cis_overlap": d.cis_overlap, "exceeds_seed_noise": d.exceeds_noise, "verdict": d.verdict,
                     "rule": VERDICT_RULES[d.verdict], "equivalence_bound": d.bound,
                     "seeds_needed": d.seeds_needed if d.seeds_needed is not None else math.nan, "seeds": len(values),
                     "reference_seeds": len(ref)})
    return pd.DataFrame(rows)


def resolution(runs: pd.DataFrame) -> dict[str, float]:
    """What a call can resolve, from its own runs: the seed standard deviation pooled over its configurations, the
    standard deviation of per-seed differences to the reference (pooled), and the minimum detectable difference
    (two-sided 5 %, power 0.8) for the call's seeds per configuration, unpaired and paired."""
    done = runs[runs["status"] == "FINISHED"]
    groups = [g["top1"].astype(float).to_numpy() for _, g in done.groupby("config") if len(g) >= 2]
    out = {"seeds": int(done.groupby("config").size().min()) if len(done) else 0, "seed_sd": math.nan,
           "diff_sd": math.nan, "mdd": math.nan, "mdd_paired": math.nan}
    if groups:
        dof = sum(len(g) - 1 for g in groups)
        out["seed_sd"] = math.sqrt(sum(((g - g.mean()) ** 2).sum() for g in groups) / dof)
        out["mdd"] = min_detectable_difference(out["seed_sd"], out["seeds"])
    reference = done[done["is_reference"]].set_index("seed")["top1"].astype(float)
    diffs = []
    for config, group in done[~done["is_reference"]].groupby("config"):
        d = group.set_index("seed")["top1"].astype(float) - reference
        d = d.dropna().to_numpy()
        if len(d) >= 2:
            diffs.append(d)
    if diffs:
        dof = sum(len(d) - 1 for d in diffs)
        out["diff_sd"] = math.sqrt(sum(((d - d.mean()) ** 2).sum() for d in diffs) / dof)
        out["mdd_paired"] = min_detectable_difference(out["diff_sd"], out["seeds"], paired=True)
    return out


def resolution_sentence(res: dict[str, float]) -> str:
    """'With 3 seeds this call resolves differences >= X points ...', computed (never typed in)."""
    if math.isnan(res["seed_sd"]):
        return ("With one seed per configuration this call measures no seed noise and resolves nothing: "
                "run --seeds 2 or more (`python experiments/ablate.py --calibrate` measures the instrument).")
    text = (f"With {res['seeds']} seeds per configuration this call resolves differences ≥ {res['mdd']:.1f} points "
            f"unpaired (seed sd {res['seed_sd']:.2f}, pooled over its configurations")
    if not math.isnan(res["mdd_paired"]):
        text += (f"), ≥ {res['mdd_paired']:.1f} points paired (sd of per-seed differences {res['diff_sd']:.2f}")
    return text + "): two-sided 5 % test, power 0.8."


def looks_sentence(seed_counts: Sequence[int] | None, next_seed: int, confirmation: bool = False,
                   fresh: str | None = None) -> str | None:
    """What a call whose seeds were added after a report can claim; None for a call looked at once. `seed_counts`:
    the seeds per configuration of each report (`Call.seed_counts`; a one-seed report resolves nothing and is no
    look); `confirmation`: the call is a search's confirmation, extended by a larger `search.py --confirm`, not by
    `ablate.py --resume --seeds`; `fresh`: the command that confirms at fresh seeds, if the caller knows it. Its
    intervals are fixed-sample ones, and a difference of 0 had a chance at every look
    (`stats.repeated_looks_error`): computed, not typed in."""
    looks = [n for n in seed_counts or () if n >= 2]
    if len(looks) < 2:
        return None
    rate = repeated_looks_error(looks)
    added_by = "a larger `--confirm` of the search" if confirmation else "`--resume --seeds`"
    where = ""  # a whole command names itself; bare flags go on the confirmation's ablate.py command
    if fresh is None:
        fresh = f"--seed {next_seed} --seeds {looks[-1]}"
        where = " on the confirmation's ablate.py command" if confirmation else ""
    return (f"This call was reported at {' → '.join(map(str, looks))} seeds per configuration (seeds added by "
            f"{added_by}): {len(looks)} looks at the data. Its intervals are computed as fixed-sample 95 % "
            f"intervals; if seeds were added because a report was unresolved, a true difference of 0 is called "
            f"beyond noise at one look or another with probability up to {100 * rate:.1f} %, not 5 % (per "
            "comparison, paired seeds, normal per-seed differences, Monte Carlo; an equivalence verdict's error grows "
            f"too). Where that matters, confirm at fresh seeds in a new call (`{fresh}`{where}).")


def conclusions(summary: pd.DataFrame, comparison: pd.DataFrame) -> list[str]:
    """One sentence per compared configuration, computed from the numbers (never typed in), naming the rule."""
    sentences = []
    chance = {r["config"]: r["at_chance"] for _, r in summary.iterrows()}
    for _, r in comparison.iterrows():
        at_chance = [c for c in (r["config"], _reference(summary)) if chance.get(c)]
        if at_chance:
            sentences.append(f"`{r['config']}` vs the reference: not interpretable, {' and '.join(at_chance)} "
                             "at chance level.")
            continue
        verb = "gains" if r["diff"] > 0 else "loses"
        if r["verdict"] == "undetermined":
            sentences.append(f"`{r['config']}` {verb} {abs(r['diff']):.1f} points against the reference with one "
                             "seed: no confidence interval; run --seeds 2 or more.")
            continue
        intervals = f"Welch 95 % CI [{r['welch_low']:+.1f}, {r['welch_high']:+.1f}]"
        if r["paired_seeds"] >= 2:
            intervals = (f"paired 95 % CI [{r['paired_low']:+.1f}, {r['paired_high']:+.1f}] over "
                         f"{r['paired_seeds']} shared seeds; " + intervals)
        verdict = {
            "separated": "separated: the two 95 % CIs do not overlap",
            "paired": "resolved by the paired interval (it excludes 0), although the two 95 % CIs overlap",
            "welch": "Welch's interval excludes 0, but the two 95 % CIs overlap and the seeds are not shared",
            "equivalent": (f"equivalent: no difference larger than {r['equivalence_bound']:.1f} points, within the "
                           f"±{EQUIVALENCE_MARGIN:g}-point margin (90 % interval, two one-sided tests at 5 %)"),
            "unresolved": (f"unresolved: the 90 % interval allows differences up to {r['equivalence_bound']:.1f} "
                           f"points, wider than the ±{EQUIVALENCE_MARGIN:g}-point equivalence margin; "
                           + (f"about {int(r['seeds_needed'])} seeds per arm would resolve it at this noise"
                              if not pd.isna(r["seeds_needed"]) else f"more than {SEEDS_LIMIT} seeds per arm would "
                              "be needed at this noise")),
        }[r["verdict"]]
        sentences.append(f"`{r['config']}` {verb} {abs(r['diff']):.1f} points against the reference "
                         f"({intervals}; {r['seeds']} vs {r['reference_seeds']} seeds): {verdict}.")
    return sentences


def _reference(summary: pd.DataFrame) -> str | None:
    refs = summary.loc[summary["is_reference"], "config"]
    return refs.iloc[0] if len(refs) else None


def call_report(results, reference_label: str | None, num_classes: int, val_size: int,
                costs: dict[str, dict[str, float]] | None = None):
    """The end-of-call report: (terminal text, markdown, [(file name, csv text)], summary rows) for the parent run.

    Summary rows: one dict per configuration (config, top1_mean, top1_ci95 and, against the reference, diff,
    welch_low, welch_high, paired_low, paired_high, verdict, seeds_needed, seeds), what `Tracker.log_call_summary` logs as
    the parent's metrics (the intervals) and `Results.rows` gives the caller.

    costs: the interleaved timings of `experiments.runner.call_costs` (label -> latency/throughput with quartiles); they
    replace the per-run timings, which were taken one after another under whatever load there was.
    """
    frame = results_frame(results, reference_label=reference_label)
    summary = apply_costs(summarize(frame, num_classes, val_size), costs)
    text = format_summary(summary, num_classes=num_classes, val_size=val_size)
    markdown = "## Summary\n\n" + format_summary(summary, markdown=True, num_classes=num_classes, val_size=val_size)
    files = [("summary.csv", summary.to_csv(index=False)), ("runs.csv", frame.to_csv(index=False))]
    rows = summary[["config", "top1_mean", "top1_ci95"]]
    if frame["is_reference"].any() and (~frame["is_reference"]).any():
        comparison = compare_to_reference(frame)
        rows = rows.merge(comparison[["config", "diff", "welch_low", "welch_high", "paired_low", "paired_high",
                                      "verdict", "seeds_needed", "seeds"]], on="config", how="left")
        sentences = conclusions(summary, comparison)
        rules = "; ".join(f"{k}: {v}" for k, v in VERDICT_RULES.items() if k != "undetermined")
        text += "\n\n" + format_comparison(comparison) + "\n\n" + "\n".join(sentences)
        markdown += ("\n\n## Against the reference\n\n" + format_comparison(comparison, markdown=True)
                     + f"\n\nCI: Student t over seeds. Verdicts, strictest first: {rules}.\n\n"
                     + "\n".join(f"- {s}" for s in sentences))
        files.append(("comparison.csv", comparison.to_csv(index=False)))
    from .paper_table import format_paper_comparison, paper_comparison

    against_paper = paper_comparison(frame)
    if len(against_paper):
        note = ("Paper vs here: the paper's ImageNet-1k differences beside ours; a direction counts only where our "
                "verdict resolved it.")
        text += "\n\n" + format_paper_comparison(against_paper) + "\n" + note
        markdown += "\n\n## Paper vs here\n\n" + format_paper_comparison(against_paper, markdown=True) + "\n\n" + note
        files.append(("paper_comparison.csv", against_paper.to_csv(index=False)))
    sentence = resolution_sentence(resolution(frame))
    text += "\n\n" + sentence
    markdown += "\n\n" + sentence
    return text, markdown, files, rows.to_dict("records")


def load_histories(tracking_uri: str, runs: pd.DataFrame,
                   metrics: Sequence[str] = ("train_loss", "reported")) -> pd.DataFrame:
    """Long table of per-epoch metrics: run_id, config, seed, metric, epoch, value. "reported" is each run's
    reported top-1 (`val_top1`, or `val_top1_ema` for a run that kept an EMA)."""
    client = open_store(tracking_uri)
    rows = []
    for _, run in runs.iterrows():
        for name in metrics:
            key = run.get("reported_metric", "val_top1") if name == "reported" else name
            for point in client.get_metric_history(run["run_id"], key):
                rows.append({"run_id": run["run_id"], "config": run["config"], "seed": run["seed"],
                             "metric": name, "epoch": point.step, "value": point.value})
    return pd.DataFrame(rows, columns=["run_id", "config", "seed", "metric", "epoch", "value"])


def _first(values: pd.Series):
    values = values.dropna()
    return values.iloc[0] if len(values) else math.nan


def format_summary(summary: pd.DataFrame, markdown: bool = False, num_classes: int | None = None,
                   val_size: int | None = None) -> str:
    """Plain-text or markdown table: configuration, seeds, top-1 mean ± 95 % CI, params, MACs, images/s; a
    configuration at chance level is marked "(chance!)"."""
    header = ["configuration", "seeds", "top-1 % (mean ± 95% CI)", "params (M)", "MACs (M, fvcore)",
              "latency bs1 (ms)", "train img/s"]
    lines = []
    for _, r in summary.iterrows():
        ci = "n/a" if math.isnan(r["top1_ci95"]) else f"{r['top1_ci95']:.2f}"
        name = r["config"] + (" *" if r["is_reference"] else "") + (" (chance!)" if r.get("at_chance") else "")
        seeds = f"{r['seeds']}" + (f" (+{r['failed']} failed)" if r["failed"] else "")
        lines.append([name, seeds, f"{r['top1_mean']:.2f} ± {ci}", _fmt(r["params"], 1e6, 3), _fmt(r["macs"], 1e6, 1),
                      _with_iqr(r, "latency_ms", 2), _with_iqr(r, "img_per_s", 0)])
    notes = "* = reference (every switch at its default)"
    if summary.attrs.get("timing"):
        notes += "; " + summary.attrs["timing"]
    if val_size:
        notes += f"; top-1 = the final weights on {val_size} validation images"
    if num_classes and val_size:
        low, high = chance_interval(num_classes, val_size)
        notes += (f"; (chance!) = mean top-1 within or below chance, the 95 % binomial interval of "
                  f"1/{num_classes} on {val_size} images: [{low:.1f}, {high:.1f}] %")
    return _table(header, lines, markdown) + "\n" + notes


def format_comparison(comparison: pd.DataFrame, markdown: bool = False) -> str:
    header = ["configuration", "Δ top-1 vs reference", "paired 95% CI", "Welch 95% CI", "CIs overlap", "verdict"]
    lines = []
    for _, r in comparison.iterrows():
        welch = "n/a (needs 2 seeds)" if math.isnan(r["welch_low"]) else f"[{r['welch_low']:+.2f}, {r['welch_high']:+.2f}]"
        paired = "n/a" if r["paired_seeds"] < 2 else f"[{r['paired_low']:+.2f}, {r['paired_high']:+.2f}]"
        overlap = {True: "yes", False: "no", None: "n/a"}[r["cis_overlap"]]
        verdict = verdict_cell(r)
        lines.append([r["config"], f"{r['diff']:+.2f}", paired, welch, overlap, verdict])
    return _table(header, lines, markdown)


def verdict_cell(row) -> str:
    """A `compare_to_reference` row's verdict as a table cell: 'equivalent (±1.2)', 'unresolved (±6.5; ~9 seeds)'."""
    needed = None if pd.isna(row.get("seeds_needed", math.nan)) else int(row["seeds_needed"])
    return verdict_text(row["verdict"], row["equivalence_bound"], needed)


def _with_iqr(row, column: str, digits: int) -> str:
    """'median (q1–q3)' when the quartiles are known (interleaved timing), else the value alone."""
    value = _fmt(row[column], 1, digits)
    low, high = row.get(f"{column}_q1"), row.get(f"{column}_q3")
    if low is None or high is None or value == "n/a" or math.isnan(float(low)):
        return value
    return f"{value} ({_fmt(low, 1, digits)}–{_fmt(high, 1, digits)})"


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


def learning_curve_figure(history: list[dict[str, float]], path: str | Path, title: str = "",
                          metric: str = "val_top1") -> Path:
    """Train loss and the reported validation top-1 (`metric`) against epoch, saved as PNG."""
    from matplotlib.figure import Figure  # no pyplot: never switches the backend of a notebook that runs us

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(8, 3))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    ax1.plot(epochs, [h["val_loss"] for h in history], marker="o", label="val")
    ax1.set(xlabel="epoch", ylabel="loss")
    ax1.legend()
    ax2.plot(epochs, [h[metric] for h in history], marker="o", label=metric.replace("_", " "))
    ax2.plot(epochs, [h["train_top1"] for h in history], marker=".", linestyle="--", label="train top-1")
    ax2.set(xlabel="epoch", ylabel="accuracy (%)")
    ax2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def load_call_summary(tracking_uri: str, parent_run_id: str) -> pd.DataFrame | None:
    """The summary table a call stored on its parent run (`summary.csv`: with the interleaved cost timings and
    their quartiles), or None for a call that ended before writing it."""
    import tempfile

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    if "summary.csv" not in {a.path for a in client.list_artifacts(parent_run_id)}:
        return None
    previous = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # one small file: no progress bar in notebooks
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return pd.read_csv(client.download_artifacts(parent_run_id, "summary.csv", tmp))
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = previous
