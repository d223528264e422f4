"""Running a checked plan: the call's MLflow parent, its runs (one after another or N at a time), its report.

Every exit is the call lifecycle's (experiments.runner.lifecycle): `run_call` returns how the call ended, never
raises for a stop or a failure, and leaves no MLflow run RUNNING.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from workbench.tracking import Tracker, mask_secrets, signals_held

from experiments.calibration import calibrate, format_calibration
from experiments.data import final_val_images
from experiments.report import call_report, looks_sentence, results_frame
from experiments.runner import call_costs, executor
from experiments.runner.calls import Call
from experiments.runner.lifecycle import EXIT_RUN_FAILED, CallLifecycle
from experiments.runner.plan import Plan, plan_resume, seeds_per_configuration
from experiments.runner.run import Result, complete_record


@dataclass
class Results:
    """How a call ended. exit_code: 0 (every run FINISHED), 1 (a run or the call failed) or 128 + the signal that
    stopped it; runs: the Result of every planned run in plan order (empty if it stopped before training)."""

    exit_code: int
    folder: Path | None = None  # the call folder (None: stopped before it existed)
    runs: list[Result] = field(default_factory=list)
    report: str | None = None  # the end-of-call table (rank 0, when the call reached its end)
    parent_run_id: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)  # the report's per-configuration rows (call_report)

    @property
    def finished(self) -> bool:
        return self.exit_code == 0


def run_call(plan: Plan) -> Results:
    """Train every unfinished run of the plan under one MLflow parent run, then report: the table on the parent run
    (csv + markdown) and in `Results.report`. A new plan (`plan_call`) first makes its call folder; a resumption
    (`plan_resume`) continues its own. Whatever ends it, what it opened is closed (module docstring)."""
    life = CallLifecycle()
    code = life.run(lambda life: _train(life, plan))
    return Results(code, life.call.folder if life.call is not None else None, life.results, life.report,
                   life.call.parent_run_id if life.call is not None else None, life.rows)


def resume_call(folder: str | Path, *, changes: Mapping[str, Any] | None = None, tracking_uri: str | None = None,
                parallel: int | str = "auto", seeds: int | None = None) -> Results:
    """Finish an interrupted call, or extend a finished one (more epochs, more seeds): `run_call(plan_resume(...))`
    (see both). Raises a one-line ValueError for a call that cannot be resumed, before anything runs."""
    return run_call(plan_resume(folder, changes=changes, tracking_uri=tracking_uri, parallel=parallel, seeds=seeds))


def _train(life: CallLifecycle, plan: Plan) -> int:
    call = plan.open(life)
    tracker = None
    if life.rank == 0:
        tracker = life.tracker = Tracker(plan.uri, call.experiment,
                                         artifact_root=None if call.tracking_uri else call.output / "mlartifacts")
        open_parent(tracker, call, plan.parent_tags)
        print(f"MLflow: {mask_secrets(plan.uri)} experiment {call.experiment!r}, parent run {call.parent_run_id}; "
              f"call folder {call.folder}", file=sys.stderr)
        completed = complete_finished_records(call, tracker)
        if completed:
            print(f"completed the MLflow record of {', '.join(completed)}: training had finished, the record had not",
                  file=sys.stderr)
    to_train = sum(call.needs_training(r) for r in call.runs)
    processes, threads = worker_layout(plan.parallel, to_train, torch.get_num_threads(), call.runs[0].train.device,
                                       life.world)
    if processes > 1:
        print(f"training {to_train} runs, {processes} at a time, {threads} thread(s) each (--parallel 1: one after "
              "another on every thread)", file=sys.stderr)
        life.results = executor.train_in_parallel(call, plan.uri, plan.changes, processes, threads)
    else:
        life.results = executor.train_in_sequence(call, plan.datasets, tracker, tracker is not None or life.world == 1,
                                                  plan.changes)
    if life.rank == 0:
        record_look(call, life.results)
        life.report, files, life.rows = summarize(life.results, call, plan.datasets[2])  # known even if logging fails
        if tracker is not None:
            close_parent(tracker, call, life.results, files, life.rows)
    return 0 if all(r.status == "FINISHED" for r in life.results) else EXIT_RUN_FAILED


def record_look(call: Call, results: list[Result]) -> None:
    """An extended call (`--resume --seeds`) keeps the seeds per configuration of every report made with all its
    runs finished: each such report is a look at the data (`report.looks_sentence`)."""
    if call.seed_counts is None or any(r.status != "FINISHED" for r in results):
        return
    seeds = seeds_per_configuration(call)
    if call.seed_counts[-1:] != [seeds]:
        call.seed_counts.append(seeds)
        call.save()


def worker_layout(parallel: int | str, to_train: int, threads: int, device: str, world: int) -> tuple[int, int]:
    """(processes, threads per process) for the call's unfinished runs. auto: one single-thread process per
    available thread, no more than there are runs (one process on a GPU, under torchrun, or with one thread):
    each run's numbers then depend only on its own thread count, which every run records (env.torch_threads)."""
    if parallel == "auto":
        on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        parallel = 1 if on_gpu or world > 1 else min(max(to_train, 1), threads)
    processes = max(1, min(parallel, max(to_train, 1)))
    return processes, max(1, threads // processes)


def complete_finished_records(call: Call, tracker) -> list[str]:
    """Resume reconciles the two stores: a run whose result.json says FINISHED but whose MLflow record does not
    (stopped while its results were recorded) gets its record completed. Returns the runs' names."""
    completed = []
    for run in call.runs:
        result = call.result_of(run)
        if call.needs_training(run) or not result.get("run_id") or tracker.run_status(result["run_id"]) == "FINISHED":
            continue
        complete_record(tracker, Result.from_dict(result, call.run_dir(run)))
        completed.append(run.name)
    return completed


def open_parent(tracker, call: Call, tags: Mapping[str, str] | None = None) -> None:
    """The call's MLflow parent run: reopened when call.json names one (`tags` set on it), else started (with
    `tags` besides its own) and named in call.json."""
    if call.parent_run_id is not None:
        tracker.reopen_run(call.parent_run_id)
        if tags:  # a resume that changed the plan (added seeds): the parent's tags and plan say so
            tracker.set_tags(call.parent_run_id, tags)
            tracker.log_text(call.parent_run_id, (call.folder / "call.json").read_text(), "call.json")
        return
    labels = list(dict.fromkeys(r.label for r in call.runs))
    with signals_held():  # the parent exists and call.json names it, or neither
        call.parent_run_id = tracker.start_run(call.name, tags={
            "kind": "parent", "command": call.command, "configs": "; ".join(labels),
            "seeds": str(len(call.runs) // max(len(labels), 1)), "planned_runs": str(len(call.runs)),
            "call_folder": str(call.folder.relative_to(call.output)), **(tags or {})})
        call.save()
    tracker.log_text(call.parent_run_id, (call.folder / "call.json").read_text(), "call.json")  # masked copy


def summarize(results: list[Result], call: Call, info) -> tuple[str, list[tuple[str, str]], list[dict]]:
    """The end-of-call table (text), the files the parent run keeps (csv, markdown, calibration) and the summary
    rows; the configurations' costs are timed here, interleaved (experiments.runner.call_costs)."""
    finished = [r for r in results if r.status == "FINISHED"]
    configs = {r.label: r.model for r in call.runs}
    costs = call_costs.interleaved_costs({label: configs[label] for label in dict.fromkeys(
        r.run_name.rsplit(" seed", 1)[0] for r in finished)}, call.runs[0].train) if finished else None
    scored = final_val_images(call.runs[0].train) or info.val_size  # the images every reported top-1 is on
    text, markdown, files, summary_rows = call_report(results, call.reference, num_classes=info.num_classes,
                                                      val_size=scored, costs=costs)
    sentence = looks_sentence(call.seed_counts, call.next_seed,  # seeds added after a look
                              call.confirmation is not None)
    if sentence and call.reference is not None and len(configs) > 1:
        text += "\n\n" + sentence
        markdown += "\n\n" + sentence
    if call.calibrate:
        curves = {r.run_id: [h[r.metric] for h in r.history] for r in finished}
        cal = calibrate(results_frame(results, call.reference), curves, call.reference, info.num_classes)
        text += "\n\n" + format_calibration(cal)
        markdown += "\n\n## Calibration\n\n" + format_calibration(cal, markdown=True)
        files.append(("calibration.json", json.dumps(cal, indent=1, default=float)))
        (call.folder / "calibration.json").write_text(files[-1][1])
    return text, [*files, ("summary.md", markdown)], summary_rows


def close_parent(tracker, call: Call, results: list[Result], files: list[tuple[str, str]], rows: list[dict]) -> None:
    """The summary on the parent run, which is closed FINISHED, or FAILED naming the runs that did not finish."""
    tracker.log_files(call.parent_run_id, files)
    tracker.log_call_summary(call.parent_run_id, rows)
    unfinished = [r.run_name + f" ({r.status})" for r in results if r.status != "FINISHED"]
    tracker.end_run(call.parent_run_id, "FAILED" if unfinished else "FINISHED",
                    f"{len(unfinished)} of {len(results)} runs did not finish: " + "; ".join(unfinished)
                    if unfinished else None)
