"""Run experiments/search.py with a fault injected: for tests only (production code holds no test hooks).

    SEPVIT_SEARCH_FAULT="pause:trial 1" python tests/search_faults.py <search.py arguments>
        in the run named "trial 1": touch <output>/paused-<pid>, then sleep (the test kills that worker)
    SEPVIT_SEARCH_FAULT="raise:trial 1" ...
        the run named "trial 1" raises RuntimeError("injected fault") in its first epoch
    SEPVIT_SEARCH_FAULT="kill:reference seed1" ...
        in the run named "reference seed1": the process SIGKILLs itself (no handler runs, as with `kill -9`)
    SEPVIT_SEARCH_FAULT="pause-after:trial 0" ...
        once trial 0 is over (between two trials): touch <output>/paused-<pid>, then sleep

The patch is applied when this module is imported, so spawned search workers (which re-import the main module)
carry it too.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments import search, search_workers  # noqa: E402
from experiments.runner import engine  # noqa: E402


def inject(fault: str) -> None:
    kind, _, target = fault.partition(":")
    if kind == "pause-after":
        inject_between_trials(int(target.split()[-1]))
        return
    original = engine.train_one_epoch

    def train_one_epoch(parts, cfg, epoch, desc="train"):
        if desc == target and kind == "pause":
            (Path(cfg.output) / f"paused-{os.getpid()}").touch()
            time.sleep(600)
        if desc == target and kind == "raise":
            raise RuntimeError("injected fault")
        if desc == target and kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        return original(parts, cfg, epoch, desc)

    engine.train_one_epoch = train_one_epoch


def inject_between_trials(number: int) -> None:
    original = search_workers._NextTrial.__call__

    def after_trial(self, study, trial):
        original(self, study, trial)
        if trial.number == number:
            (Path(self.settings.train["output"]) / f"paused-{os.getpid()}").touch()
            time.sleep(600)

    search_workers._NextTrial.__call__ = after_trial


if os.environ.get("SEPVIT_SEARCH_FAULT"):
    inject(os.environ["SEPVIT_SEARCH_FAULT"])

if __name__ == "__main__":
    sys.exit(search.main(sys.argv[1:]))
