"""`python experiments/search.py --n-trials 8`: an Optuna search over SepViT's group sizes (and any other switch).

    python experiments/search.py --n-trials 8                              # group sizes, window size, window token
    python experiments/search.py --n-trials 8                              # again: 8 more trials in the same study
    python experiments/search.py --space training --n-trials 30 --workers 2
    python experiments/search.py --objectives top1 macs --n-trials 20      # accuracy against MACs: a Pareto front
    python experiments/search.py --space my_space.yaml --sampler grid
    python experiments/search.py --storage postgresql://user:pw@db-host/optuna --study-name gs --n-trials 10

Each trial trains one configuration with the runner's engine (`experiments.run.train_and_evaluate`) and reports
its validation top-1 after every epoch, so the pruner can stop a poor trial early. The paper's configuration (the
base model: `--model` and `--model-kwargs`) is enqueued as the first trial of a new study, and every report says how
far the best trial is from it. Studies live in an Optuna storage (default: `<output>/optuna.db`, SQLite, which
several processes share on one machine; PostgreSQL across machines); the same command with the same
`--study-name` adds trials to the study. MLflow: one parent run per call, one child run per trial (also pruned
and failed ones), tagged with the trial number and state. Bad input is refused before any trial: one line on
stderr, exit code 2.

Whatever ends a call (an error, Ctrl-C, SIGTERM, SIGHUP) closes its parent run and the trial in progress with the
reason (Optuna's `fail_reason` too); the same command continues the study. A call killed outright (SIGKILL, out of
memory) is repaired by the next call on the same machine: its trials FAIL, its parent is KILLED and a lost reference
trial is enqueued again. Passwords in URLs are masked in messages and in everything MLflow keeps; user-supplied
names become folders only through the runner's slug, inside --output.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import random
import re
import signal
import socket
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import optuna

from sepvit.config import PRESETS, SepViTConfig
from workbench.cli import OneLineParser, add_dataclass_flags, fail

from experiments import ablate
from experiments.calls import slug
from experiments.search_space import InvalidCombination, Space, SpaceError, load_space, parse_space
from experiments.train_config import TrainConfig

PROG = "search.py"
DEFAULT_STUDY = "sepvit-search"
DEFAULT_EXPERIMENT = "sepvit-search"
# objective -> (direction, what it measures)
OBJECTIVES = {
    "top1": ("maximize", "validation top-1 (%) of the last epoch"),
    "macs": ("minimize", "MACs of one image, analytic count in fvcore's convention (multiply-add = 1)"),
    "latency": ("minimize", "batch-1 forward latency (ms, median), analysis.benchmark, once per architecture"),
}
METRIC_NAMES = {"top1": "top1", "macs": "macs", "latency": "latency_ms"}  # Optuna's names (optuna-dashboard)
SAMPLERS = ("tpe", "grid", "random")
PRUNERS = ("median", "hyperband", "none")
# The search trains many configurations, so its default budget per trial is smaller than the runner's (9 epochs
# of 4000 images): 8 trials fit in 10 minutes on 2 CPU cores (README, "Searching").
SEARCH_BUDGET = {"epochs": 3, "train_size": 2000, "val_size": 500}
TPE_STARTUP_TRIALS = 5  # Optuna's default 10 would leave an 8-trial study random
MEDIAN_STARTUP_TRIALS, MEDIAN_WARMUP_EPOCHS = 4, 2
# Settings that may differ between calls of one study (they do not change what a trial measures).
MAY_CHANGE = ("workers", "device", "output", "data_dir")
EXIT_FAILED, EXIT_INTERRUPTED = 1, 130
STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]*$")
MAX_NAME = 200  # --experiment and --study-name name folders under --output (a file name holds 255 bytes)
# What stops a call from outside: Ctrl-C, `kill`/timeout/Slurm/systemd/Docker, a closed terminal.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
# `scheme://user:password@`: the password is what SQLAlchemy would read (up to the token's last @)
URL_CREDENTIALS = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):\S*@")
HOST = socket.gethostname()

log = logging.getLogger("sepvit.search")


class UsageError(ValueError):
    pass


class TrialFailed(RuntimeError):
    """A trial whose training ended FAILED without raising (e.g. a NaN loss)."""


class StudyStorageError(RuntimeError):
    """The study's storage failed while a trial reported to it (the message has its credentials masked)."""


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


@contextlib.contextmanager
def stop_signals():
    """While the block runs, SIGTERM and SIGHUP raise Stopped and SIGINT KeyboardInterrupt in this process, so that
    the code that handles Ctrl-C closes what it opened for them too; the previous handlers are restored after.
    Only the main thread can set handlers: elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else _raise_stopped)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


@contextlib.contextmanager
def signals_held():
    """Hold the stop signals until the block ends, when a held one acts: a run is opened, or closed, whole."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: nothing to hold
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


# ---------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s = p.add_argument_group("search")
    s.add_argument("--space", default="default",
                   help="default (group size per grouped stage, window size, window token), training (default + lr, "
                        "weight decay, drop path) or a YAML file (see experiments/spaces/example.yaml)")
    s.add_argument("--objectives", nargs="+", default=["top1"], choices=list(OBJECTIVES), metavar="OBJECTIVE",
                   help="top1 (maximised); add macs and/or latency (minimised) for a Pareto front")
    s.add_argument("--n-trials", type=int, default=8, help="trials this call adds (shared by its workers)")
    s.add_argument("--timeout", type=float, help="seconds after which this call starts no new trial")
    s.add_argument("--study-name", default=DEFAULT_STUDY, help="Optuna study: the same name continues the study")
    s.add_argument("--storage", help="Optuna storage URL: sqlite:///ABS/PATH.db or postgresql://user:pw@host/db "
                                     "(default: sqlite:///<output>/optuna.db)")
    s.add_argument("--sampler", choices=SAMPLERS, default="tpe",
                   help="tpe (multivariate TPE), grid (every valid combination once), random")
    s.add_argument("--pruner", choices=PRUNERS,
                   help="stop poor trials on their per-epoch validation top-1 (default: median; none with several "
                        "objectives, which Optuna cannot prune)")
    s.add_argument("--workers", dest="search_workers", type=int, default=1, metavar="N",
                   help="worker processes sharing the study (the runner's DataLoader workers are -j/--loader-workers)")
    s.add_argument("--heartbeat", type=int, default=20,
                   help="seconds between a running trial's heartbeats; a trial silent for 3 heartbeats (its worker "
                        "died) is marked FAIL")
    m = p.add_argument_group("model (the base configuration: the paper's defaults unless changed here)")
    m.add_argument("--model", default=ablate.DEFAULT_MODEL, help=f"preset: {', '.join(PRESETS)}")
    m.add_argument("--model-kwargs", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="any other SepViTConfig field, typed by the field: embed_dims=16,32,64,128")
    m.add_argument("--drop-path", type=float, help="stochastic depth rate (drop_path_rate)")
    t = p.add_argument_group("training of every trial (TrainConfig fields, the runner's names)")
    add_dataclass_flags(t, TrainConfig, skip=("workers",))
    t.add_argument("-j", "--loader-workers", dest="workers", type=int, default=0,
                   help="DataLoader worker processes per trial (the runner's -j/--workers)")
    p.set_defaults(**SEARCH_BUDGET)
    for action in p._actions:
        if action.dest == "seed":
            action.help = ("training seed of every trial (the runner's --seed) and the sampler's seed; trials share "
                           "it, so they differ only in their parameters")
        elif action.dest == "epochs":
            action.help = "epochs per trial: the pruner's resource"
    r = p.add_argument_group("tracking")
    r.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///<output>/mlflow.db)")
    r.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="MLflow experiment name")
    return p


# ---------------------------------------------------------------------------------- settings
@dataclass
class Settings:
    """Everything a worker process needs (plain data: it is sent to spawned workers)."""

    study_name: str
    storage: str
    space: dict[str, Any]
    space_source: str
    model: dict[str, Any]  # the base configuration, fitted to the data
    train: dict[str, Any]
    objectives: tuple[str, ...]
    sampler: str
    pruner: str
    seed: int
    heartbeat: int
    tracking_uri: str
    experiment: str
    artifact_root: str | None
    n_trials: int
    workers: int
    timeout: float | None = None
    deadline: float | None = None
    sampler_salt: int = 0
    parent_run_id: str | None = None
    threads: int | None = None
    reference: dict[str, Any] | None = None  # the base configuration's parameter values, enqueued as a trial

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o][0] for o in self.objectives]

    def comparable(self) -> dict[str, Any]:
        """What the trials of one study must share; stored in the study and compared when a call continues it."""
        train = {k: v for k, v in self.train.items() if k not in MAY_CHANGE}
        return {"objectives": list(self.objectives), "space": self.space, "model": self.model, "train": train}


@dataclass
class Prepared:
    settings: Settings
    space: Space
    base: SepViTConfig
    train: TrainConfig
    datasets: Any
    existing: bool  # the study is already in the storage
    reference: dict[str, Any] | None
    reference_note: str
    combinations: dict[str, Any] = field(default_factory=dict)


def mask_secrets(text: str) -> str:
    """`text` with the password of every URL in it replaced by *** (for messages, logs and anything MLflow keeps)."""
    return URL_CREDENTIALS.sub(r"\1:***@", text)


mask_url = mask_secrets


def command_line(argv: Sequence[str]) -> str:
    """The call's command as the parent run records it, credentials masked in each argument."""
    return " ".join([PROG, *(mask_secrets(a) for a in argv)])


def folder_name(name: str) -> str:
    """A user-supplied name as one folder under --output: the runner's slug, never '.' or '..'."""
    name = slug(name)
    return name if name.strip(".") else "run"


def storage_url(args) -> str:
    if args.storage:
        return args.storage
    return f"sqlite:///{(Path(args.output) / 'optuna.db').resolve()}"


def _driver_url(url: str) -> str:
    """postgresql:// goes through psycopg 3 when psycopg2 (SQLAlchemy's default driver) is not installed."""
    if url.startswith(("postgresql://", "postgres://")):
        import importlib.util

        if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg") is not None:
            return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def check_storage(url: str) -> None:
    """Refuse a storage that cannot hold the study, before any trial: a wrong scheme, an in-memory or unwritable
    SQLite file, a server that does not answer, a missing driver."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    base_scheme = scheme.split("+")[0]
    if base_scheme not in ("sqlite", "postgresql", "postgres", "mysql"):
        raise UsageError(f"--storage {mask_url(url)}: use sqlite:///ABS/PATH.db (one machine) or "
                         "postgresql://user:password@host:port/database (several machines)")
    if base_scheme == "sqlite":
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path in ("", ":memory:"):
            raise UsageError(f"--storage {url} is an in-memory database: the study would be lost and workers could "
                             "not share it; give a file, sqlite:///ABS/PATH.db")
        folder = Path(path).expanduser().resolve().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--storage {url}: cannot create its folder {folder} ({exc.strerror})") from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UsageError(f"--storage {url}: the folder {folder} is not writable; choose another --storage or "
                             "--output")
    try:
        open_storage(url, heartbeat=None)
    except ModuleNotFoundError as exc:
        raise UsageError(f"--storage {mask_url(url)}: the database driver is not installed ({exc.name}); "
                         "pip install 'psycopg[binary]' for PostgreSQL") from None
    except Exception as exc:  # noqa: BLE001  (SQLAlchemy raises OperationalError, ArgumentError, ...)
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise UsageError(f"cannot reach the study storage {mask_url(url)} ({reason[0] if reason else type(exc).__name__})"
                         "; start the database server or fix --storage (drop it for a local SQLite file)") from None


STALE_REASON = "its worker stopped sending heartbeats (killed or crashed): the trial is FAIL"


def record_fail_reason(storage, trial_id: int, reason: str, lost_worker: bool = False) -> bool:
    """Why a trial failed, where Optuna's tools (optuna-dashboard: the `fail_reason` system attribute) and this
    project's report (the user attribute) look; only while the trial still runs (a finished trial is read-only).
    `lost_worker`: its process died, so the trial never ended by itself. False if the trial had already finished
    (another process failed it first)."""
    reason = mask_secrets(reason)[:2000]
    try:
        storage.set_trial_system_attr(trial_id, "fail_reason", reason)
        storage.set_trial_user_attr(trial_id, "fail_reason", reason)
        if lost_worker:
            storage.set_trial_user_attr(trial_id, "lost_worker", True)
        return True
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


class SearchStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage, writing the reason onto a trial whose worker stopped beating just before Optuna fails it:
    Optuna's stale-trial callback runs only after the trial is FAIL, when its attributes can no longer be set."""

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        for trial_id in stale:
            record_fail_reason(self, trial_id, STALE_REASON, lost_worker=True)
        return stale


def open_storage(url: str, heartbeat: int | None, stale_callback=None) -> optuna.storages.RDBStorage:
    """An RDBStorage with Optuna's heartbeat (a trial whose worker stops beating for 3 heartbeats is failed by the
    next trial that starts) and a generous SQLite lock timeout (several workers write to one file)."""
    url = _driver_url(url)
    connect_args = {"timeout": 60} if url.startswith("sqlite") else {"connect_timeout": 5}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return SearchStorage(
            url, engine_kwargs={"connect_args": connect_args},
            heartbeat_interval=heartbeat, grace_period=3 * heartbeat if heartbeat else None,
            heartbeat_stale_trial_callback=stale_callback)


def _study_id(storage, name: str) -> int | None:
    try:
        return storage.get_study_id_from_name(name)
    except KeyError:
        return None


def prepare(args) -> Prepared:
    """Validate everything (no study, trial or MLflow run is created): a bad request raises a one-line error."""
    from experiments.data import build_datasets, check_dataset
    from experiments.engine import check_training_settings, fit_model_to_data
    from workbench.tracking import check_experiment_name, check_tracking_uri, default_tracking_uri

    objectives = tuple(args.objectives)
    if len(set(objectives)) != len(objectives):
        raise UsageError(f"--objectives {' '.join(objectives)} repeats an objective: name each once")
    if "top1" not in objectives:
        raise UsageError(f"--objectives {' '.join(objectives)}: the search trains for accuracy, so top1 must be one "
                         "of them (add it: --objectives top1 " + " ".join(objectives) + ")")
    pruner = args.pruner or ("median" if len(objectives) == 1 else "none")
    if len(objectives) > 1 and pruner != "none":
        raise UsageError(f"--pruner {pruner} needs a single objective (Optuna cannot prune multi-objective trials): "
                         "drop --pruner or the extra objectives")
    for flag, value, minimum in (("--n-trials", args.n_trials, 1), ("--workers", args.search_workers, 1),
                                 ("--heartbeat", args.heartbeat, 1)):
        if value < minimum:
            raise UsageError(f"{flag} must be >= {minimum}, got {value}")
    if args.timeout is not None and not args.timeout > 0:
        raise UsageError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    if not STUDY_NAME.match(args.study_name or ""):
        raise UsageError(f"--study-name {args.study_name!r}: use letters, digits and _ . : + - (starting with a "
                         "letter or digit)")
    for flag, name in (("--study-name", args.study_name), ("--experiment", args.experiment)):
        if len(name) > MAX_NAME:
            raise UsageError(f"{flag} is {len(name)} characters long: use at most {MAX_NAME} (it also names a folder "
                             "under --output)")
    base = ablate.base_config(args)
    train = ablate.train_config(args, img_size=args.img_size or base.img_size)
    check_training_settings(train)
    check_dataset(train.dataset, train.data_dir)
    space = load_space(args.space, base, train)
    check_experiment_name(args.experiment)
    tracking_uri = args.tracking_uri or default_tracking_uri(args.output)
    check_tracking_uri(tracking_uri)
    url = storage_url(args)
    check_storage(url)
    datasets = build_datasets(train.dataset, train.data_dir, train.img_size, train.train_size, train.val_size,
                              seed=train.data_seed, verify=True)
    info = datasets[2]
    base = fit_model_to_data(base, info)
    train = train.replace(img_size=info.img_size)
    combinations = space.check(base, train)
    if args.sampler == "grid" and not space.finite:
        continuous = [p.name for p in space.params if not p.finite]
        raise UsageError(f"--sampler grid needs a finite space, but {', '.join(continuous)} "
                         f"{'is a continuous range' if len(continuous) == 1 else 'are continuous ranges'}: give "
                         "choices or a step, or use --sampler tpe/random")
    reference, note = space.reference_values(base, train)
    settings = Settings(
        study_name=args.study_name, storage=url, space=space.to_dict(), space_source=space.source,
        model=base.to_dict(), train=train.to_dict(), objectives=objectives, sampler=args.sampler, pruner=pruner,
        seed=train.seed, heartbeat=args.heartbeat, tracking_uri=tracking_uri, experiment=args.experiment,
        artifact_root=None if args.tracking_uri else str(Path(args.output).resolve() / "mlartifacts"),
        n_trials=args.n_trials, workers=args.search_workers, timeout=args.timeout, reference=reference)
    storage = open_storage(url, heartbeat=None)
    study_id = _study_id(storage, args.study_name)
    if study_id is not None:
        _check_same_study(storage, study_id, settings)
    return Prepared(settings, space, base, train, datasets, study_id is not None, reference, note, combinations)


def _check_same_study(storage, study_id: int, settings: Settings) -> None:
    """A call that continues a study must measure what its earlier trials measured."""
    name = settings.study_name
    directions = [d.name.lower() for d in storage.get_study_directions(study_id)]
    stored = storage.get_study_user_attrs(study_id).get("sepvit.settings")
    if stored is None:
        raise UsageError(f"study {name!r} in {mask_url(settings.storage)} was not created by {PROG}: choose another "
                         "--study-name")
    if directions != settings.directions or stored["objectives"] != list(settings.objectives):
        raise UsageError(f"study {name!r} was created with --objectives {' '.join(stored['objectives'])}, not "
                         f"{' '.join(settings.objectives)}: use those objectives or another --study-name")
    current = settings.comparable()
    for section in ("space", "model", "train"):
        if stored[section] != current[section]:
            keys = sorted(set(stored[section]) | set(current[section]))
            diffs = [f"{k}: {stored[section].get(k)} -> {current[section].get(k)}" for k in keys
                     if stored[section].get(k) != current[section].get(k)]
            what = {"space": "search space", "model": "base model", "train": "training settings"}[section]
            raise UsageError(f"study {name!r} was created with another {what} ({'; '.join(diffs[:3])}): its trials "
                             "would not be comparable; repeat the study's settings or choose another --study-name")


# ---------------------------------------------------------------------------------- the study
def open_study(prepared: Prepared) -> optuna.Study:
    """Create the study (or load it), record its settings, fail the trials an earlier call left RUNNING when it was
    killed, and enqueue the reference configuration first (again, if it was lost that way)."""
    settings = prepared.settings
    storage = open_storage(settings.storage, heartbeat=None)
    study = optuna.create_study(study_name=settings.study_name, storage=storage, directions=settings.directions,
                                load_if_exists=True)
    new = "sepvit.settings" not in study.user_attrs
    if new:
        study.set_user_attr("sepvit.settings", settings.comparable())
        study.set_user_attr("sepvit.objectives", {o: OBJECTIVES[o][1] for o in settings.objectives})
    if study.metric_names is None:  # also for a study made before names were set
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([METRIC_NAMES[o] for o in settings.objectives])
    if "sepvit.data" not in study.user_attrs:  # what the report's chance level needs: the data actually used
        info = prepared.datasets[2]
        study.set_user_attr("sepvit.data", {"name": info.name, "num_classes": info.num_classes,
                                            "val_size": info.val_size})
    fail_dead_trials(settings, study)
    fail_stale_trials(settings, study, wait=False)
    enqueue_reference(study, prepared.reference)
    return study


def reference_lost(study: optuna.Study) -> bool:
    """True when no reference trial is done, running or waiting, and every one that ran FAILed without a training
    result (killed, interrupted, its worker lost, an error): a new study, or one whose reference never got to
    finish. A reference whose training ran and ended FAILED (e.g. a NaN loss) is not retried: trials share the
    seed, so it would fail again."""
    references = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("reference")]
    return all(t.state == optuna.trial.TrialState.FAIL and "training_result" not in t.user_attrs for t in references)


def enqueue_reference(study: optuna.Study, reference: dict[str, Any] | None) -> bool:
    if reference is None or not reference_lost(study):
        return False
    study.enqueue_trial(reference, user_attrs={"reference": True})
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def dead_here(worker: dict | None) -> bool:
    """A process recorded as {"host", "pid"} ran on this machine and no longer exists. (A pid reused by another
    process reads as alive: such a trial is then failed by the heartbeat instead.)"""
    return bool(worker) and worker.get("host") == HOST and not _alive(int(worker["pid"]))


def fail_dead_trials(settings: Settings, study: optuna.Study, leaving: str | None = None) -> list[int]:
    """FAIL, with the reason, the RUNNING trials whose worker process on this machine no longer exists (a call
    killed by SIGKILL, out of memory or a crash): at once, without waiting out the heartbeat's grace period. With
    `leaving` (why this process stops), also the trials this process still holds. Their MLflow runs are failed
    too. Numbers returned."""
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        mine = bool(worker) and worker.get("host") == HOST and int(worker["pid"]) == os.getpid()
        if mine and leaving:
            reason = f"{leaving}; the trial is FAIL"
        elif dead_here(worker):
            reason = (f"its worker process (pid {worker['pid']} on {HOST}) died without closing the trial (killed, "
                      "e.g. SIGKILL or out of memory): the trial is FAIL")
        else:
            continue
        if not record_fail_reason(study._storage, trial._trial_id, reason, lost_worker=True):
            continue
        try:
            study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        MarkStaleTrial(settings.tracking_uri, settings.experiment, settings.artifact_root, reason)(
            study, study._storage.get_trial(trial._trial_id))
        failed.append(trial.number)
    return failed


def close_dead_calls(settings: Settings, tracker) -> list[str]:
    """Close, KILLED with the reason, the MLflow parent runs of this study that an earlier call on this machine
    left RUNNING when its process was killed; ids returned. A call of another machine is left alone."""
    query = (f"tags.kind = 'search' and tags.`optuna.study` = '{settings.study_name}' "
             "and attributes.status = 'RUNNING'")
    closed = []
    for run in tracker.client.search_runs([tracker.experiment_id], filter_string=query, max_results=1000):
        tags = run.data.tags
        if "pid" not in tags or not dead_here({"host": tags.get("host"), "pid": tags["pid"]}):
            continue
        tracker.end_run(run.info.run_id, "KILLED", f"the call's process (pid {tags['pid']} on {HOST}) died without "
                                                   "closing this run (killed, e.g. SIGKILL or out of memory); closed "
                                                   "by a later call of the study")
        closed.append(run.info.run_id)
    return closed


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
                                           n_warmup_steps=min(MEDIAN_WARMUP_EPOCHS, epochs))
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    return optuna.pruners.NopPruner()


# ---------------------------------------------------------------------------------- cost objectives
def architecture_key(cfg: SepViTConfig) -> str:
    """Configs that differ only in training-time regularisation (dropout, drop path) run the same network."""
    data = {k: v for k, v in cfg.to_dict().items() if k not in ("drop_rate", "drop_path_rate")}
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def analytic_macs(cfg: SepViTConfig) -> int:
    """MACs of one image: the analytic count in fvcore's convention (the paper's formulas + norms)."""
    from analysis.complexity import model_macs

    return int(model_macs(cfg).fvcore)


def measure_latency(cfg: SepViTConfig, device: str) -> float:
    """Median batch-1 forward latency (ms) with `analysis.benchmark.latency_ms`, 30 calls after 5 warm-up calls."""
    import torch

    from analysis.benchmark import Settings, latency_ms
    from experiments.engine import resolve_device

    settings = Settings(batch_size=1, img_size=cfg.img_size, device=str(resolve_device(device)),
                        threads=torch.get_num_threads(), rounds=30, warmup=5)
    with torch.random.fork_rng():
        model = cfg.build()
        return float(latency_ms(model, cfg.in_chans, settings).median)


def latency_of(study: optuna.Study, cfg: SepViTConfig, device: str) -> float:
    """Measured once per distinct architecture in the whole study (kept in the study, shared by workers)."""
    key = f"latency_ms:{architecture_key(cfg)}"
    known = study.user_attrs.get(key)
    if known is not None:
        return float(known)
    value = measure_latency(cfg, device)
    study.set_user_attr(key, value)
    return value


# ---------------------------------------------------------------------------------- MLflow per trial
def trial_tags(settings: Settings, number: int, values: dict[str, Any], reference: bool) -> dict[str, str]:
    return {"optuna.study": settings.study_name, "optuna.trial_number": str(number), "optuna.state": "RUNNING",
            "optuna.params": json.dumps(values, sort_keys=True), "config": f"trial {number}",
            "is_reference": str(reference).lower(), "kind": "train"}


def find_trial_run(tracker, study_name: str, number: int, parent_run_id: str | None = None):
    """The MLflow child run of a trial (None if the trial failed before its run was opened)."""
    query = f"tags.`optuna.study` = '{study_name}' and tags.`optuna.trial_number` = '{number}'"
    if parent_run_id:
        query += f" and tags.`mlflow.parentRunId` = '{parent_run_id}'"
    runs = tracker.client.search_runs([tracker.experiment_id], filter_string=query, max_results=5)
    return runs[0] if runs else None


def record_trial_without_training(tracker, parent_run_id: str, tags: dict, state: str, reason: str,
                                  values: dict) -> str:
    """A child run for a trial that never trained (invalid combination, or an error before training)."""
    run_id = tracker.start_run(tags["config"], parent_run_id=parent_run_id, tags={**tags, "optuna.state": state})
    if values:
        tracker.log_params(run_id, {f"trial.{k}": v for k, v in values.items()})
    tracker.end_run(run_id, "FINISHED" if state == "PRUNED" else "FAILED", reason)
    return run_id


class MarkStaleTrial:
    """Optuna's heartbeat callback: the trial of a dead worker was just failed; fail its MLflow run too."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: str | None, reason: str = STALE_REASON):
        self.tracking_uri, self.experiment, self.artifact_root = tracking_uri, experiment, artifact_root
        self.reason = reason

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        from workbench.tracking import Tracker

        reason = self.reason  # on the Optuna trial already (SearchStorage, fail_dead_trials)
        tracker = Tracker(self.tracking_uri, self.experiment, self.artifact_root)
        run = find_trial_run(tracker, study.study_name, trial.number, trial.user_attrs.get("mlflow_parent_run_id"))
        if run is None:
            parent = trial.user_attrs.get("mlflow_parent_run_id")
            if parent:
                tags = trial_tags_from(study.study_name, trial)
                record_trial_without_training(tracker, parent, tags, "FAIL", reason, trial.params)
            return
        tracker.set_tags(run.info.run_id, {"optuna.state": "FAIL"})
        if run.info.status == "RUNNING":
            tracker.end_run(run.info.run_id, "FAILED", reason)
        log.warning("trial %d: %s", trial.number, reason)


def trial_tags_from(study_name: str, trial: optuna.trial.FrozenTrial) -> dict[str, str]:
    return {"optuna.study": study_name, "optuna.trial_number": str(trial.number), "optuna.state": "FAIL",
            "optuna.params": json.dumps(trial.params, sort_keys=True), "config": f"trial {trial.number}",
            "is_reference": str(bool(trial.user_attrs.get("reference"))).lower(), "kind": "train"}


# ---------------------------------------------------------------------------------- the objective
class TrialObjective:
    """One trial: sample a configuration, prune it at once if invalid, else train it with the runner's engine,
    reporting validation top-1 after each epoch; return the objectives."""

    def __init__(self, settings: Settings, space: Space, base: SepViTConfig, train: TrainConfig, datasets,
                 tracker, output: Path):
        self.settings, self.space, self.base, self.train = settings, space, base, train
        self.datasets, self.tracker, self.output = datasets, tracker, output

    def __call__(self, trial: optuna.Trial):
        from experiments.run import RunInterrupted

        # who runs it: a later call fails it at once if this process dies (fail_dead_trials)
        trial.set_user_attr("worker", {"host": HOST, "pid": os.getpid()})
        trial.set_user_attr("mlflow_parent_run_id", self.settings.parent_run_id)
        try:
            return self._objective(trial)
        except (KeyboardInterrupt, RunInterrupted) as exc:  # Ctrl-C or a stop signal, wherever it came
            stop = as_stop(exc)
            if "fail_reason" not in trial.user_attrs:
                reference = bool(trial.user_attrs.get("reference"))
                self._mark_failed(trial.number, trial_tags(self.settings, trial.number, dict(trial.params), reference),
                                  f"interrupted ({describe_stop(stop)[0]})", dict(trial.params), trial)
            raise stop from None  # Optuna marks the trial FAIL and stops this worker

    def _objective(self, trial: optuna.Trial):
        from experiments.engine import fit_model_to_data
        from experiments.run import reported_metric, train_and_evaluate

        s, number = self.settings, trial.number
        reference = bool(trial.user_attrs.get("reference"))
        try:
            values, model_cfg, train_cfg = self.space.sample(_suggest(trial), self.base, self.train)
            model_cfg = fit_model_to_data(model_cfg, self.datasets[2])
        except InvalidCombination as exc:
            reason = f"invalid combination, pruned before training: {exc}"
            trial.set_user_attr("invalid", str(exc))
            record_trial_without_training(self.tracker, s.parent_run_id,
                                          trial_tags(s, number, dict(trial.params), reference), "PRUNED", reason,
                                          dict(trial.params))
            raise optuna.TrialPruned(reason) from None
        except Exception as exc:
            self._mark_failed(number, trial_tags(s, number, dict(trial.params), reference),
                              f"building the trial's model: {type(exc).__name__}: {exc}", dict(trial.params), trial)
            raise
        tags = trial_tags(s, number, values, reference)
        same = next((t for t in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                     if t.params == trial.params and t.number != number), None)
        if same is not None:  # the same configuration with the same seed trains to the same numbers: reuse them
            return self._reuse(trial, same, tags, values)
        try:  # a failure before training is a FAIL with its reason too, in Optuna and MLflow
            macs = analytic_macs(model_cfg)
            trial.set_user_attr("macs", macs)
            trial.set_user_attr("config", model_cfg.to_dict())
            latency = latency_of(trial.study, model_cfg, train_cfg.device) if "latency" in s.objectives else None
            if latency is not None:
                trial.set_user_attr("latency_ms", latency)
            metric = reported_metric(train_cfg)
        except Exception as exc:
            self._mark_failed(number, tags, f"before training: {type(exc).__name__}: {exc}", values, trial)
            raise
        prunable = len(s.objectives) == 1 and s.pruner != "none"
        pruned: list[tuple[int, float]] = []

        def on_epoch_end(epoch: int, metrics: dict[str, float]) -> bool:
            if not prunable:
                return False
            try:
                trial.report(metrics[metric], epoch)
                should_prune = epoch < train_cfg.epochs and trial.should_prune()
            except Exception as exc:  # the storage's error may quote its URL: the run's records keep it masked
                raise StudyStorageError(mask_secrets(f"reporting epoch {epoch} to the study: {type(exc).__name__}: "
                                                     f"{exc}")) from None
            if should_prune:
                pruned.append((epoch, metrics[metric]))
                return True
            return False

        run_dir = self.output / folder_name(s.experiment) / folder_name(s.study_name) / f"trial-{number:04d}"
        try:
            result = train_and_evaluate(model_cfg, train_cfg, self.tracker, on_epoch_end, run_name=f"trial {number}",
                                        run_dir=run_dir, parent_run_id=s.parent_run_id, tags=tags,
                                        datasets=self.datasets,
                                        cost={"macs": float(macs), **({"latency_ms": latency} if latency else {})})
        except Exception as exc:
            self._mark_failed(number, tags, f"{type(exc).__name__}: {exc}", values, trial)
            raise
        for name in ("last.pth", "interrupted.pth"):  # a trial is never resumed: the study is the unit of resume
            (run_dir / name).unlink(missing_ok=True)
        trial.set_user_attr("mlflow_run_id", result.run_id)
        if result.status != "FINISHED":  # its training ran and failed by itself (e.g. a NaN loss)
            trial.set_user_attr("training_result", result.status)
            self._mark_failed(number, tags, result.reason or result.status, values, trial, run_id=result.run_id)
            raise TrialFailed(result.reason or result.status)
        trial.set_user_attr("top1", result.top1)
        trial.set_user_attr("best_top1", result.best_top1)
        trial.set_user_attr("epochs", len(result.history))
        objective_values = {"top1": result.top1, "macs": float(macs), "latency": latency}
        self.tracker.log_metrics(result.run_id, {"objective.macs_analytic": float(macs),
                                                 **({"objective.latency_ms": latency} if latency else {})}, step=0)
        if pruned:
            epoch, value = pruned[0]
            reason = f"pruned after epoch {epoch} of {train_cfg.epochs}: top-1 {value:.2f}"
            trial.set_user_attr("pruned_reason", reason)
            self.tracker.set_tags(result.run_id, {"optuna.state": "PRUNED", "optuna.pruned_reason": reason})
            raise optuna.TrialPruned(reason)
        self.tracker.set_tags(result.run_id, {"optuna.state": "COMPLETE"})
        out = [float(objective_values[o]) for o in s.objectives]
        return out[0] if len(out) == 1 else out

    def _reuse(self, trial: optuna.Trial, same: optuna.trial.FrozenTrial, tags: dict, values: dict):
        """A repeat of a COMPLETE trial (samplers re-propose configurations): its values, without training again
        (trials share the training seed, so the run would repeat itself); marked `duplicate_of` everywhere."""
        for key in ("top1", "best_top1", "epochs", "macs", "config", "latency_ms"):
            if key in same.user_attrs:
                trial.set_user_attr(key, same.user_attrs[key])
        trial.set_user_attr("duplicate_of", same.number)
        reason = f"duplicate of trial {same.number}: its values are reused (same configuration and seed)"
        run_id = self.tracker.start_run(tags["config"], parent_run_id=self.settings.parent_run_id,
                                        tags={**tags, "optuna.state": "COMPLETE", "optuna.duplicate_of": str(same.number),
                                              "status_reason": reason})
        self.tracker.log_params(run_id, {f"trial.{k}": v for k, v in values.items()})
        self.tracker.log_metrics(run_id, {"final_val_top1": same.values[0]}, step=0)
        self.tracker.end_run(run_id, "FINISHED")
        trial.set_user_attr("mlflow_run_id", run_id)
        return same.values[0] if len(same.values) == 1 else list(same.values)

    def _mark_failed(self, number: int, tags: dict, reason: str, values: dict, trial: optuna.Trial,
                     run_id: str | None = None) -> None:
        reason = mask_secrets(reason)
        record_fail_reason(trial.study._storage, trial._trial_id, reason)
        try:
            if run_id is None:
                run = find_trial_run(self.tracker, self.settings.study_name, number, self.settings.parent_run_id)
                run_id = run.info.run_id if run is not None else None
            if run_id is None:
                record_trial_without_training(self.tracker, self.settings.parent_run_id, tags, "FAIL", reason, values)
            else:
                self.tracker.set_tags(run_id, {"optuna.state": "FAIL"})
                if self.tracker.run_status(run_id) == "RUNNING":
                    self.tracker.end_run(run_id, "FAILED", reason)
        except Exception as exc:  # noqa: BLE001  (never hide the trial's own error)
            log.error("trial %d: could not mark its MLflow run failed: %s", number, exc)


def _suggest(trial: optuna.Trial):
    def choose(p, high):
        if p.choices is not None:
            return trial.suggest_categorical(p.name, list(p.choices))
        if p.kind == "int":
            return trial.suggest_int(p.name, int(p.low), int(high), step=int(p.step or 1), log=p.log)
        return trial.suggest_float(p.name, float(p.low), float(high), step=p.step, log=p.log)
    return choose


# ---------------------------------------------------------------------------------- workers
class _LocalCounter:
    """The trial counter of a call with one worker (no process to share it with)."""

    def __init__(self):
        self.value = 0

    def get_lock(self):
        import contextlib

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
    import torch

    from experiments.data import build_datasets
    from workbench.tracking import Tracker

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
        datasets = build_datasets(train.dataset, train.data_dir, train.img_size, train.train_size, train.val_size,
                                  seed=train.data_seed)
    tracker = Tracker(settings.tracking_uri, settings.experiment, artifact_root=settings.artifact_root)
    objective = TrialObjective(settings, space, base, train, datasets, tracker, Path(train.output))
    if not claim_trial(slots, settings.n_trials, settings.deadline):
        return
    timeout = None if settings.deadline is None else max(settings.deadline - time.time(), 0.001)
    study.optimize(objective, timeout=timeout, catch=(Exception,), gc_after_trial=False,
                   callbacks=[_NextTrial(settings, slots, time.time(), index)])


def _worker_process(settings: Settings, index: int, slots) -> None:  # pragma: no cover (runs in a child process)
    for sig in STOP_SIGNALS:  # as in the main process: the trial is closed with the reason, then the worker stops
        signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else _raise_stopped)
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


def fail_stale_trials(settings: Settings, study: optuna.Study, wait: bool) -> list[int]:
    """Fail the trials whose worker stopped beating (in Optuna and MLflow); numbers returned. After a worker of this
    call died, `wait` out the grace period first if one of its trials still runs (a worker on this machine is
    found dead at once by `fail_dead_trials`); otherwise only trials already silent that long (e.g. left by an
    earlier call on another machine that was killed) are failed."""
    running = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING]
    if not running:
        return []
    mine = settings.parent_run_id
    if wait and any(t.user_attrs.get("mlflow_parent_run_id") == mine for t in running):
        time.sleep(3 * settings.heartbeat + 1)
    stale = MarkStaleTrial(settings.tracking_uri, settings.experiment, settings.artifact_root)
    checked = optuna.load_study(study_name=settings.study_name,
                                storage=open_storage(settings.storage, settings.heartbeat, stale))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(checked)
    after = {t.number: t.state for t in checked.get_trials(deepcopy=False)}
    return [t.number for t in running if after.get(t.number) == optuna.trial.TrialState.FAIL]


# ---------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial's outcome is one line of ours
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    from experiments.data import DataError
    from workbench.tracking import TrackingError

    try:
        prepared = prepare(args)
    except (UsageError, SpaceError, DataError, TrackingError, ValueError) as exc:
        return fail(PROG, str(exc))
    return run_search(prepared, command_line(argv))


def run_search(prepared: Prepared, command: str) -> int:
    """The call, with its own signal handling from before its parent run opens until that run is closed: whatever
    ends it (success, an exception, Ctrl-C, SIGTERM, SIGHUP), the parent and every trial it started are closed with
    the reason. `command` is recorded with its credentials masked."""
    with stop_signals():
        return _run_search(prepared, mask_secrets(command))


def _run_search(prepared: Prepared, command: str) -> int:
    from experiments.search_report import finish_study
    from workbench.tracking import Tracker, flatten

    settings = prepared.settings
    study = tracker = parent = None
    started = time.time()
    try:
        study = open_study(prepared)
        settings.sampler_salt = len(study.trials)
        settings.deadline = None if settings.timeout is None else started + settings.timeout
        if settings.workers > 1 and "OMP_NUM_THREADS" not in os.environ:
            settings.threads = max(1, (os.cpu_count() or 1) // settings.workers)
        tracker = Tracker(settings.tracking_uri, settings.experiment, artifact_root=settings.artifact_root)
        closed = close_dead_calls(settings, tracker)
        before = sum(t.state != optuna.trial.TrialState.WAITING for t in study.get_trials(deepcopy=False))
        with signals_held():  # a signal now would leave a RUNNING parent whose id nobody knows
            parent = tracker.start_run(f"search {settings.study_name}", tags={
                "kind": "search", "command": command, "optuna.study": settings.study_name,
                "optuna.storage": mask_secrets(settings.storage), "objectives": " ".join(settings.objectives),
                "sampler": settings.sampler, "pruner": settings.pruner, "n_trials": str(settings.n_trials),
                "workers": str(settings.workers), "space": prepared.space.describe()[:5000],
                "trials_before": str(before), "host": HOST, "pid": str(os.getpid())})
            settings.parent_run_id = parent
        tracker.log_params(parent, {**flatten(settings.model, "model."), **flatten(settings.train, "train."),
                                    "search.space_source": settings.space_source})
        tracker.log_json(parent, settings.space, "space.json")
        _print_start(prepared, before, parent, closed)
        codes = run_workers(settings, prepared.datasets)
        dead = [(i, c) for i, c in enumerate(codes) if c not in (0, None)]
        fail_dead_trials(settings, study)  # a worker of this call that died: its trial at once
        fail_stale_trials(settings, study, wait=bool(dead))
        stopped = [c - 128 for _, c in dead if c - 128 in STOP_SIGNALS]  # a worker that was interrupted
        if stopped:
            raise KeyboardInterrupt if stopped[0] == signal.SIGINT else Stopped(stopped[0])
        study = optuna.load_study(study_name=settings.study_name, storage=open_storage(settings.storage, None))
        text = finish_study(study, settings, tracker, parent, started)
        print(text)
        return _finish(study, settings, tracker, parent, dead)
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP (Stopped), or a worker that was interrupted
        how, code = describe_stop(exc)
        reason = f"interrupted ({how}); run the same command to continue study {settings.study_name!r}"
        with signals_held():
            if study is not None:
                fail_dead_trials(settings, study, leaving=f"the call was {reason}")
            _close(tracker, parent, "KILLED", reason)
        print(f"{PROG}: {reason}", file=sys.stderr)
        return code
    except Exception as exc:  # a failure nobody foresaw: close what is open, keep the traceback, one line here
        message = mask_secrets(f"{type(exc).__name__}: {exc}")
        with signals_held():
            if study is not None:
                fail_dead_trials(settings, study, leaving=f"the call failed: {message}")
            _close(tracker, parent, "FAILED", message)
            where = _error_log(Path(prepared.train.output), mask_secrets(traceback.format_exc()))
        first = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
        print(f"{PROG}: {first} ({where})", file=sys.stderr)
        return EXIT_FAILED


def _print_start(prepared: Prepared, before: int, parent: str, closed: list[str]) -> None:
    settings = prepared.settings
    count = prepared.combinations.get("combinations")
    print(f"study {settings.study_name!r} in {mask_secrets(settings.storage)}: {before} trials so far"
          f"{' (new)' if not prepared.existing else ''}; this call adds {settings.n_trials} with {settings.workers} "
          f"worker(s); space: {prepared.space.describe()}"
          f"{f' ({count} combinations)' if count else ''}", file=sys.stderr)
    if not prepared.existing and prepared.reference is None:
        print(f"note: the base configuration is not enqueued: {prepared.reference_note}", file=sys.stderr)
    if closed:
        print(f"note: {len(closed)} MLflow run(s) of earlier calls whose process had died are now KILLED: "
              f"{', '.join(closed)}", file=sys.stderr)
    print(f"MLflow: {mask_secrets(settings.tracking_uri)} experiment {settings.experiment!r}, parent run {parent}",
          file=sys.stderr)


def _finish(study: optuna.Study, settings: Settings, tracker, parent: str, dead: list[tuple[int, int]]) -> int:
    """Close the parent FINISHED; the exit code says whether a worker died or every trial of the call failed."""
    mine = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("mlflow_parent_run_id") == parent]
    if dead:
        message = "; ".join(f"worker {i} died (exit code {c})" for i, c in dead)
        lost = [t.number for t in mine if t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get("lost_worker")]
        if lost:
            message += f"; its trial(s) {', '.join(map(str, lost))} marked FAIL (worker lost)"
        with signals_held():
            tracker.set_tags(parent, {"dead_workers": message})
            tracker.end_run(parent, "FINISHED")
        print(f"{PROG}: {message}; the other workers finished the study's trials", file=sys.stderr)
        return EXIT_FAILED
    with signals_held():
        tracker.end_run(parent, "FINISHED")
    if mine and all(t.state == optuna.trial.TrialState.FAIL for t in mine):
        print(f"{PROG}: every trial of this call failed (see fail_reason above)", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _close(tracker, parent: str | None, status: str, reason: str) -> None:
    """Close the parent run with its reason, unless it is closed already (a signal that came once the call had
    finished); never raises (it runs while something else already went wrong). The status goes first when the
    reason cannot be written (e.g. a full disk)."""
    if tracker is None or parent is None:
        return
    try:
        if tracker.run_status(parent) != "RUNNING":
            return
    except Exception:  # noqa: BLE001  (unreadable: close it anyway)
        pass
    try:
        tracker.end_run(parent, status, mask_secrets(reason))
        return
    except Exception:  # noqa: BLE001
        pass
    try:
        tracker.client.set_terminated(parent, status=status)
    except Exception as exc:  # noqa: BLE001
        print(f"{PROG}: could not mark the MLflow parent run {parent} {status} ({type(exc).__name__}: {exc})",
              file=sys.stderr)


def _error_log(folder: Path, text: str) -> str:
    """Write the traceback beside the study's outputs; where it went, in words (never raises)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "search-error.log").write_text(text)
        return f"traceback in {folder / 'search-error.log'}"
    except OSError as exc:
        return f"the traceback could not be written: {exc.strerror}"


if __name__ == "__main__":
    sys.exit(main())
