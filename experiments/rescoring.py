"""Rescoring a finished call on more validation images of its generated dataset (`experiments/rescore.py` is
its command line; notebook 03 shows what it writes).

Every run of a call is scored on the same validation images (for the generated datasets 10000 final images since
2026-12-07, `TrainConfig.final_val_size`; 1000 before, or when `--val-size` was capped). Two models disagree
on a few percent of them, so the draw of those images moves each seed's difference (`stats.image_noise`, "per
seed"): the intervals over seeds contain that noise, but it widens them, and on the default benchmark it is a large
part of a paired comparison's noise. A small part of it is shared by every seed (images on which one model is
systematically better, "shared"): that part no interval over seeds contains. A generated dataset can draw as many
validation images as asked, and its first n are the n a run was scored on (each image is made from its own
index), so `rescore` scores each finished run's final weights (`last.pth`; the EMA's where the run kept one) on N
images and gives:

- the call's report (summary, comparison with its verdicts, resolution) on the N images, computed by
  `experiments.report` as the runner's own report is (a calibration call's calibration section is not redone);
- each comparison on the stored images and on the N side by side, with the image noise at both sizes;
- for a call that trained the paper's comparisons (`--grid paper`), the paper-vs-here table on both sizes.

It first recomputes every run's top-1 on its own images and refuses to go on if one differs from what the run
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

from experiments.data import GENERATED, SYNTHETIC_SIZES, data_key, final_val_images, generated_validation_set
from experiments.paper_table import format_paper_comparison, paper_comparison
from experiments.report import (COLUMNS, _table, compare_to_reference, conclusions, format_comparison, format_summary,
                                looks_sentence, resolution, resolution_sentence, summarize, verdict_cell)
from experiments.runner.calls import Call, CallError, PlannedRun, write_json
from experiments.runner.checkpoint import load_checkpoint, model_from_checkpoint
from experiments.runner.engine import autocast
from experiments.runner.run import reported_metric
from experiments.stats import image_noise
from workbench.cli import UsageError

REPRODUCED_WITHIN = 0.5  # top-1 points: another CPU's rounding may flip an image or two, a wrong image set many
BATCH = 250
# per-seed image noise of a difference on the default benchmark: about 0.15 points at 20000 images, 0.7 at 1000
DEFAULT_VAL_SIZE = 20000
MAX_VAL_SIZE = 200_000  # about 2.5 GB of 32 px images in memory


# ------------------------------------------------------------------------------------------- scoring
def finished_runs(call: Call) -> tuple[list[PlannedRun], list[str]]:
    """(the runs that finished every planned epoch, the names of those left out)."""
    kept, left = [], []
    for run in call.runs:
        try:
            unfinished = call.needs_training(run)
        except (ValueError, KeyError, TypeError) as exc:
            raise CallError(f"{run.name}: its result.json is damaged ({type(exc).__name__}: {exc}): retrain the "
                            "run") from None
        (left if unfinished else kept).append(run)
    return kept, [run.name for run in left]


def recorded_top1(run: PlannedRun, result: dict | None) -> tuple[int, float]:
    """(last epoch, top-1 it reported) from the run's result.json (`result`): its final scoring's when it had one,
    else its last epoch's; CallError if that is unreadable."""
    try:
        last = result.get("final") or result["history"][-1]
        return int(last["epoch"]), float(last[reported_metric(run.train)])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise CallError(f"{run.name}: its result.json is damaged ({type(exc).__name__}: {exc}): its recorded top-1 "
                        "is unknown, so its rescore could not be checked; retrain the run") from None


def final_weights(call: Call, run: PlannedRun, last_epoch: int) -> torch.nn.Module:
    """The weights the run reported with at `last_epoch`: the raw ones, or the EMA's if it kept one; eval mode."""
    path = call.run_dir(run) / "last.pth"
    if not path.is_file():
        raise CallError(f"{run.name}: no {path.name} in {path.parent} (deleted?): its final weights are gone, so the "
                        "call cannot be rescored; rescore a call whose folders are complete")
    ckpt = load_checkpoint(path)
    if ckpt.get("epoch") != last_epoch:
        raise CallError(f"{path} holds epoch {ckpt.get('epoch')}, but the run reported epoch {last_epoch}: these are "
                        "not the weights it was scored with; retrain the run")
    return model_from_checkpoint(ckpt, path, ema=run.train.model_ema)


def correct_per_image(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, amp: bool) -> np.ndarray:
    """Whether the model's top-1 is right, image by image (under the autocast the run was evaluated with)."""
    with torch.inference_mode(), autocast(torch.device("cpu"), amp):
        predicted = torch.cat([model(images[i:i + BATCH]).argmax(-1) for i in range(0, len(images), BATCH)])
    return (predicted == torch.as_tensor(labels)).numpy()


def check_generated(run: PlannedRun) -> None:
    if run.train.dataset not in GENERATED:
        raise UsageError(f"{run.name} was trained on {run.train.dataset!r}, read from files: it has no more validation "
                         f"images to draw; rescore calls on a generated dataset ({', '.join(GENERATED)})")


def stored_val_size(run: PlannedRun) -> int:
    """How many validation images the run's reported top-1 is on (its final scoring's, else its per-epoch set's)."""
    return final_val_images(run.train) or int(run.train.val_size or SYNTHETIC_SIZES[1])


def validation_set(run: PlannedRun, val_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of the first `val_size` validation images of the run's generated dataset."""
    val = generated_validation_set(run.train, val_size)
    return val.stacked(), torch.as_tensor(val.labels)


def check_request(runs: Sequence[PlannedRun], val_size: int) -> int:
    """The stored validation size the runs share; refuses what cannot be rescored before any scoring."""
    for run in runs:
        check_generated(run)
    if val_size > MAX_VAL_SIZE:
        raise UsageError(f"--val-size {val_size}: give at most {MAX_VAL_SIZE} (the images are held in memory)")
    sizes = {stored_val_size(run) for run in runs}
    if len(sizes) != 1:
        raise UsageError(f"the call's runs were scored on different numbers of images ({sorted(sizes)}): rescore "
                         "calls whose runs share one validation set")
    stored = sizes.pop()
    if val_size <= stored:
        raise UsageError(f"--val-size {val_size}: the runs were already scored on {stored} images; give more than "
                         f"{stored}")
    return stored


def score(call: Call, runs: Sequence[PlannedRun], results: dict[str, dict], val_size: int,
          stored: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Per-image correctness of every run on `val_size` images and the top-1 each recorded (both by run folder);
    refuses a run whose top-1 on its own `stored` images is not what it recorded."""
    sets: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
    correct, recorded_by_run = {}, {}
    for run in runs:
        key = data_key(run.train)
        if key not in sets:
            sets[key] = validation_set(run, val_size)
        last_epoch, recorded = recorded_top1(run, results[run.folder])
        on_all = correct_per_image(final_weights(call, run, last_epoch), *sets[key], run.train.amp)
        recomputed = 100.0 * float(on_all[:stored].mean())
        if abs(recomputed - recorded) > REPRODUCED_WITHIN:
            raise CallError(f"{run.name}: top-1 on its own {stored} validation images is {recomputed:.2f} % now "
                            f"against {recorded:.2f} % recorded: the images or the weights are not the run's (the "
                            "dataset generator or the checkpoint changed since); retrain the call to rescore it")
        correct[run.folder], recorded_by_run[run.folder] = on_all, recorded
        print(f"  {run.name}: {recorded:.2f} % recorded, {recomputed:.2f} % recomputed on the same {stored} images, "
              f"{100.0 * float(on_all.mean()):.2f} % on {val_size}", file=sys.stderr, flush=True)
    return correct, recorded_by_run


# ------------------------------------------------------------------------------------------- report
def runs_frame(call: Call, runs: Sequence[PlannedRun], results: dict[str, dict], correct: dict[str, np.ndarray],
               first_n: int) -> pd.DataFrame:
    """The report's rows (`experiments.report.COLUMNS`), top-1 on the first `first_n` images; the cost columns from
    each run's result (timings left out: rescoring times nothing)."""
    rows = []
    for run in runs:
        result = results[run.folder]
        cost = result.get("cost", {})
        rows.append({"run_id": result.get("run_id"), "config": run.label, "seed": run.seed, "status": "FINISHED",
                     "top1": 100.0 * float(correct[run.folder][:first_n].mean()), "best_top1": math.nan,
                     "params": cost.get("params"), "macs": cost.get("macs"), "latency_ms": math.nan,
                     "img_per_s": math.nan, "is_reference": run.label == call.reference})
    return pd.DataFrame(rows, columns=COLUMNS)


def noise_by_config(call: Call, runs: Sequence[PlannedRun], correct: dict[str, np.ndarray],
                    first_n: int) -> dict[str, tuple[float, float]]:
    """Per compared configuration: (per-seed, shared) image noise of its difference to the reference on the first
    `first_n` images, over the seeds both trained (`stats.image_noise`)."""
    reference = {run.seed: correct[run.folder][:first_n] for run in runs if run.label == call.reference}
    out = {}
    for label in dict.fromkeys(run.label for run in runs if run.label != call.reference):
        compared = {run.seed: correct[run.folder][:first_n] for run in runs if run.label == label}
        shared_seeds = sorted(set(compared) & set(reference))
        if shared_seeds:
            noise = image_noise([compared[s] for s in shared_seeds], [reference[s] for s in shared_seeds])
            out[label] = (noise.per_seed, noise.shared)
    return out


def side_by_side(comparisons: dict[int, pd.DataFrame], noise: dict[int, dict[str, tuple[float, float]]]) -> list[dict]:
    """One record per compared configuration: at each size, the difference, the verdict (bare and as text) and
    the image noise."""
    by_size = {n: table.set_index("config", drop=False) for n, table in comparisons.items()}
    rows = []
    for config in next(iter(comparisons.values()))["config"]:
        row = {"config": config}
        for n, table in by_size.items():
            r = table.loc[config]
            per_seed, shared = noise[n].get(config, (math.nan, math.nan))
            row.update({f"diff_{n}": r["diff"], f"verdict_{n}": r["verdict"], f"verdict_text_{n}": verdict_cell(r),
                        f"noise_per_seed_{n}": per_seed, f"noise_shared_{n}": shared})
        rows.append(row)
    return rows


def format_side_by_side(rows: Sequence[dict], n_stored: int, n: int) -> str:
    header = ["configuration"]
    for size in (n_stored, n):
        header += [f"Δ on {size} images", "verdict", "± per seed", "shared"]
    lines = [[r["config"], *(cell for size in (n_stored, n) for cell in (
        f"{r[f'diff_{size}']:+.2f}", r[f"verdict_text_{size}"], f"{r[f'noise_per_seed_{size}']:.2f}",
        f"{r[f'noise_shared_{size}']:.2f}"))] for r in rows]
    return _table(header, lines, markdown=False)


def rescore(folder: Path, val_size: int) -> tuple[str, dict]:
    """(the report as text, what rescore-val<N>.json holds) of the call in `folder` on `val_size` images."""
    call = Call.load(folder)
    runs, left_out = finished_runs(call)
    if not runs:
        raise CallError(f"{folder}: no run of this call has finished: finish it first (ablate.py --resume {folder})")
    n_stored = check_request(runs, val_size)
    results = {run.folder: call.result_of(run) for run in runs}
    correct, recorded = score(call, runs, results, val_size, n_stored)
    num_classes = runs[0].model.num_classes
    frames = {n: runs_frame(call, runs, results, correct, n) for n in (n_stored, val_size)}
    summary = summarize(frames[val_size], num_classes, val_size)
    record = {"command": call.command, "val_size": val_size, "stored_val_size": n_stored, "left_out": left_out,
              "runs": [{"folder": r.folder, "label": r.label, "seed": r.seed,
                        "recorded_top1": recorded[r.folder],
                        f"top1_{n_stored}": 100.0 * float(correct[r.folder][:n_stored].mean()),
                        f"top1_{val_size}": 100.0 * float(correct[r.folder].mean())} for r in runs]}
    text = [f"{folder} ({call.command}): {len(runs)} finished runs scored on {val_size} validation images of "
            f"{runs[0].train.dataset}; their own {n_stored} are the first {n_stored} of them.",
            *([f"Left out (not finished): {', '.join(left_out)}."] if left_out else []),
            *(["A calibration call: its calibration section is not redone here."] if call.calibrate else []),
            "", format_summary(summary, num_classes=num_classes, val_size=val_size)]
    reference_finished = frames[val_size]["is_reference"].any()
    if call.reference is not None and not reference_finished:
        text += ["", f"No run of the reference ({call.reference}) finished: nothing to compare against."]
    if reference_finished and (~frames[val_size]["is_reference"]).any():
        comparisons = {n: compare_to_reference(frame) for n, frame in frames.items()}
        record["comparison"] = side_by_side(comparisons, {n: noise_by_config(call, runs, correct, n) for n in frames})
        text += ["", format_comparison(comparisons[val_size]), "", *conclusions(summary, comparisons[val_size])]
        looks = looks_sentence(call.seed_counts, call.next_seed,  # seeds added after a look
                               call.confirmation is not None)
        text += ["", looks] if looks else []
    against_paper = {n: paper_comparison(frame) for n, frame in frames.items()}
    if len(against_paper[val_size]):
        record["paper_comparison"] = {str(n): table.to_dict("records") for n, table in against_paper.items()}
    both_sizes = format_record(record)
    text += [*(["", both_sizes] if both_sizes else []), "", resolution_sentence(resolution(frames[val_size]))]
    return "\n".join(text), record


def format_record(record: dict) -> str:
    """A rescore's comparisons on both sizes side by side, and the paper-vs-here table on each size where the call
    has one: what `rescore` prints after the report, and notebook 03 shows from `rescore-val<N>.json`."""
    n_stored, n = record["stored_val_size"], record["val_size"]
    text = []
    if record.get("comparison"):
        text += [f"The same comparisons on the runs' own {n_stored} images and on {n}. ± per seed: the sd that the "
                 "draw of the images adds to each seed's difference (the intervals contain it; more images shrink "
                 "it). shared: the part every seed shares, which no interval over seeds contains "
                 "(stats.image_noise):", "", format_side_by_side(record["comparison"], n_stored, n)]
    for size in (n_stored, n):
        table = record.get("paper_comparison", {}).get(str(size))
        if table:
            text += ["", f"Paper vs here, on {size} images (a direction counts only where the verdict resolved it):",
                     format_paper_comparison(pd.DataFrame(table))]
    return "\n".join(text).strip("\n")


def changed_verdicts(record: dict) -> list[str]:
    """The compared configurations whose verdict (its rule, not its bound) differs between the two sizes."""
    n_stored, n = record["stored_val_size"], record["val_size"]
    return [r["config"] for r in record.get("comparison", []) if r[f"verdict_{n_stored}"] != r[f"verdict_{n}"]]


def record_path(folder: str | Path, val_size: int) -> Path:
    return Path(folder) / f"rescore-val{val_size}.json"


def write_record(folder: str | Path, record: dict) -> Path:
    """Store a rescore in its call folder (atomically), where `load_record` and notebook 03 find it."""
    path = record_path(folder, record["val_size"])
    write_json(path, record)
    return path


def load_record(folder: str | Path, val_size: int) -> dict | None:
    """The rescore of the call in `folder` on `val_size` images, None if it was never made."""
    path = record_path(folder, val_size)
    return json.loads(path.read_text()) if path.is_file() else None
