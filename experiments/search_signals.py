"""How a search call stops: SIGTERM and SIGHUP raised as Ctrl-C is, and held while a run is opened or closed.

Every layer that closes its runs on Ctrl-C (a trial's training, Optuna, the call) then closes them for these
signals too; the exit code is the one a shell expects (128 + the signal, 130 for Ctrl-C).
"""
from __future__ import annotations

import re
import signal

# What stops a call from outside (Ctrl-C, `kill`/timeout/Slurm/systemd/Docker, a closed terminal), and holding them
# while a run is opened or closed: one owner, the tracker's (the search imports them from here).
from workbench.tracking import STOP_SIGNALS, signals_held  # noqa: F401

from experiments.runner.run import stop_signals as runner_stop_signals

EXIT_INTERRUPTED = 130


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised as Ctrl-C is: every layer that closes its runs on Ctrl-C (a trial's training,
    Optuna, the call) then closes them for these signals too. `args[0]` names the signal."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum, frame):
    raise Stopped(signum)


def as_stop(exc: BaseException) -> KeyboardInterrupt:
    """Ctrl-C or a stop signal as the KeyboardInterrupt this module raises (the runner's RunInterrupted, its own
    exception for SIGTERM during training, included)."""
    if isinstance(exc, KeyboardInterrupt):
        return exc
    number = re.search(r"\d+", str(exc))
    return Stopped(int(number.group()) if number else signal.SIGTERM)


def describe_stop(exc: BaseException) -> tuple[str, int]:
    """('SIGTERM', 143): the way the call was stopped, in words, and the exit code a shell expects for it."""
    stop = as_stop(exc)
    if isinstance(stop, Stopped):
        return stop.args[0], 128 + stop.signum
    return "Ctrl-C (SIGINT)", EXIT_INTERRUPTED


def stop_signals():
    """While the block runs, SIGTERM and SIGHUP raise Stopped and SIGINT KeyboardInterrupt in this process, so that
    the code that handles Ctrl-C closes what it opened for them too (the runner's handler switch, with this
    module's exception); the previous handlers are restored after."""
    return runner_stop_signals(handler=_raise_stopped)


def raise_stop_signals_here() -> None:
    """In a worker process, for good: the stop signals raise as in the call's process (no handler to restore)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else _raise_stopped)
