"""The study's settings, its storage and its records: Optuna's study and each trial's MLflow run, kept consistent
whatever ends a trial (a killed worker, a stale heartbeat, an earlier call that died), with credentials masked.

Studies live in an Optuna RDB storage (SQLite on one machine, PostgreSQL across machines) with Optuna's heartbeat.
A trial that fails records its reason where Optuna's tools (the `fail_reason` system attribute) and the report
(the user attribute) look, and in its MLflow child run; a call killed outright is repaired by the next call on
the same machine (its trials FAIL at once, its parent run is KILLED, a lost reference is enqueued again).
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from sepvit.config import SepViTConfig
from workbench.cli import UsageError
from workbench.tracking import Tracker, mask_secrets

from experiments.data import final_val_images
from experiments.runner.calls import slug
from experiments.search_space import Space
from experiments.train_config import TrainConfig

# objective -> (direction, what it measures)
OBJECTIVES = {
    "top1": ("maximize", "validation top-1 (%) of the final weights (on the final validation images where scored)"),
    "macs": ("minimize", "MACs of one image, analytic count in fvcore's convention (multiply-add = 1)"),
    "latency": ("minimize", "batch-1 forward latency (ms, median), analysis.timing, once per architecture"),
}
METRIC_NAMES = {"top1": "top1", "macs": "macs", "latency": "latency_ms"}  # Optuna's names (optuna-dashboard)
# Settings that may differ between calls of one study (they do not change what a trial measures).
MAY_CHANGE = ("workers", "device", "output", "data_dir")
# `scheme://user:password@`: the password is what SQLAlchemy would read (up to the token's last @)
HOST = socket.gethostname()
STALE_REASON = "its worker stopped sending heartbeats (killed or crashed): the trial is FAIL"
# A confirmation recorded as running by a process that cannot be checked (another machine) counts as in progress
# for this long: the documented one (3 seeds, 6 runs) takes minutes and one of tens of seeds at the default budget
# hours, so a day covers them; an older record is taken for a machine that died (--force-confirm need not wait).
CONFIRMATION_RECENT_S = 24 * 3600

log = logging.getLogger("sepvit.search")


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
    command: str = ""  # what the parent run's `command` tag keeps (credentials masked when it is recorded)
    confirm: int = 0  # seeds of the best trial's confirmation after the trials (0: none; experiments.search_confirm)
    parallel: int | str = "auto"  # the confirmation's runs trained at once (the runner's --parallel)
    force_confirm: bool = False  # confirm although another process's confirmation is recorded as running


def folder_name(name: str) -> str:
    """A user-supplied name as one folder under --output: the runner's slug, never '.' or '..'."""
    name = slug(name)
    return name if name.strip(".") else "run"


# ---------------------------------------------------------------------------------- storage
def _driver_url(url: str) -> str:
    """postgresql:// goes through psycopg 3 when psycopg2 (SQLAlchemy's default driver) is not installed."""
    if url.startswith(("postgresql://", "postgres://")):
        if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg") is not None:
            return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def check_storage(url: str) -> None:
    """Refuse a storage that cannot hold the study, before any trial: a wrong scheme, an in-memory or unwritable
    SQLite file, a server that does not answer, a missing driver."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    base_scheme = scheme.split("+")[0]
    if base_scheme not in ("sqlite", "postgresql", "postgres", "mysql"):
        raise UsageError(f"--storage {mask_secrets(url)}: use sqlite:///ABS/PATH.db (one machine) or "
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
        raise UsageError(f"--storage {mask_secrets(url)}: the database driver is not installed ({exc.name}); "
                         "pip install 'psycopg[binary]' for PostgreSQL") from None
    except Exception as exc:  # noqa: BLE001  (SQLAlchemy raises OperationalError, ArgumentError, ...)
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise UsageError(f"cannot reach the study storage {mask_secrets(url)} ({reason[0] if reason else type(exc).__name__})"
                         "; start the database server or fix --storage (drop it for a local SQLite file)") from None


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


def study_id(storage, name: str) -> int | None:
    """The id of study `name` in `storage`, None if it has none."""
    try:
        return storage.get_study_id_from_name(name)
    except KeyError:
        return None


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
    if "sepvit.paths" not in study.user_attrs:  # also for a study made before paths were kept
        study.set_user_attr("sepvit.paths", study_paths(settings.train))
    if "sepvit.data" not in study.user_attrs:  # what the report's chance level needs: the data actually used
        info = prepared.datasets[2]
        # val_size: the images a trial's top-1 is measured on (its final scoring's, else the per-epoch set's)
        study.set_user_attr("sepvit.data", {"name": info.name, "num_classes": info.num_classes,
                                            "val_size": final_val_images(prepared.train) or info.val_size})
    fail_dead_trials(settings, study)
    fail_stale_trials(settings, study, wait=False)
    enqueue_reference(study, prepared.reference)
    return study


def study_paths(train: dict[str, Any]) -> dict[str, str | None]:
    """Where the study's data and outputs are, absolute. Kept apart from `sepvit.settings`, which every later call
    must match, because a later call may move them (MAY_CHANGE); the report reads them so that a command it prints
    from the study alone (no call's settings at hand) trains on the same data into the same folder."""
    data_dir = train.get("data_dir")
    return {"output": str(Path(train["output"]).expanduser().resolve()),
            "data_dir": str(Path(data_dir).expanduser().resolve()) if data_dir else None}


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


def confirming_elsewhere(record: dict[str, Any] | None) -> bool:
    """A confirmation record in state `running` whose process may still be training it: alive on this machine, or
    on another machine (where nobody can look) recorded less than CONFIRMATION_RECENT_S ago. This process's own
    record is not (it is not confirming now), nor one whose process is gone."""
    if not isinstance(record, dict) or record.get("status") != "running":
        return False
    worker = record.get("worker") or {}
    if worker.get("host") == HOST:
        pid = worker.get("pid")
        return pid is not None and int(pid) != os.getpid() and _alive(int(pid)) and _recent(record)
    return _recent(record)


def _recent(record: dict[str, Any]) -> bool:
    return time.time() - float(record.get("started") or 0) < CONFIRMATION_RECENT_S


def close_dead_calls(settings: Settings, tracker) -> list[str]:
    """Close, KILLED with the reason, the MLflow parent runs of this study that an earlier call on this machine
    left RUNNING when its process was killed, and the runs of a confirmation call it left so (the runner's parent
    and children: a killed --confirm); ids returned. A call of another machine is left alone. A confirmation call
    that is resumed later reopens its runs (the runner's resume), the reason kept as `previous_status_reason`."""
    why = "died without closing this run (killed, e.g. SIGKILL or out of memory); closed by a later call of the study"
    closed = []
    for run in _dead_parents(tracker, f"tags.kind = 'search' and tags.`optuna.study` = '{settings.study_name}'"):
        tracker.end_run(run.info.run_id, "KILLED", f"the call's process (pid {run.data.tags['pid']} on {HOST}) {why}")
        closed.append(run.info.run_id)
    query = f"tags.`search.confirmation` = 'true' and tags.`search.study` = '{settings.study_name}'"
    for run in _dead_parents(tracker, query):
        reason = (f"the confirmation's process (pid {run.data.tags['pid']} on {HOST}) {why}; the search command with "
                  "--n-trials 0 and the same --confirm resumes its call")
        children = tracker.client.search_runs([tracker.experiment_id], max_results=1000, filter_string=(
            f"tags.`mlflow.parentRunId` = '{run.info.run_id}' and attributes.status = 'RUNNING'"))
        for child in [*children, run]:  # children first: a parent is never closed over a running child
            tracker.end_run(child.info.run_id, "KILLED", reason)
            closed.append(child.info.run_id)
    return closed


def _dead_parents(tracker, query: str) -> list:
    """The RUNNING runs matching `query` whose `host`/`pid` tags name a process of this machine that is gone."""
    runs = tracker.client.search_runs([tracker.experiment_id], filter_string=f"{query} and attributes.status = "
                                      "'RUNNING'", max_results=1000)
    return [r for r in runs if "pid" in r.data.tags
            and dead_here({"host": r.data.tags.get("host"), "pid": r.data.tags["pid"]})]


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


