"""Every exit of a call, from before its folder or first run exists until its parent run is closed; torchrun ranks.

Whatever ends a call (success, Ctrl-C, SIGTERM, SIGHUP, an error, a full disk), every MLflow run this process
opened is left FINISHED, FAILED or KILLED with the reason, the call's temporary files are removed, its lock is
released, and one line on stderr says how to go on (`python experiments/ablate.py --resume <call>`). The exit
code is the one a shell expects: 0, 1 (a run or the call failed), 128 + the signal (Ctrl-C 130, SIGTERM 143).
"""
from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from workbench.tracking import is_disk_full, mask_secrets

from experiments.runner.calls import Call, CallLock, remove_temporary_files
from experiments.runner.run import RunInterrupted, stop_exit_code, stop_name, stop_signals, stops_deferred

PROG = "ablate.py"  # the runner's command: its messages start with it and its way out names it
EXIT_RUN_FAILED, EXIT_INTERRUPTED = 1, 130  # a stop: 128 + its signal (Ctrl-C 130, SIGTERM 143)


class CallLifecycle:
    """Owns every exit of a call, from before its folder or first run exists until its parent run is closed.

    For that whole span SIGINT raises KeyboardInterrupt and SIGTERM/SIGHUP raise RunInterrupted (start-up, cost
    measurement, between runs, after the last epoch, the summary). The handlers of a stop or an error run with
    further stops deferred, and cannot themselves fail.
    """

    def __init__(self):
        self.call: Call | None = None
        self.tracker = None  # workbench.tracking.Tracker, once made (rank 0)
        self.lock: CallLock | None = None  # held by rank 0 until the call ends
        self.rank, self.world = 0, 1
        self.results = []  # experiments.runner.run.Result of every planned run, once trained
        self.report: str | None = None  # the end-of-call table, once made
        self.rows: list = []  # its per-configuration rows (experiments.report.call_report)

    def run(self, start: Callable[["CallLifecycle"], int]) -> int:
        """`start(self)`: make or load the call (setting `self.call`), train it, return the exit code; returns
        that code, or the code of whatever stopped the call after closing what it left open."""
        try:
            with stop_signals():
                try:
                    self.rank, self.world = init_distributed()
                    if self.rank != 0:  # only rank 0 reports
                        logging.getLogger("sepvit").setLevel(logging.WARNING)
                    return start(self)
                except (KeyboardInterrupt, RunInterrupted) as exc:
                    with stops_deferred(self._again):
                        return self._stopped(exc)
                except Exception as exc:  # a failure nobody foresaw
                    with stops_deferred(self._again):
                        return self._failed(exc)
        finally:
            if self.call is not None and self.rank == 0:
                remove_temporary_files(self.call.folder)
            if self.lock is not None:
                self.lock.release()
            shutdown_distributed(self.world)

    def _again(self, name: str) -> None:
        print(f"{PROG}: {name} received while the call's runs are being closed: closing them first", file=sys.stderr)

    def _way_out(self) -> str:
        return f"resume with: python experiments/ablate.py --resume {self.call.folder}"

    def _unfinished(self) -> list[str]:
        try:
            return [r.name for r in self.call.runs if self.call.needs_training(r)]
        except (OSError, ValueError):  # a result.json that cannot be read: resume decides
            return [r.name for r in self.call.runs]

    def _stopped(self, exc: BaseException) -> int:
        how = stop_name(exc)
        if self.call is None:
            print(f"{PROG}: interrupted ({how}) before the call began; nothing was recorded", file=sys.stderr)
            return stop_exit_code(exc)
        unfinished = self._unfinished()
        reason = (f"interrupted ({how}); unfinished: {', '.join(unfinished)}; {self._way_out()}" if unfinished else
                  f"interrupted ({how}) while the call's summary was written; every run finished; {self._way_out()}")
        self._close_runs("KILLED", reason)
        print(f"{PROG}: {reason}", file=sys.stderr)
        return stop_exit_code(exc)

    def _failed(self, exc: BaseException) -> int:
        first = _first_line(exc)
        if self.call is None:
            print(f"{PROG}: {first}; nothing was recorded", file=sys.stderr)
            return EXIT_RUN_FAILED
        if is_disk_full(exc):
            reason = f"no space left on device ({first}): free space, then {self._way_out()}"
            self._close_runs("FAILED", reason)
            print(f"{PROG}: {reason}", file=sys.stderr)
            return EXIT_RUN_FAILED
        self._close_runs("FAILED", first)
        where = _write_error_log(self.call.folder, traceback.format_exc())
        print(f"{PROG}: {first} ({where}); {self._way_out()}", file=sys.stderr)
        return EXIT_RUN_FAILED

    def _close_runs(self, status: str, reason: str) -> None:
        if self.tracker is None:
            return
        for run_id in self.tracker.close_open_runs(status, reason):
            print(f"{PROG}: the MLflow run {run_id} could not be marked {status}: the next --resume repairs it",
                  file=sys.stderr)


def _first_line(exc: BaseException) -> str:
    text = mask_secrets(str(exc)).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _write_error_log(folder: Path, text: str) -> str:
    """The traceback (passwords in URLs masked) in `<call>/error.log`; where it went, in words. Never raises (a
    full disk, a read-only folder: then it says so)."""
    try:
        (folder / "error.log").write_text(mask_secrets(text))
        return f"traceback in {folder / 'error.log'}"
    except OSError as exc:
        return f"the traceback could not be written: {exc.strerror or exc}"


# ---------------------------------------------------------------------------------- distributed
def world_size() -> int:
    """The number of processes of this call under torchrun (1 otherwise)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank_from_environment() -> int:
    """This process's rank under torchrun (0 otherwise), before the process group exists."""
    return int(os.environ.get("RANK", "0"))


def init_distributed() -> tuple[int, int]:
    """Under torchrun: join the process group (NCCL on GPU, gloo on CPU). Returns (rank, world size)."""
    if world_size() <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def shared(value, world: int):
    """Rank 0's `value` on every rank."""
    if world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown_distributed(world: int) -> None:
    if world > 1 and dist.is_initialized():
        dist.destroy_process_group()
