"""Run experiments/ablate.py with a fault injected: for tests only (production code holds no test hooks).

    python tests/fault_runner.py pause:2 -- <ablate.py arguments>     # at epoch 2 of every run: touch
                                                                       # <output>/paused, then sleep (to be killed)
    python tests/fault_runner.py pause:2:3 -- ...                      # the same, in the 3rd run of the call only
    python tests/fault_runner.py nan:2 -- ...                          # the loss of epoch 2 becomes NaN
    python tests/fault_runner.py diverge:2 -- ...                      # after epoch 2's training the weights are
                                                                       # x1e6 (as --lr 1e8 does), the loss finite
    python tests/fault_runner.py pause-at:STAGE -- ...                 # touch the marker and sleep at a stage
                                                                       # outside the epochs (STAGES below)
    python tests/fault_runner.py enospc:WHAT[:N] -- ...                # the N-th (default 1st) write of WHAT
                                                                       # fails as on a full disk (WHAT: checkpoint =
                                                                       # last.pth, result = result.json), after a
                                                                       # partial temporary file was written

The pause marker is $SEPVIT_PAUSE_MARKER when set, else <output>/paused (the training config's output); the
tests start this script, and wait for its marker, with tests/runner_support.py (`runner`, `wait_for`).
"""
from __future__ import annotations

import errno
import os
import sys
import time
from pathlib import Path

from runner_support import PAUSE_MARKER_ENV, PAUSED  # this script runs from tests/, so that is importable

from experiments import ablate
from experiments.runner import call_costs, calls, checkpoint, engine, executor, run, running

# stage -> where the process pauses
STAGES = {
    "parent": "start-up: the parent run is open, no run has started",
    "cost": "the first run is open (its cost is being measured), before its first epoch",
    "finish": "after the last epoch of the first run, its best checkpoint stored, before its logged model: its "
              "result.json says FINISHED, its MLflow record is open",
    "between": "the first run finished, the second has not started",
    "summary": "every run finished, the call's summary is being measured",
    "migration": "a new MLflow store is being created: its tables exist, their migration has not run",
}


def pause(output: str | None = None) -> None:
    marker = os.environ.get(PAUSE_MARKER_ENV) or (Path(output) / PAUSED if output else None)
    assert marker, "set SEPVIT_PAUSE_MARKER for a pause outside the epochs"
    marker = Path(marker)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    time.sleep(300)


def inject(fault: str) -> None:
    kind, _, where = fault.partition(":")
    if kind == "pause-at":
        inject_stage(where)
    elif kind == "enospc":
        inject_full_disk(where)
    else:
        inject_epoch(fault)


def inject_epoch(fault: str) -> None:
    kind, epoch, *run_index = fault.split(":")
    target_epoch, target_run = int(epoch), int(run_index[0]) if run_index else None
    original = engine.train_one_epoch
    runs_seen = []

    def train_one_epoch(parts, cfg, epoch, desc="train"):
        if epoch == 1 or not runs_seen or runs_seen[-1] != desc:
            runs_seen.append(desc)
        in_target = target_run is None or len(runs_seen) == target_run
        if kind == "pause" and epoch == target_epoch and in_target and parts.rank == 0:
            pause(cfg.output)
        if kind == "diverge" and epoch == target_epoch and in_target:
            import torch

            metrics = original(parts, cfg, epoch, desc)
            with torch.no_grad():
                for weight in parts.model.parameters():
                    weight.mul_(1e6)
            return metrics
        if kind == "nan" and epoch == target_epoch and in_target:
            criterion = parts.criterion
            parts.criterion = lambda out, y: criterion(out, y) * float("nan")
            try:
                return original(parts, cfg, epoch, desc)
            finally:
                parts.criterion = criterion
        return original(parts, cfg, epoch, desc)

    engine.train_one_epoch = train_one_epoch


def _after(module, name: str, first_only: bool = False) -> None:
    """Pause once `module.name` has run (the first call only, if asked)."""
    original, calls_seen = getattr(module, name), []

    def wrapped(*args, **kwargs):
        out = original(*args, **kwargs)
        calls_seen.append(1)
        if not first_only or len(calls_seen) == 1:
            pause()
        return out

    setattr(module, name, wrapped)


def _before(module, name: str) -> None:
    """Pause when `module.name` is about to run."""
    original = getattr(module, name)

    def wrapped(*args, **kwargs):
        pause()
        return original(*args, **kwargs)

    setattr(module, name, wrapped)


def inject_stage(stage: str) -> None:
    assert stage in STAGES, f"unknown stage {stage}: {', '.join(STAGES)}"
    if stage == "parent":
        _after(running, "open_parent")
    elif stage == "cost":
        _before(run, "model_cost")
    elif stage == "finish":
        _before(run, "_log_best_model")
    elif stage == "between":
        _after(executor, "train_run", first_only=True)
    elif stage == "migration":
        import mlflow.store.db.utils as db_utils

        _before(db_utils, "_upgrade_db")
    elif stage == "summary":
        _before(call_costs, "interleaved_costs")


def inject_full_disk(target: str) -> None:
    """The write fails as on a full disk, after part of its temporary file was written (as a real one does)."""
    what, _, nth = target.partition(":")
    writes, fail_at = [], int(nth or 1)

    def this_one() -> bool:
        writes.append(1)
        return len(writes) == fail_at

    def full(path) -> None:
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    if what == "checkpoint":  # the device fills up while last.pth is written (torch.save runs for real)
        import builtins

        class FullFile:
            def __init__(self, handle, room: int = 4096):
                self.handle, self.room = handle, room

            def write(self, data) -> int:
                if len(data) > self.room:
                    self.handle.write(bytes(data[:self.room]))
                    self.room = 0
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                self.room -= len(data)
                return self.handle.write(data)

            def __getattr__(self, name):
                return getattr(self.handle, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.handle.close()

        def open_full(path, mode="r", *args, **kwargs):
            handle = builtins.open(path, mode, *args, **kwargs)
            if Path(path).name.startswith(".last.pth.tmp") and this_one():
                return FullFile(handle)
            return handle

        checkpoint.open = open_full
    elif what == "result":
        original_write = calls.Path.write_text

        def write_text(self, data, *args, **kwargs):
            if self.name.startswith(f".{calls.RESULT_FILE}.tmp") and this_one():
                full(self)
            return original_write(self, data, *args, **kwargs)

        calls.Path.write_text = write_text
    else:
        raise AssertionError(f"unknown enospc target {what}: checkpoint, result")


if __name__ == "__main__":
    fault, separator, *args = sys.argv[1:]
    assert separator == "--", "usage: fault_runner.py FAULT -- ARGS"
    inject(fault)
    sys.exit(ablate.main(args))
