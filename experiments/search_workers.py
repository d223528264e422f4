"""The workers of a search call: each loads the study with its own seeded sampler and runs trials until the call's
trials are taken, time is up, or a grid ends; one worker runs in the call's process, several in spawned processes.
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import random
import signal
import socket
import sys
import time
import warnings
from pathlib import Path

import optuna
import torch

from sepvit.config import SepViTConfig
from workbench.tracking import Tracker

from experiments.data import build_datasets_for
from experiments.search_objective import TrialObjective
from experiments.search_signals import Stopped, describe_stop, raise_stop_signals_here, signals_held
from experiments.search_space import parse_space
from experiments.search_storage import MarkStaleTrial, Settings, enqueue_reference, open_storage
from experiments.train_config import TrainConfig

SAMPLERS = ("tpe", "grid", "random")
PRUNERS = ("median", "hyperband", "none")
TPE_STARTUP_TRIALS = 5  # Optuna's default 10 would leave an 8-trial study random
MEDIAN_STARTUP_TRIALS = 4


def median_warmup_epochs(epochs: int) -> int:
    """The first epoch at which the median rule may prune: the second half of the budget. At the default budget a
    run covers half its way from chance by epoch 4 of 9 (the calibration's take-off check), at a seed-dependent
    epoch; a rule applied earlier prunes on when a run took off, not on where it ends (a 2026-12-07 study pruned a
    configuration at epoch 2, 47.7 %, whose neighbours, the same windows and groups with other window tokens,
    ended at 98.0 and 98.2 %)."""
    return epochs // 2 + 1


def make_sampler(settings: Settings, index: int) -> optuna.samplers.BaseSampler:
    """The worker's sampler, seeded from (--seed, the study's size when the call started, host, worker index):
    reproducible for one worker, and different workers (here or on other machines) do not propose the same
    sequence."""
    seed = random.Random(f"{settings.seed}/{settings.sampler_salt}/{socket.gethostname()}/{index}").randrange(2**31)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if settings.sampler == "grid":
            return optuna.samplers.BruteForceSampler(seed=seed)
        if settings.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP_TRIALS, multivariate=True,
                                          group=True, constant_liar=True)


def make_pruner(settings: Settings) -> optuna.pruners.BasePruner:
    epochs = int(settings.train["epochs"])
    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS,
                                           n_warmup_steps=median_warmup_epochs(epochs))
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    return optuna.pruners.NopPruner()


class _LocalCounter:
    """The trial counter of a call with one worker (no process to share it with)."""

    def __init__(self):
        self.value = 0

    def get_lock(self):
        return contextlib.nullcontext()


def claim_trial(slots, n_trials: int, deadline: float | None) -> bool:
    """Take one of the call's n trials (shared by its workers), unless all are taken or time is up."""
    if deadline is not None and time.time() >= deadline:
        return False
    with slots.get_lock():
        if slots.value >= n_trials:
            return False
        slots.value += 1
        return True


class _NextTrial:
    """After each trial: print one line, then claim the next trial or stop this worker."""

    def __init__(self, settings: Settings, slots, started: float, index: int):
        self.settings, self.slots, self.started, self.index = settings, slots, started, index

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        print(trial_line(trial, self.settings, self.index), file=sys.stderr, flush=True)
        if not claim_trial(self.slots, self.settings.n_trials, self.settings.deadline):
            study.stop()
            return
        with self.slots.get_lock():  # the workers of this call enqueue it once
            if enqueue_reference(study, self.settings.reference):
                print("the reference trial was lost (its worker died): enqueued again", file=sys.stderr, flush=True)


def trial_line(trial: optuna.trial.FrozenTrial, settings: Settings, index: int) -> str:
    seconds = (trial.duration.total_seconds() if trial.duration else 0.0)
    if trial.state == optuna.trial.TrialState.COMPLETE:
        values = trial.values
        outcome = "top-1 %.2f" % values[0] + "".join(
            f"  {o} {v:.4g}" for o, v in zip(settings.objectives[1:], values[1:]))
        if "duplicate_of" in trial.user_attrs:
            outcome += f" (repeat of trial {trial.user_attrs['duplicate_of']}: its values)"
    elif trial.state == optuna.trial.TrialState.PRUNED:
        outcome = (f"invalid: {trial.user_attrs['invalid']}" if "invalid" in trial.user_attrs
                   else trial.user_attrs.get("pruned_reason", "pruned"))
    else:
        outcome = trial.user_attrs.get("fail_reason", "failed")
    params = " ".join(f"{k}={v}" for k, v in trial.params.items())
    worker = f" [worker {index}]" if settings.workers > 1 else ""
    return f"trial {trial.number} {trial.state.name}{worker}: {outcome} | {params} | {seconds:.0f} s"


def run_worker(settings: Settings, index: int, slots, datasets=None) -> None:
    """One worker: load the study and run trials until the call's trials are taken, time is up, or a grid ends."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    if settings.workers > 1:
        logging.basicConfig(level=logging.INFO, format=f"[worker {index}] %(message)s", stream=sys.stderr,
                            force=True)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial's outcome is one line of ours
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    space = parse_space(settings.space, settings.space_source)
    base, train = SepViTConfig.from_dict(settings.model), TrainConfig.from_dict(settings.train)
    stale = MarkStaleTrial(settings.tracking_uri, settings.experiment, settings.artifact_root)
    storage = open_storage(settings.storage, settings.heartbeat, stale)
    study = optuna.load_study(study_name=settings.study_name, storage=storage, sampler=make_sampler(settings, index),
                              pruner=make_pruner(settings))
    if datasets is None:
        datasets = build_datasets_for(train)
    tracker = Tracker(settings.tracking_uri, settings.experiment, artifact_root=settings.artifact_root)
    objective = TrialObjective(settings, space, base, train, datasets, tracker, Path(train.output))
    if not claim_trial(slots, settings.n_trials, settings.deadline):
        return
    timeout = None if settings.deadline is None else max(settings.deadline - time.time(), 0.001)
    study.optimize(objective, timeout=timeout, catch=(Exception,), gc_after_trial=False,
                   callbacks=[_NextTrial(settings, slots, time.time(), index)])


def _worker_process(settings: Settings, index: int, slots) -> None:  # pragma: no cover (runs in a child process)
    raise_stop_signals_here()  # as in the main process: the trial is closed with the reason, then the worker stops
    try:
        run_worker(settings, index, slots)
    except KeyboardInterrupt as exc:
        sys.exit(describe_stop(exc)[1])


def run_workers(settings: Settings, datasets) -> list[int]:
    """Run the call's trials: in this process (one worker) or in N spawned processes; their exit codes."""
    if settings.workers == 1:
        run_worker(settings, 0, _LocalCounter(), datasets)
        return [0]
    context = multiprocessing.get_context("spawn")  # no forked SQLAlchemy/MLflow connections or torch threads
    slots = context.Value("i", 0)
    processes = [context.Process(target=_worker_process, args=(settings, i, slots), name=f"search-worker-{i}")
                 for i in range(settings.workers)]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt as exc:
        with signals_held():
            stop_workers(processes, exc)
        raise
    return [p.exitcode for p in processes]


def stop_workers(processes, exc: KeyboardInterrupt, grace: float = 3.0, patience: float = 120.0) -> None:
    """A terminal's Ctrl-C reaches every worker by itself; a signal sent to this process alone (kill, timeout) is
    passed on to the workers still running after `grace` seconds, which then close their trials and stop. A worker
    that has not stopped after `patience` seconds is killed (its trial is then failed as a lost worker's)."""
    deadline = time.time() + grace
    for process in processes:
        process.join(max(deadline - time.time(), 0))
    signum = exc.signum if isinstance(exc, Stopped) else signal.SIGINT
    for process in processes:
        if process.is_alive():
            os.kill(process.pid, signum)
    deadline = time.time() + patience
    for process in processes:
        process.join(max(deadline - time.time(), 0))
        if process.is_alive():
            process.kill()
            process.join()
