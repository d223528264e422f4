"""What a search found: tables, the reference's distance to the best trial or the Pareto set, importances, figures.

Used by `experiments/search.py` at the end of a call (printed, and logged to the call's MLflow parent run) and by
`notebooks/04_search_report.ipynb`. Everything is computed from the Optuna study, so a report can be made from any
storage at any time:

    study = optuna.load_study(study_name="sepvit-search", storage="sqlite:////abs/output/optuna.db")
    frame = trials_frame(study)
    print(summary_text(study))

Top-1 is the validation top-1 (%) of a trial's final weights (the runner's reported metric: on 10000 final
images for a generated dataset by default, `TrainConfig.final_val_size`); `macs` is the analytic
count of one image in fvcore's convention (multiply-add = 1), known for every valid trial (also pruned ones);
`latency_ms` is the batch-1 forward latency when the study has the latency objective. One trial is one training
run with one seed: a difference between two trials is not a seed-averaged difference. Whether the best trial's
gain over the paper's configuration is beyond seed noise is one sentence of every report
(`experiments.search_confirm.confirmation_sentence`): from the study's stored confirmation (`search.py --confirm K`),
or "unconfirmed" with the command that confirms it.
"""
from __future__ import annotations

import json
import math
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from experiments.search_confirm import confirmation_sentence
from experiments.stats import chance_interval

COSTS = {"macs": "MACs (analytic, fvcore convention)", "latency_ms": "latency bs1 (ms)"}


# ---------------------------------------------------------------------------------- tables
def objectives_of(study: optuna.Study) -> list[str]:
    """The search's objective names (top1 first); for a study made elsewhere, its Optuna metric names."""
    stored = study.user_attrs.get("sepvit.settings", {})
    if "objectives" in stored:
        return list(stored["objectives"])
    return list(study.metric_names or ["top1", *(f"objective {i}" for i in range(1, len(study.directions)))])


def chance_level(study: optuna.Study) -> tuple[float, int, int] | None:
    """(highest top-1 % that guessing reaches, classes, validation images): the upper end of the 95 % binomial
    interval of 1/classes on the validation set, as the runner's reports use; None if the study does not say."""
    data = study.user_attrs.get("sepvit.data") or {}
    settings = study.user_attrs.get("sepvit.settings", {})
    classes = data.get("num_classes") or settings.get("model", {}).get("num_classes")
    images = data.get("val_size") or settings.get("train", {}).get("val_size")
    if not classes or not images:
        return None
    return chance_interval(int(classes), int(images))[1], int(classes), int(images)


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, reference flag, top1 (COMPLETE trials), the cost columns, each searched
    parameter (NaN where it did not apply), epochs trained, seconds, why a trial was pruned or failed, and
    `at_chance` (a COMPLETE trial whose top-1 is within or below chance level; None where unknown)."""
    objectives = objectives_of(study)
    chance = chance_level(study)
    rows = []
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"number": t.number, "state": t.state.name, "reference": bool(t.user_attrs.get("reference"))}
        values = t.values if t.state == TrialState.COMPLETE and t.values else [math.nan] * len(objectives)
        row["top1"] = values[0]
        row["macs"] = t.user_attrs.get("macs", math.nan)
        row["latency_ms"] = t.user_attrs.get("latency_ms", math.nan)
        row["last_reported_top1"] = (t.intermediate_values[max(t.intermediate_values)]
                                     if t.intermediate_values else row["top1"])
        row.update({f"param {k}": v for k, v in t.params.items()})
        row["epochs"] = t.user_attrs.get("epochs", math.nan)
        row["seconds"] = t.duration.total_seconds() if t.duration else math.nan
        row["note"] = (t.user_attrs.get("invalid") or t.user_attrs.get("fail_reason")
                       or t.user_attrs.get("pruned_reason") or "")
        row["call"] = t.user_attrs.get("mlflow_parent_run_id")
        row["duplicate_of"] = t.user_attrs.get("duplicate_of", math.nan)
        row["at_chance"] = (None if chance is None or _missing(row["top1"]) else bool(row["top1"] <= chance[0]))
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=["number", "state", "reference", "top1", "macs", "latency_ms"])
    return frame


def param_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith("param ")]


def completed(frame: pd.DataFrame) -> pd.DataFrame:
    """COMPLETE trials, without repeats of an earlier trial (`duplicate_of`: values reused, not a new run)."""
    done = frame[frame["state"] == "COMPLETE"]
    if "duplicate_of" in done:
        done = done[done["duplicate_of"].isna()]
    return done.reset_index(drop=True)


def reference_row(frame: pd.DataFrame) -> pd.Series | None:
    """The reference trial (the base configuration, enqueued first), preferring a COMPLETE one."""
    refs = frame[frame["reference"]] if "reference" in frame else frame.iloc[0:0]
    if refs.empty:
        return None
    done = refs[refs["state"] == "COMPLETE"]
    return (done if not done.empty else refs).iloc[0]


def pareto_front(frame: pd.DataFrame, cost: str = "macs") -> pd.DataFrame:
    """COMPLETE trials that no other COMPLETE trial beats on both top-1 (higher) and `cost` (lower), by cost."""
    done = completed(frame).dropna(subset=["top1", cost])
    keep = []
    for i, row in done.iterrows():
        dominated = ((done["top1"] >= row["top1"]) & (done[cost] <= row[cost])
                     & ((done["top1"] > row["top1"]) | (done[cost] < row[cost]))).any()
        if not dominated:
            keep.append(i)
    return done.loc[keep].sort_values(cost).reset_index(drop=True)


def differences(row: pd.Series, ref: pd.Series, params: list[str]) -> str:
    """The parameters in which `row` differs from the reference: 'group_size.2 2->1, window_token learnable->zero'."""
    out = []
    for column in params:
        a, b = ref.get(column), row.get(column)
        if _missing(a) and _missing(b):
            continue
        if _missing(a) or _missing(b) or a != b:
            out.append(f"{column[len('param '):]} {_fmt(a)}->{_fmt(b)}")
    return ", ".join(out) or "none (the same configuration)"


def _flagged(value: Any) -> bool:
    """An `at_chance` cell is True (not False, None or NaN; numpy's bool counts)."""
    return not _missing(value) and bool(value)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _fmt(value: Any) -> str:
    if _missing(value):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def best_rows(study: optuna.Study, frame: pd.DataFrame) -> pd.DataFrame:
    """The best trial (one objective) or the Pareto set (several), as rows of `frame`."""
    try:
        numbers = [t.number for t in study.best_trials] if study._is_multi_objective() else [study.best_trial.number]
    except ValueError:  # no COMPLETE trial yet
        numbers = []
    return frame[frame["number"].isin(numbers)].sort_values("top1", ascending=False).reset_index(drop=True)


# ---------------------------------------------------------------------------------- importances
IMPORTANCE_METHOD = "PED-ANOVA"


def importance_target(study: optuna.Study, index: int):
    """The `target` that makes Optuna rank parameters for objective `index` in the study's own direction, or None
    where Optuna reads the direction itself (one objective). With a `target`, PED-ANOVA takes lower as better, so a
    maximised objective is negated; passing `t.values[i]` as is would rank what predicts a LOW top-1."""
    if not study._is_multi_objective():
        return None
    sign = -1.0 if study.directions[index] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return lambda t: sign * t.values[index]


def importances(study: optuna.Study) -> dict[str, dict[str, float]]:
    """Parameter importances (Optuna's default evaluator, PED-ANOVA) for each objective in its own direction, most
    important first; empty where Optuna cannot assess them yet (too few COMPLETE trials, or no parameter varied).
    The printed report, `importances.json`, the figure and notebook 04 all use this function."""
    out: dict[str, dict[str, float]] = {}
    for i, name in enumerate(objectives_of(study)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna warns that a `target` is read as lower-is-better: it is
                values = optuna.importance.get_param_importances(study, target=importance_target(study, i))
            out[name] = {k: float(v) for k, v in values.items()}
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            out[name] = {}
            out.setdefault("_why", {})[name] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return out


def importance_lines(study: optuna.Study, found: dict[str, dict[str, float]]) -> list[str]:
    """One line per objective: 'importance for top1 (maximised): a 0.93, b 0.07'."""
    why = found.get("_why", {})
    lines = []
    for name, direction in zip(objectives_of(study), _direction_words(study)):
        if found.get(name):
            lines.append(f"importance for {name} ({direction}, {IMPORTANCE_METHOD}): "
                         + ", ".join(f"{k} {v:.2f}" for k, v in found[name].items()))
        else:
            lines.append(f"importance for {name}: not available ({why.get(name, 'no data')})")
    return lines


def plot_importances(study: optuna.Study, found: dict[str, dict[str, float]]):
    """One horizontal bar chart per objective that has importances (most important at the top), drawn from
    `found` (the output of `importances`), so the figure shows the numbers of the report; None if there are none."""
    import matplotlib.pyplot as plt

    shown = [(name, direction) for name, direction in zip(objectives_of(study), _direction_words(study))
             if found.get(name)]
    if not shown:
        return None
    rows = max(len(found[name]) for name, _ in shown)
    fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 0.45 * rows + 1.5), squeeze=False)
    for ax, (name, direction) in zip(axes[0], shown):
        names = list(found[name])[::-1]  # barh draws bottom-up: the most important last, at the top
        values = [found[name][n] for n in names]
        bars = ax.barh(names, values, color="C0")
        ax.bar_label(bars, fmt="%.2f", padding=2, fontsize=8)
        ax.set(xlim=(0, 1.1), xlabel=f"importance ({IMPORTANCE_METHOD}, sums to 1)",
               title=f"{name} ({direction})")
    fig.tight_layout()
    return fig


def _direction_words(study: optuna.Study) -> list[str]:
    return ["maximised" if d == optuna.study.StudyDirection.MAXIMIZE else "minimised" for d in study.directions]


# ---------------------------------------------------------------------------------- text
def summary_text(study: optuna.Study, started: float | None = None, parent_run_id: str | None = None,
                 max_rows: int = 20, found: dict[str, dict[str, float]] | None = None,
                 train: dict[str, Any] | None = None) -> str:
    """The end-of-call report: counts, the best trial or Pareto set, the reference and the distance to it, whether
    the best trial's gain is beyond seed noise (the confirmation, or the command that confirms it: `train`, the
    call's full training settings, completes the command's flags), the trials table (best first) and importances
    (`found`, from `importances`, computed here if not given)."""
    frame = trials_frame(study)
    objectives = objectives_of(study)
    counts = frame["state"].value_counts().to_dict() if not frame.empty else {}
    lines = [f"study {study.study_name!r}: {len(frame)} trials ("
             + ", ".join(f"{counts.get(s, 0)} {s.lower()}" for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")
                         if counts.get(s, 0) or s != "RUNNING") + ")"]
    if started is not None and parent_run_id is not None:
        mine = frame[frame["call"] == parent_run_id]
        minutes = (time.time() - started) / 60
        per_trial = mine["seconds"].dropna()
        lines.append(f"this call: {len(mine)} trials in {minutes:.1f} min"
                     + (f" (median {per_trial.median():.0f} s per trial)" if len(per_trial) else ""))
    lines.append("objectives: " + ", ".join(objectives) + "; top-1 = validation top-1 (%) of the final weights, one "
                 "training run (one seed) per trial")
    params = param_columns(frame)
    ref = reference_row(frame)
    best = best_rows(study, frame)
    if best.empty:
        lines.append("no COMPLETE trial yet")
    else:
        lines.append("Pareto set (top-1 against " + ", ".join(objectives[1:]) + "):" if len(objectives) > 1
                     else "best trial:")
        for _, row in best.iterrows():
            lines.append("  " + _row_text(row, params, objectives))
    if ref is None:
        lines.append("reference (the base configuration): not in this study")
    else:
        state = ref["state"]
        lines.append(f"reference (the base configuration, trial {int(ref['number'])}): "
                     + (_row_text(ref, params, objectives) if state == "COMPLETE" else f"{state}"))
        if state == "COMPLETE" and not best.empty:
            for _, row in best.iterrows():
                lines.append(f"  trial {int(row['number'])} vs reference: {distance_text(row, ref, objectives)}; "
                             f"differs in {differences(row, ref, params)}")
            if len(objectives) > 1:
                on_front = int(ref["number"]) in set(best["number"])
                lines.append(f"  the reference is {'on' if on_front else 'not on'} the Pareto front")
    sentence = confirmation_sentence(study, train)
    if sentence:
        lines.append(sentence)
    done = completed(frame).sort_values("top1", ascending=False)
    lines.extend(chance_lines(study, done))
    if len(done):
        lines.append("")
        shown = done.head(max_rows)
        table = shown[["number", "top1", "macs", *(["latency_ms"] if "latency" in objectives else []), *params]]
        table = table.rename(columns={c: c[len("param "):] for c in params})
        table = table.assign(macs=(table["macs"] / 1e6).round(2)).rename(columns={"macs": "MMACs"})
        if shown["at_chance"].map(_flagged).any():
            table = table.assign(chance=["(chance!)" if _flagged(flag) else "" for flag in shown["at_chance"]])
        lines.append(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
        if len(done) > max_rows:
            lines.append(f"... {len(done) - max_rows} more COMPLETE trials")
    lines.extend(importance_lines(study, importances(study) if found is None else found))
    return "\n".join(lines)


def chance_lines(study: optuna.Study, done: pd.DataFrame) -> list[str]:
    """A warning naming the COMPLETE trials at chance level (they learned nothing: their parameters and their
    distance to the reference say nothing); no line when none is, or when the study does not say its classes."""
    chance = chance_level(study)
    flagged = done[done["at_chance"].map(_flagged)] if "at_chance" in done else done.iloc[0:0]
    if chance is None or flagged.empty:
        return []
    high, classes, images = chance
    which = ("every COMPLETE trial" if len(flagged) == len(done)
             else f"{len(flagged)} of {len(done)} COMPLETE trials")
    numbers = ", ".join(str(int(n)) for n in sorted(flagged["number"])[:20]) + (" ..." if len(flagged) > 20 else "")
    advice = ("train longer or on more images before reading rankings or importances" if len(flagged) == len(done)
              else "leave them out of any comparison")
    return [f"(chance!) {which} at chance level (trials {numbers}): top-1 <= {high:.1f} %, the upper end of the "
            f"95 % binomial interval of guessing 1 of {classes} classes on {images} validation images; {advice}"]


def _row_text(row: pd.Series, params: list[str], objectives: list[str]) -> str:
    costs = f"  {row['macs'] / 1e6:.2f} MMACs" if not _missing(row.get("macs")) else ""
    if "latency" in objectives and not _missing(row.get("latency_ms")):
        costs += f"  {row['latency_ms']:.2f} ms"
    settings = " ".join(f"{c[len('param '):]}={_fmt(row[c])}" for c in params if not _missing(row.get(c)))
    chance = " (chance!)" if _flagged(row.get("at_chance")) else ""
    return f"trial {int(row['number'])}: top-1 {row['top1']:.2f}{chance}{costs} | {settings}"


def distance_text(row: pd.Series, ref: pd.Series, objectives: list[str]) -> str:
    parts = [f"top-1 {row['top1'] - ref['top1']:+.2f} points"]
    for objective, column in (("macs", "macs"), ("latency", "latency_ms")):
        if (objective in objectives or objective == "macs") and not _missing(row.get(column)) \
                and not _missing(ref.get(column)) and ref[column]:
            parts.append(f"{column.split('_')[0]} x{row[column] / ref[column]:.2f}")
    return ", ".join(parts)


def conclusions(study: optuna.Study, seed_sd: float | None = None) -> list[str]:
    """Sentences computed from the study (the notebook prints them; nothing is typed by hand).

    seed_sd: the seed standard deviation of top-1 measured at the study's budget (`ablate.py --calibrate` with the
    same training settings). Each trial is one seed, so two trials differ by seed noise alone with standard
    deviation sqrt(2) seed_sd; without it the report can only give the validation set's binomial error, which is a
    lower bound of the noise, and says so.
    """
    frame = trials_frame(study)
    done = completed(frame)
    objectives = objectives_of(study)
    out = []
    if done.empty:
        return ["no COMPLETE trial: nothing to conclude"]
    params = param_columns(frame)
    best = done.sort_values("top1", ascending=False).iloc[0]
    ref = reference_row(frame)
    out.append(f"{len(done)} of {len(frame)} trials completed; the most accurate is trial {int(best['number'])} "
               f"({best['top1']:.2f} % top-1, " + ", ".join(
                   f"{c[len('param '):]}={_fmt(best[c])}" for c in params if not _missing(best.get(c))) + ").")
    if ref is not None and ref["state"] == "COMPLETE":
        delta = best["top1"] - ref["top1"]
        out.append(f"The reference configuration reached {ref['top1']:.2f} %; the best trial is {delta:+.2f} points "
                   f"from it, with {differences(best, ref, params)}; MACs x{best['macs'] / ref['macs']:.2f}. "
                   "Each value is one training run.")
        front = pareto_front(frame, "macs")
        on = int(ref["number"]) in set(front["number"])
        out.append(f"Accuracy against MACs: {len(front)} trial(s) on the Pareto front; the reference is "
                   f"{'on it' if on else 'dominated (another trial is at least as accurate for fewer or equal MACs)'}.")
    elif ref is not None:
        out.append(f"The reference trial ended {ref['state']}: no distance to report.")
    sentence = confirmation_sentence(study)
    if sentence:
        out.append(sentence)
    for stage_column in [c for c in params if c.startswith("param group_size.")]:
        groups = done.dropna(subset=[stage_column]).groupby(stage_column)["top1"].agg(["mean", "count"])
        if len(groups) > 1:
            top = groups["mean"].idxmax()
            out.append(f"{stage_column[len('param '):]}: mean top-1 per value "
                       + ", ".join(f"{int(k)}: {v['mean']:.1f} ({int(v['count'])} trials)" for k, v in groups.iterrows())
                       + f"; highest at {int(top)}.")
    settings = study.user_attrs.get("sepvit.settings", {})
    val_size = (study.user_attrs.get("sepvit.data") or {}).get("val_size") or settings.get("train", {}).get("val_size")
    classes = settings.get("model", {}).get("num_classes")
    span = f"the trials span {done['top1'].min():.1f}–{done['top1'].max():.1f} %"
    if seed_sd is not None and not math.isnan(seed_sd):
        gap = 1.96 * math.sqrt(2) * seed_sd
        beyond = int((done["top1"] > (ref["top1"] + gap)).sum()) if ref is not None and ref["state"] == "COMPLETE" else None
        out.append(f"Noise (calibrated at this budget): seed sd {seed_sd:.1f} points, so two single-seed trials differ "
                   f"by up to ±{gap:.1f} points (95 %) by seed alone; {span}"
                   + (f"; {beyond} trial(s) beat the reference by more than that" if beyond is not None else "")
                   + ". A gain is evidence only after a paired multi-seed confirmation (`search.py --confirm 3`, or the "
                   "ablate.py command of the \"Beyond seed noise?\" sentence).")
    elif val_size and classes:
        p = best["top1"] / 100
        half = 196 * math.sqrt(p * (1 - p) / val_size)
        out.append(f"Noise: not calibrated at this budget (pass the seed sd of `ablate.py --calibrate`); the "
                   f"{val_size} validation images alone give one trial's top-1 a 95 % interval of ±{half:.1f} points "
                   f"(binomial), a lower bound of the noise, which seeds add to; chance is {100 / classes:.1f} %; "
                   f"{span}.")
    out.extend(_sentence(line[len("(chance!) "):]) for line in chance_lines(study, done))
    found = importances(study)
    if found.get("top1"):
        name, value = max(found["top1"].items(), key=lambda kv: kv[1])
        out.append(f"The parameter that best separates the most accurate trials from the rest is {name} (importance "
                   f"{value:.2f}, {IMPORTANCE_METHOD}, for a high top-1).")
    if len(objectives) > 1:
        out.append(f"The study optimised {', '.join(objectives)} together: its Pareto set has "
                   f"{len(study.best_trials)} trial(s).")
    return out


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


# ---------------------------------------------------------------------------------- figures
def figures(study: optuna.Study, folder: Path, found: dict[str, dict[str, float]] | None = None) -> list[Path]:
    """Optuna's matplotlib plots (optimisation history, parallel coordinates, and the Pareto front of a
    multi-objective study) and the importances of `importances` (`found`, computed here if not given) as PNG files;
    a plot that cannot be drawn yet (too few trials) is skipped. Optuna's own importance plot is not used: for a
    maximised objective of a multi-objective study it ranks parameters for the opposite direction."""
    # matplotlib and Optuna's plots load only when figures are drawn (0.4 s and 0.9 s to import here), and headless
    # processes fall back to the Agg backend by themselves
    import matplotlib
    from optuna.visualization import matplotlib as ovm

    objectives = objectives_of(study)
    target = (lambda t: t.values[0]) if len(objectives) > 1 else None
    plots = {
        "optimization_history.png": lambda: ovm.plot_optimization_history(study, target=target, target_name="top1"),
        "param_importances.png": lambda: plot_importances(study, importances(study) if found is None else found),
        "parallel_coordinate.png": lambda: ovm.plot_parallel_coordinate(study, target=target, target_name="top1"),
    }
    if len(objectives) > 1:
        plots["pareto_front.png"] = lambda: ovm.plot_pareto_front(study, target_names=objectives)
    written = []
    with matplotlib.rc_context():  # Optuna switches to its ggplot style: keep that out of the caller's plots
        for name, plot in plots.items():
            path = _save_plot(plot, folder / name)
            if path is not None:
                written.append(path)
        # the first figure of a Jupyter session may be drawn here: the inline backend then switches interactive mode
        # on, and rc_context would switch it off again on exit, so that the caller's later figures never show
        interactive = matplotlib.is_interactive()
    matplotlib.interactive(interactive)
    return written


def _save_plot(plot, path: Path) -> Path | None:
    import matplotlib.pyplot as plt

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            drawn = plot()
        if drawn is None:
            return None
        figure = drawn if hasattr(drawn, "savefig") else (
            np.ravel(drawn)[0] if isinstance(drawn, np.ndarray) else drawn).get_figure()
        if drawn is not figure:  # Optuna's plots come at its own small size
            figure.set_size_inches(9, 5)
        figure.tight_layout()
        figure.savefig(path, dpi=90)
        return path
    except (ValueError, RuntimeError, ZeroDivisionError, KeyError, IndexError):
        return None  # too few trials for this plot
    finally:
        plt.close("all")


def finish_study(study: optuna.Study, settings, tracker, parent_run_id: str, started: float) -> str:
    """The end of a call: the report text, and on the MLflow parent run: the best trial or Pareto set (JSON),
    every trial (CSV), importances (JSON), the report (text) and Optuna's figures."""
    found = importances(study)  # once, so that the text, importances.json and the figure show the same numbers
    text = summary_text(study, started, parent_run_id, found=found, train=getattr(settings, "train", None))
    frame = trials_frame(study)
    best = best_rows(study, frame)
    ref = reference_row(frame)
    params = param_columns(frame)
    key = "pareto_set.json" if len(settings.objectives) > 1 else "best_trial.json"
    records = []
    for _, row in best.iterrows():
        record = {"number": int(row["number"]), "top1": row["top1"], "macs": row["macs"],
                  "latency_ms": None if _missing(row.get("latency_ms")) else row["latency_ms"],
                  "params": {c[len("param "):]: row[c] for c in params if not _missing(row.get(c))},
                  "at_chance": None if _missing(row.get("at_chance")) else _flagged(row["at_chance"])}
        if ref is not None and ref["state"] == "COMPLETE":
            record["vs_reference"] = {"reference_trial": int(ref["number"]),
                                      "top1_points": row["top1"] - ref["top1"],
                                      "macs_ratio": row["macs"] / ref["macs"] if ref["macs"] else None,
                                      "differs_in": differences(row, ref, params)}
        records.append(record)
    metrics = {"trials": len(frame), "complete": int((frame["state"] == "COMPLETE").sum()) if len(frame) else 0,
               "pruned": int((frame["state"] == "PRUNED").sum()) if len(frame) else 0,
               "failed": int((frame["state"] == "FAIL").sum()) if len(frame) else 0}
    if chance_level(study) is not None and len(frame):
        metrics["at_chance"] = int(completed(frame)["at_chance"].map(_flagged).sum())
    if len(best):
        metrics["best_top1"] = float(best["top1"].max())
    if ref is not None and ref["state"] == "COMPLETE":
        metrics["reference_top1"] = float(ref["top1"])
        if len(best):
            metrics["best_minus_reference_top1"] = float(best["top1"].max() - ref["top1"])
    tracker.log_metrics(parent_run_id, metrics, step=0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / key).write_text(json.dumps(records, indent=2, default=_json_default))
        (folder / "importances.json").write_text(json.dumps(found, indent=2))
        (folder / "report.txt").write_text(text + "\n")
        frame.to_csv(folder / "trials.csv", index=False)
        for path in [folder / key, folder / "importances.json", folder / "report.txt", folder / "trials.csv",
                     *figures(study, folder, found)]:
            tracker.log_artifact(parent_run_id, path)
    return text


def _json_default(value: Any):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return None if math.isnan(value) else float(value)
    return str(value)
