"""Trains the planned runs of a call: one after another, or N at a time in worker processes (`--parallel N`).

Both return the `Result` of every planned run in plan order (finished runs are read back from their
`result.json`). A stop (Ctrl-C, SIGTERM, SIGHUP) or an error propagates to the caller, the call's lifecycle
(`experiments.runner.lifecycle`), which closes the parent run and says how to resume; each run closes its own
MLflow record first. A run is trained the same way in both: with `experiments.runner.run.train_and_evaluate`, from
its `last.pth` when it has one. In parallel,
each worker process uses threads // N CPU threads (at least 1), so a run's numbers equal a sequential run with that
thread count; a worker closes whatever it opened however it ends.
"""
from __future__ import annotations

import functools
import os
import signal
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

import torch

from workbench.tracking import Tracker

from experiments.data import build_datasets_from_key, data_key
from experiments.runner import run as training
from experiments.runner.calls import Call, PlannedRun
from experiments.runner.run import Result, RunContext, RunInterrupted, stop_name, stop_signals


def train_run(call: Call, run: PlannedRun, datasets, tracker, changes: dict) -> Result:
    """Train (or continue) one planned run of the call; returns its Result."""
    resuming = call.state_of(run) != "new"
    context = RunContext(run_dir=call.run_dir(run), tracker=tracker, datasets=datasets,
                         parent_run_id=call.parent_run_id,
                         resume_from=call.run_dir(run) / "last.pth" if resuming else None,
                         resume_changes=changes if resuming else None,
                         reuse_run_id=None if resuming or tracker is None else _reusable(call, run, tracker))
    return training.train_and_evaluate(run, context)


def _reusable(call: Call, run: PlannedRun, tracker) -> str | None:
    """The MLflow run an earlier start of this (never checkpointed) run opened under this call's parent, if the
    store still holds it: reopened, so a call never holds two runs of one name."""
    run_id = call.recorded_run_id(run)
    if run_id is None:
        return None
    try:
        recorded = tracker.client.get_run(run_id)
    except Exception:  # noqa: BLE001  (gone from the store: a new record is opened)
        return None
    if recorded.data.tags.get("mlflow.parentRunId") != call.parent_run_id:
        return None
    return run_id


def _progress(done: int, total: int, result) -> None:
    status = f"top-1 {result.top1:.2f}" if result.status == "FINISHED" else f"{result.status}: {result.reason}"
    print(f"[{done}/{total}] {result.run_name}: {status}", file=sys.stderr, flush=True)


def train_in_sequence(call: Call, datasets, tracker, report: bool, changes: dict) -> list[Result]:
    """The call's runs one after another in this process (finished ones read back); `report`: a line per run."""
    results = []
    for index, run in enumerate(call.runs, 1):
        if not call.needs_training(run):
            results.append(Result.from_dict(call.result_of(run), call.run_dir(run)))
            continue
        result = train_run(call, run, datasets, tracker, changes)
        results.append(result)
        if report:
            _progress(index, len(call.runs), result)
    return results


# ---------------------------------------------------------------------------------- parallel
# a worker trains run after run on the same data: built once per data_key
_worker_datasets = functools.lru_cache(maxsize=1)(build_datasets_from_key)


_STOP = None  # in a worker: the call's stop event (set once any run of the call is interrupted)


def _worker_init(threads: int, stop) -> None:
    global _STOP
    _STOP = stop
    torch.set_num_threads(threads)
    # a stop between two runs (the pool idles here): ends the worker quietly; inside a run, run.stop_signals
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), training.raise_interrupted)


def _train_in_worker(folder: str, index: int, uri: str | None, changes: dict) -> dict:
    """One run, in a worker process: its own datasets (built once per worker) and MLflow client. Whatever ends it,
    every MLflow run the worker opened is closed before it returns or raises."""
    call = Call.load(Path(folder))
    run = call.runs[index]
    if _STOP is not None and _STOP.is_set():  # queued before the interruption: never start it
        return {"interrupted": run.name, "started": False}
    tracker = None
    try:
        with stop_signals():
            t = run.train
            datasets = _worker_datasets(data_key(t))
            if uri is not None:
                tracker = Tracker(uri, call.experiment,
                                  artifact_root=None if call.tracking_uri else call.output / "mlartifacts")
            return train_run(call, run, datasets, tracker, changes).to_dict()
    except (KeyboardInterrupt, RunInterrupted) as exc:
        if _STOP is not None:
            _STOP.set()  # the other workers start no further run of this call
        if tracker is not None:
            tracker.close_open_runs("KILLED", f"interrupted ({stop_name(exc)}); resume with --resume {call.folder}")
        return {"interrupted": run.name, "started": True}
    except BaseException as exc:
        if tracker is not None:
            tracker.close_open_runs("FAILED", f"{type(exc).__name__}: {exc}")
        raise


def train_in_parallel(call: Call, uri: str | None, changes: dict, parallel: int, threads: int) -> list[Result]:
    """The call's unfinished runs, `parallel` at a time, each in a worker process with `threads` threads. A stop
    in this process is passed on to the workers, which close their runs; then it propagates."""
    todo = [i for i, run in enumerate(call.runs) if call.needs_training(run)]
    context = get_context("spawn")
    stop = context.Event()  # the pool queues runs ahead of time: an interrupted call must not start them
    executor = ProcessPoolExecutor(max_workers=min(parallel, max(len(todo), 1)), mp_context=context,
                                   initializer=_worker_init, initargs=(threads, stop))
    pending, finished = set(), 0
    try:
        futures = {executor.submit(_train_in_worker, str(call.folder), i, uri, changes): i for i in todo}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                data = future.result()
                if "interrupted" in data:  # a worker stopped by a terminal's Ctrl-C (it reached this process too)
                    raise KeyboardInterrupt
                finished += 1
                _progress(finished, len(todo), Result.from_dict(data, call.run_dir(call.runs[futures[future]])))
    except (KeyboardInterrupt, RunInterrupted):
        stop.set()
        _stop_workers(executor, pending)
        raise
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    return [Result.from_dict(call.result_of(run), call.run_dir(run)) for run in call.runs]


def _stop_workers(executor: ProcessPoolExecutor, pending) -> None:
    """A terminal's Ctrl-C reaches the workers too; a signal sent to this process alone is passed on, once, to
    the workers still training, which then checkpoint and mark their runs KILLED."""
    wait(pending, timeout=3)
    for process in list((executor._processes or {}).values()):
        if process.is_alive():
            os.kill(process.pid, signal.SIGINT)
