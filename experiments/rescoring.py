"""Rescoring a finished call on more validation images of its generated dataset (`experiments/rescore.py` is
its command line; notebook 03 reads what it writes).

Every run of a call is scored on the same validation images (1000 for the generated datasets). The intervals over
seeds see how runs differ, not which images were drawn: that choice is one fixed error in every mean difference of
the call, and more seeds do not shrink it. A generated dataset can draw as many validation images as asked, and its
first n are the n a run was scored on (each image is made from its own index), so `rescore` scores each finished
run's final weights (`last.pth`; the EMA's where the run kept one) on N images and gives:

- the call's report (summary, comparison with its verdicts, resolution) on the N images, computed by
  `experiments.report` as the runner's own report is;
- beside it, each comparison on the stored images and on the N, and the error that the choice of images adds to
  each mean difference at both sizes (`experiments.stats.validation_sampling_sd`);
- for a call that trained the paper's comparisons (`--grid paper`), the paper-vs-here table on both sizes.

It first recomputes every run's top-1 on the stored images and refuses to go on if one differs from what the run
recorded by more than REPRODUCED_WITHIN points: the images or the weights are then not those of the run. It trains
nothing and changes no MLflow run. Datasets read from files (digits, CIFAR, an image folder) have no more images to
draw: refused.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from experiments.data import GENERATED, build_datasets_from_key, check_sizes_available, data_key
from experiments.paper_table import format_paper_comparison, paper_comparison
from experiments.report import (COLUMNS, compare_to_reference, conclusions, format_comparison, format_summary,
                                resolution, resolution_sentence, summarize)
from experiments.runner.calls import Call, CallError, PlannedRun
from experiments.runner.checkpoint import CheckpointError, load_checkpoint
from experiments.stats import validation_sampling_sd, verdict_text
from sepvit.config import SepViTConfig
from workbench.cli import UsageError

REPRODUCED_WITHIN = 0.5  # top-1 points: another CPU's rounding may flip an image or two, a wrong image set many
BATCH = 250
DEFAULT_VAL_SIZE = 20000  # image error of a mean difference about 0.05-0.08 points on the default benchmark


# ------------------------------------------------------------------------------------------- scoring
def finished_runs(call: Call) -> tuple[list[PlannedRun], list[str]]:
    """(the runs that finished every planned epoch, the names of those left out)."""
    kept, left = [], []
    for run in call.runs:
        (kept if call.state_of(run) == "finished" else left).append(run)
    return kept, [run.name for run in left]


def final_weights(call: Call, run: PlannedRun) -> torch.nn.Module:
    """The weights the run reported with: its last epoch's, the EMA's if it kept one; in eval mode."""
    path = call.run_dir(run) / "last.pth"
    if not path.is_file():
        raise CallError(f"{run.name}: no {path.name} in {path.parent} (deleted?): its final weights are gone, so the "
                        "call cannot be rescored; rescore a call whose folders are complete")
    ckpt = load_checkpoint(path)
    model = SepViTConfig.from_dict(ckpt["config"]).build()
    state = ckpt["model"]
    if run.train.model_ema:
        if ckpt.get("ema") is None:
            raise CheckpointError(f"{path}: the run reported its EMA's top-1, but the checkpoint holds no EMA")
        state = {k.removeprefix("module."): v for k, v in ckpt["ema"].items()}
    model.load_state_dict(state)
    return model.eval()


def correct_per_image(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Whether the model's top-1 is right, image by image."""
    with torch.inference_mode():
        predicted = torch.cat([model(images[i:i + BATCH]).argmax(-1) for i in range(0, len(images), BATCH)])
    return (predicted == labels).numpy()


def validation_tensors(run: PlannedRun, val_size: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(images, labels) of the first `val_size` validation images of the run's dataset, and how many of them the run
    was scored on."""
    if run.train.dataset not in GENERATED:
        raise UsageError(f"{run.name} was trained on {run.train.dataset!r}, read from files: it has no more validation "
                         f"images to draw; rescore calls on a generated dataset ({', '.join(GENERATED)})")
    _, stored_val, info = build_datasets_from_key(data_key(run.train), img_size=run.model.img_size)
    stored = info.val_size
    if val_size <= stored:
        raise UsageError(f"--val-size {val_size}: {run.name} was already scored on {stored} images; give more than "
                         f"{stored}")
    _, val, info = build_datasets_from_key(data_key(run.train.replace(val_size=val_size)), img_size=run.model.img_size)
    check_sizes_available(info, None, val_size)
    pairs = [val[i] for i in range(val_size)]
    return torch.stack([x for x, _ in pairs]), torch.tensor([int(y) for _, y in pairs]), stored


def score(call: Call, runs: Sequence[PlannedRun], val_size: int) -> tuple[dict[str, np.ndarray], int]:
    """Per-image correctness of every run on `val_size` images (by run folder), and the stored validation size;
    refuses a run whose top-1 on the stored images is not what it recorded."""
    cache: dict[tuple, tuple] = {}
    correct, stored_sizes = {}, set()
    for run in runs:
        key = data_key(run.train)
        if key not in cache:
            cache[key] = validation_tensors(run, val_size)
        images, labels, stored = cache[key]
        stored_sizes.add(stored)
        correct[run.folder] = correct_per_image(final_weights(call, run), images, labels)
        recorded = call.result_of(run)["history"][-1][_metric(run)]
        again = 100.0 * correct[run.folder][:stored].mean()
        if abs(again - recorded) > REPRODUCED_WITHIN:
            raise CallError(f"{run.name}: top-1 on its own {stored} validation images is {again:.2f} % now against "
                            f"{recorded:.2f} % recorded: the images or the weights are not the run's (the dataset "
                            "generator or the checkpoint changed since); retrain the call to rescore it")
        print(f"  {run.name}: {recorded:.2f} % recorded, {again:.2f} % recomputed on the same {stored} images, "
              f"{100.0 * correct[run.folder].mean():.2f} % on {val_size}", file=sys.stderr, flush=True)
    if len(stored_sizes) != 1:
        raise UsageError(f"the call's runs were scored on different numbers of images ({sorted(stored_sizes)}): "
                         "rescore calls whose runs share one validation set")
    return correct, stored_sizes.pop()


def _metric(run: PlannedRun) -> str:
    return "val_top1_ema" if run.train.model_ema else "val_top1"


# ------------------------------------------------------------------------------------------- report
def runs_frame(call: Call, runs: Sequence[PlannedRun], correct: dict[str, np.ndarray], images: int) -> pd.DataFrame:
    """The report's rows (`experiments.report.COLUMNS`), top-1 on the first `images` images; the cost columns from
    each run's result (timings left out: rescoring times nothing)."""
    rows = []
    for run in runs:
        cost = call.result_of(run).get("cost", {})
        rows.append({"run_id": call.result_of(run).get("run_id"), "config": run.label, "seed": run.seed,
                     "status": "FINISHED", "top1": 100.0 * float(correct[run.folder][:images].mean()),
                     "best_top1": math.nan, "params": cost.get("params"), "macs": cost.get("macs"),
                     "latency_ms": math.nan, "img_per_s": math.nan, "is_reference": run.label == call.reference})
    return pd.DataFrame(rows, columns=COLUMNS)


def image_error(call: Call, runs: Sequence[PlannedRun], correct: dict[str, np.ndarray], images: int) -> dict[str, float]:
    """Per compared configuration: the error that the choice of the first `images` images adds to its mean
    difference to the reference, over the seeds both trained."""
    reference = {run.seed: correct[run.folder][:images] for run in runs if run.label == call.reference}
    out = {}
    for label in dict.fromkeys(run.label for run in runs if run.label != call.reference):
        mine = {run.seed: correct[run.folder][:images] for run in runs if run.label == label}
        shared = sorted(set(mine) & set(reference))
        if shared:
            out[label] = validation_sampling_sd([mine[s] for s in shared], [reference[s] for s in shared])
    return out


def side_by_side(stored: pd.DataFrame, rescored: pd.DataFrame, error_stored: dict[str, float],
                 error_rescored: dict[str, float], n_stored: int, n_rescored: int) -> pd.DataFrame:
    """One row per compared configuration: difference and verdict on the stored images and on the rescored ones,
    and the error from the choice of images at each size."""
    rows = []
    for (_, a), (_, b) in zip(stored.iterrows(), rescored.iterrows(), strict=True):
        rows.append({"config": a["config"], f"diff_{n_stored}": a["diff"], f"verdict_{n_stored}": _verdict(a),
                     f"image_error_{n_stored}": error_stored.get(a["config"], math.nan),
                     f"diff_{n_rescored}": b["diff"], f"verdict_{n_rescored}": _verdict(b),
                     f"image_error_{n_rescored}": error_rescored.get(b["config"], math.nan)})
    return pd.DataFrame(rows)


def _verdict(row) -> str:
    needed = None if pd.isna(row.get("seeds_needed", math.nan)) else int(row["seeds_needed"])
    return verdict_text(row["verdict"], row["equivalence_bound"], needed)


def format_side_by_side(table: pd.DataFrame, n_stored: int, n_rescored: int) -> str:
    header = ["configuration", f"Δ on {n_stored} images", "verdict", "± images", f"Δ on {n_rescored} images",
              "verdict", "± images"]
    lines = [[r["config"], f"{r[f'diff_{n_stored}']:+.2f}", r[f"verdict_{n_stored}"],
              f"{r[f'image_error_{n_stored}']:.2f}", f"{r[f'diff_{n_rescored}']:+.2f}", r[f"verdict_{n_rescored}"],
              f"{r[f'image_error_{n_rescored}']:.2f}"] for _, r in table.iterrows()]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    fmt = lambda row: "  ".join(str(x).ljust(w) for x, w in zip(row, widths))  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *(fmt(line) for line in lines)])


def rescore(folder: Path, val_size: int) -> tuple[str, dict]:
    """(the report as text, what rescore-val<N>.json holds) of the call in `folder` on `val_size` images."""
    call = Call.load(folder)
    runs, left_out = finished_runs(call)
    if not runs:
        raise CallError(f"{folder}: no run of this call has finished: finish it first (ablate.py --resume {folder})")
    correct, n_stored = score(call, runs, val_size)
    num_classes = runs[0].model.num_classes
    frames = {n: runs_frame(call, runs, correct, n) for n in (n_stored, val_size)}
    summary = summarize(frames[val_size], num_classes, val_size)
    record = {"command": call.command, "val_size": val_size, "stored_val_size": n_stored, "left_out": left_out,
              "runs": [{"folder": r.folder, "label": r.label, "seed": r.seed,
                        "recorded_top1": call.result_of(r)["history"][-1][_metric(r)],
                        f"top1_{n_stored}": 100.0 * float(correct[r.folder][:n_stored].mean()),
                        f"top1_{val_size}": 100.0 * float(correct[r.folder].mean())} for r in runs]}
    text = [f"{folder} ({call.command}): {len(runs)} finished runs scored on {val_size} validation images of "
            f"{runs[0].train.dataset}; their own {n_stored} are the first {n_stored} of them.",
            *([f"Left out (not finished): {', '.join(left_out)}."] if left_out else []),
            "", format_summary(summary, num_classes=num_classes, val_size=val_size)]
    if call.reference is not None and frames[val_size]["is_reference"].any() \
            and (~frames[val_size]["is_reference"]).any():
        comparisons = {n: compare_to_reference(frame) for n, frame in frames.items()}
        errors = {n: image_error(call, runs, correct, n) for n in frames}
        record["comparison"] = side_by_side(comparisons[n_stored], comparisons[val_size], errors[n_stored],
                                            errors[val_size], n_stored, val_size).to_dict("records")
        text += ["", format_comparison(comparisons[val_size]), "", *conclusions(summary, comparisons[val_size])]
    against_paper = {n: paper_comparison(frame) for n, frame in frames.items()}
    if len(against_paper[val_size]):
        record["paper_comparison"] = {str(n): table.to_dict("records") for n, table in against_paper.items()}
    text += ["", format_record(record), "", resolution_sentence(resolution(frames[val_size]))]
    return "\n".join(text), record


def format_record(record: dict) -> str:
    """A rescore's comparisons on both sizes side by side, and the paper-vs-here table on each size where the call
    has one: what `rescore` prints after the report, and notebook 03 shows from `rescore-val<N>.json`."""
    n_stored, n = record["stored_val_size"], record["val_size"]
    text = []
    if record.get("comparison"):
        text += [f"The same comparisons on the runs' own {n_stored} images and on {n} (± images: the standard error "
                 "that the choice of validation images adds to the mean difference; it does not shrink with seeds, "
                 "and the intervals over seeds do not contain it):", "",
                 format_side_by_side(pd.DataFrame(record["comparison"]), n_stored, n)]
    for size, table in record.get("paper_comparison", {}).items():
        text += ["", f"Paper vs here, on {size} images (a direction counts only where the verdict resolved it):",
                 format_paper_comparison(pd.DataFrame(table))]
    return "\n".join(text).strip("\n")


def changed_verdicts(record: dict) -> list[str]:
    """The compared configurations whose verdict differs between the stored images and the rescore's."""
    n_stored, n = record["stored_val_size"], record["val_size"]
    return [r["config"] for r in record.get("comparison", []) if r[f"verdict_{n_stored}"] != r[f"verdict_{n}"]]


def record_path(folder: str | Path, val_size: int) -> Path:
    return Path(folder) / f"rescore-val{val_size}.json"


def load_record(folder: str | Path, val_size: int) -> dict | None:
    """The rescore of the call in `folder` on `val_size` images, None if it was never made."""
    path = record_path(folder, val_size)
    return json.loads(path.read_text()) if path.is_file() else None
