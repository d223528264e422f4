"""Run experiments/ablate.py with a fault injected: for tests only (production code holds no test hooks).

    python tests/fault_runner.py pause:2 -- <ablate.py arguments>     # at epoch 2 of every run: touch
                                                                       # <output>/paused, then sleep (to be killed)
    python tests/fault_runner.py pause:2:3 -- ...                      # the same, in the 3rd run of the call only
    python tests/fault_runner.py nan:2 -- ...                          # the loss of epoch 2 becomes NaN
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments import ablate, engine  # noqa: E402


def inject(fault: str) -> None:
    kind, epoch, *run = fault.split(":")
    target_epoch, target_run = int(epoch), int(run[0]) if run else None
    original = engine.train_one_epoch
    runs_seen = []

    def train_one_epoch(parts, cfg, epoch, desc="train"):
        if epoch == 1 or not runs_seen or runs_seen[-1] != desc:
            runs_seen.append(desc)
        in_target = target_run is None or len(runs_seen) == target_run
        if kind == "pause" and epoch == target_epoch and in_target and parts.rank == 0:
            (Path(cfg.output) / "paused").touch()
            time.sleep(300)
        if kind == "nan" and epoch == target_epoch and in_target:
            criterion = parts.criterion
            parts.criterion = lambda out, y: criterion(out, y) * float("nan")
            try:
                return original(parts, cfg, epoch, desc)
            finally:
                parts.criterion = criterion
        return original(parts, cfg, epoch, desc)

    engine.train_one_epoch = train_one_epoch


if __name__ == "__main__":
    fault, separator, *args = sys.argv[1:]
    assert separator == "--", "usage: fault_runner.py FAULT -- ARGS"
    inject(fault)
    sys.exit(ablate.main(args))
