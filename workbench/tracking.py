"""MLflow bookkeeping shared by the runner, the search and the benchmarks: one `Tracker`, explicit run ids, batched metrics.

Everything goes through `MlflowClient` with explicit run ids rather than the fluent `mlflow.start_run` stack,
so a run can be reopened after a crash (`--resume`), children can be created under a parent from any process,
and nothing depends on global "active run" state. A child run carries the `mlflow.parentRunId` tag, which is
what `mlflow.start_run(nested=True, parent_run_id=...)` writes, so the UI nests it the same way.

The default store is a SQLite file inside the output folder (`sqlite:///<abs output>/mlflow.db`), set
explicitly: MLflow's own default would be `./mlruns`-style storage relative to wherever the user stands.

What MLflow's UI and users expect, written here because the client API does not add it by itself:
- experiments tagged `mlflow.experimentKind` = "custom_model_development" (else MLflow 3 opens them in its GenAI
  view of traces and evaluations);
- every run with the context tags `mlflow.start_run` would write (`mlflow.user`, `mlflow.source.name`,
  `mlflow.source.type`) and `mlflow.source.git.commit` of this code (the Source, User and Version columns);
- datasets as run inputs (`log_datasets`: the Datasets column), the best model as a logged model
  (`log_pytorch_model`: the Models column, `mlflow.pytorch.load_model`), a call's summary on its parent run
  (`log_call_summary`).
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import re
import signal
import sqlite3
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterable, Mapping

from workbench.provenance import run_context_tags

MAX_PARAMS_PER_BATCH = 100  # MLflow's log_batch limit
MAX_PARAM_LENGTH = 6000
# MLflow 3's value for classic (non-GenAI) model development; its UI picks the experiment's view from this tag
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


# `scheme://user:password@`: the password is what SQLAlchemy would read (up to the token's last @); the same
# pattern as experiments/search.py's
URL_CREDENTIALS = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):\S*@")


def mask_secrets(text: str) -> str:
    """`text` with the password of every URL in it replaced by *** (for messages, logs and anything MLflow keeps)."""
    return URL_CREDENTIALS.sub(r"\1:***@", text)


class TrackingError(ValueError):
    """The tracking URI cannot be used; the message says what to do."""


def default_tracking_uri(output: str | Path) -> str:
    return f"sqlite:///{Path(output).resolve() / 'mlflow.db'}"


KNOWN_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///...` URI (None for other schemes)."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def sqlite_store_problem(path: str | Path) -> str | None:
    """Why the SQLite file `path` is not an MLflow store that can be read (missing, not a database, damaged, or
    a database without MLflow's tables), or None. Reads only (a read-only connection): never creates the file."""
    path = Path(path)
    if not path.is_file():
        return f"there is no MLflow store at {path}" + (" (it is a folder)" if path.is_dir() else "")
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as connection:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:
        return f"{path} cannot be read as an SQLite database ({exc})"
    missing = {"experiments", "runs", "alembic_version"} - tables
    if missing:
        return f"{path} is not an MLflow store (no {', '.join(sorted(missing))} table)"
    return None


def check_tracking_uri(uri: str, timeout: float = 3.0) -> None:
    """Fail fast, before any run is opened, when the tracking store cannot hold the runs: an unknown scheme, an
    in-memory or unwritable SQLite file, a file store, or a server that does not answer."""
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    if uri.startswith(("file:", "./", "/")) or not scheme:
        raise TrackingError(f"tracking URI {mask_secrets(uri)!r} is a file store (deprecated in MLflow 3): use "
                            "sqlite:///ABS/PATH/mlflow.db or http://host:port")
    if scheme.split("+")[0] not in KNOWN_SCHEMES:
        raise TrackingError(f"tracking URI {mask_secrets(uri)!r} has an unknown scheme {scheme!r}: use "
                            "sqlite:///ABS/PATH/mlflow.db, http(s)://host:port or postgresql://...")
    if scheme in ("http", "https"):
        _check_server(uri, timeout)
    elif scheme == "sqlite":
        _check_sqlite(uri)


def _check_server(uri: str, timeout: float) -> None:
    import base64
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri.rstrip("/") + "/health")
    request = urllib.request.Request(urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port
                                                                                          else ""))))
    if parts.username is not None:  # urllib reads user:password@ as part of the host name; MLflow sends it as Basic
        token = base64.b64encode(f"{parts.username}:{parts.password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http(s) only)
            if response.status >= 400:
                raise OSError(f"HTTP {response.status}")
    except (OSError, urllib.error.URLError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(f"MLflow tracking server {mask_secrets(uri)} is unreachable ({mask_secrets(str(reason))}); "
                            "start it with `mlflow server --host 127.0.0.1 ...` or drop --tracking-uri to use a local "
                            "SQLite file") from None


def _check_sqlite(uri: str) -> None:
    path = sqlite_path(uri)
    if path is None or str(path) in ("", ".", ":memory:") or uri.rstrip("/") in ("sqlite:", "sqlite:/"):
        raise TrackingError(f"tracking URI {uri!r} is an in-memory SQLite database: everything would be lost when "
                            "the process ends; give a file, sqlite:///ABS/PATH/mlflow.db")
    problem = unwritable_folder(path.parent)
    if problem:
        raise TrackingError(f"the MLflow database {path} cannot be written ({problem}): choose another --output "
                            "or --tracking-uri")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise TrackingError(f"the MLflow database {path} is not writable by this user: choose another --output "
                            "or --tracking-uri")


def unwritable_folder(folder: str | Path) -> str | None:
    """Why files cannot be made in `folder` (or the folders that would be made to hold it), or None if they can.

    Tried for real, without leaving anything behind: a probe folder and file are made in the nearest folder that
    exists, then removed. `os.access` alone says yes to root everywhere, also under /sys or /proc, where nothing
    can be created."""
    existing = Path(folder).expanduser().absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        probe = tempfile.mkdtemp(prefix=".write-probe-", dir=existing)
        try:
            handle, name = tempfile.mkstemp(dir=probe)
            os.close(handle)
            os.unlink(name)
        finally:
            os.rmdir(probe)
    except OSError as exc:
        return f"nothing can be written under {existing}: {exc.strerror or exc}"
    return None


MAX_EXPERIMENT_NAME = 200  # it names a folder under --output (a file name holds 255 bytes), as in the search


def check_experiment_name(name: str) -> None:
    if not name or not name.strip():
        raise TrackingError("--experiment must name an MLflow experiment, got an empty name")
    if len(name) > MAX_EXPERIMENT_NAME:
        raise TrackingError(f"--experiment is {len(name)} characters long; give at most {MAX_EXPERIMENT_NAME} (it "
                            "names a folder under --output)")


# What stops a process from outside: Ctrl-C, `kill`/timeout/Slurm/systemd/Docker, a closed terminal.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def signals_held():
    """Hold the stop signals until the block ends, when a held one acts: a run is opened (and its id recorded) or
    closed whole, never left RUNNING with an id nobody knows. Per thread; nothing is held on Windows."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether `exc`, or an exception it was raised from or during, says the disk (or quota) is full: an OSError
    with ENOSPC/EDQUOT, or SQLite's and MLflow's wording of it."""
    import errno

    return any((isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT))
               or "database or disk is full" in str(e) or "No space left on device" in str(e)
               for e in _exception_chain(exc, through_context=True))


def _exception_chain(exc: BaseException | None, through_context: bool):
    """`exc`, then the exception it was raised from (and, with `through_context`, the one it was raised while
    handling), and so on, each once."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or (exc.__context__ if through_context else None)


def is_database_locked(exc: BaseException | None) -> bool:
    """Whether `exc`, or an exception it was raised from, is SQLite's "database is locked": another process held
    the store past MLflow's 20 s busy timeout, or SQLite refused a write at once to break a lock cycle."""
    # not through __context__: another error raised while a lock was being handled is not a lock
    return any("database is locked" in str(e) for e in _exception_chain(exc, through_context=False))


# Seconds to wait before each new try of a store call that SQLite refused as locked; then the error stands.
LOCKED_RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 4.0)


class StoreClient:
    """An `MlflowClient` whose every call (1) holds the stop signals when `hold_signals` (a SQLite store), so a
    Ctrl-C never lands inside one of SQLite's transactions, and (2) is tried again, after `LOCKED_RETRY_DELAYS`,
    when SQLite says "database is locked". Parallel workers that a stop reaches at the same moment all close their
    runs at once; one of them used to lose that race and leave MLflow's traceback on the terminal. A refused call
    wrote nothing (SQLite rolls the transaction back), so trying it again is safe. A tracking server's calls do not
    hold the signals: its client retries an unreachable server for minutes, and Ctrl-C must stop that."""

    def __init__(self, client, delays: tuple[float, ...] = LOCKED_RETRY_DELAYS, hold_signals: bool = True):
        self._client, self._delays = client, delays
        self._held = signals_held if hold_signals else contextlib.nullcontext

    def __getattr__(self, name: str):
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        def call(*args, **kwargs):
            for delay in (*self._delays, None):
                try:
                    with self._held():
                        return attribute(*args, **kwargs)
                except Exception as exc:  # noqa: BLE001  (re-raised unless it is the lock)
                    if delay is None or not is_database_locked(exc):
                        raise
                time.sleep(delay)  # outside the held signals: a Ctrl-C acts here
        return call


class _DropLockedTraceback(logging.Filter):
    """MLflow logs the whole traceback of every SQLite error before raising it, its message included; `StoreClient`
    tries a locked call again, and one that never goes through raises to its caller (which closes runs without
    raising)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "database is locked" not in record.getMessage()


logging.getLogger("mlflow.store.db.utils").addFilter(_DropLockedTraceback())


@contextlib.contextmanager
def store_lock(uri: str):
    """An exclusive lock beside a SQLite store: MLflow's schema set-up of a new database is not safe when several
    processes create it at once, and neither is creating the same experiment. No-op for other stores."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def create_sqlite_store(path: Path, artifact_root: str | Path | None = None) -> None:
    """A new SQLite MLflow store at `path`, created whole or not at all: MLflow's tables are made and migrated in
    a temporary file beside it, which is then renamed into place (a process stopped or killed mid-migration used to
    leave a half-migrated store that every later call refused: "duplicate column name: step"). Call it under
    `store_lock`; temporary files of earlier, killed creations are removed first."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    for stale in path.parent.glob(f".{path.name}.new-*"):
        stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.new-{os.getpid()}")
    uri = f"sqlite:///{tmp}"
    root = Path(artifact_root if artifact_root is not None else path.parent / "mlartifacts").resolve().as_uri()
    try:
        SqlAlchemyStore(uri, root)  # creates, migrates, and adds the Default experiment
        engine = getattr(SqlAlchemyStore, "_engine_map", {}).pop(uri, None)
        if engine is not None:
            engine.dispose()  # no connection left open on the file about to move
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{"a": {"b": 1}} -> {"prefix.a.b": "1"}; lists become JSON so that params read back unambiguously."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(list(value))
        else:
            out[name] = str(value)
    return out


def summary_metrics(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """A call's summary as metrics named `<config>/<what>`, one group per configuration.

    rows: one mapping per configuration: `config` (its label), `top1_mean` and `top1_ci95` (half-width of its 95 %
    CI, percentage points), and for a configuration compared with the reference `diff`, `welch_low`, `welch_high`
    (its top-1 minus the reference's, and the Welch 95 % CI of that difference), as in `experiments.report`'s
    summary and comparison tables merged on `config`, and optionally `paired_low`/`paired_high` (the paired 95 % CI
    over shared seeds). Gives top1_mean, top1_ci_low, top1_ci_high, delta_top1, delta_top1_low, delta_top1_high,
    delta_top1_paired_low, delta_top1_paired_high; a value that is missing or NaN (one seed: no CI) is left out, not logged
    as NaN.
    """
    metrics: dict[str, float] = {}
    owners: dict[str, str] = {}
    for row in rows:
        label = str(row["config"])
        key = _metric_key(label)
        if owners.setdefault(key, label) != label:
            raise ValueError(f"configurations {owners[key]!r} and {label!r} give the same metric name {key!r}: "
                             "rename one")
        mean, half = _number(row.get("top1_mean")), _number(row.get("top1_ci95"))
        values = {"top1_mean": mean, "top1_ci_low": mean - half, "top1_ci_high": mean + half,
                  "delta_top1": _number(row.get("diff")), "delta_top1_low": _number(row.get("welch_low")),
                  "delta_top1_high": _number(row.get("welch_high")),
                  "delta_top1_paired_low": _number(row.get("paired_low")),
                  "delta_top1_paired_high": _number(row.get("paired_high"))}
        metrics.update({f"{key}/{name}": value for name, value in values.items() if not math.isnan(value)})
    return metrics


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _metric_key(label: str) -> str:
    """A configuration label as one segment of an MLflow metric name (letters, digits, _ - . and spaces)."""
    return re.sub(r"[^\w.\- ]", "_", label).strip(" .") or "config"


class Tracker:
    """An MLflow experiment; methods take the run id they act on. Every text it stores (tags, the status reason,
    params, text artifacts) has the passwords of URLs masked (`mask_secrets`): anyone with the UI reads them."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: str | Path | None = None):
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.open_runs: list[str] = []
        if mask_secrets(tracking_uri) != tracking_uri:  # MLflow prints "View run at <URL>", password included
            os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        db = sqlite_path(tracking_uri)
        if artifact_root is None and db is not None:
            artifact_root = db.parent / "mlartifacts"
        # Keep artifacts beside a local database, not in ./mlruns of the current folder.
        location = Path(artifact_root).resolve().as_uri() if artifact_root is not None else None
        with store_lock(tracking_uri):
            if db is not None and not (db.is_file() and db.stat().st_size > 0):
                create_sqlite_store(db, artifact_root)
            self.client = StoreClient(MlflowClient(tracking_uri=tracking_uri), hold_signals=db is not None)
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=location,
                                                                   tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
            else:
                self.experiment_id = found.experiment_id
                if EXPERIMENT_KIND_TAG not in found.tags:  # made before the tag was set; a user's own kind stays
                    self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
                if db is not None and location and found.artifact_location.endswith("/mlartifacts") \
                        and found.artifact_location != location:
                    _relocate_artifacts(db, found.artifact_location, location)

    # ------------------------------------------------------------------ runs
    # `open_runs`: the runs this Tracker started or reopened and has not ended, oldest first; whoever owns the
    # process's exit closes them (`close_open_runs`), so none is left RUNNING, whatever stopped the process.
    def start_run(self, name: str, parent_run_id: str | None = None, tags: Mapping[str, str] | None = None) -> str:
        all_tags = {**run_context_tags(), "mlflow.runName": name, **(tags or {})}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        with signals_held():  # the run exists and is in open_runs, or neither
            run = self.client.create_run(self.experiment_id, run_name=name,
                                         tags={k: mask_secrets(str(v)) for k, v in all_tags.items()})
            self.open_runs.append(run.info.run_id)
        return run.info.run_id

    def reopen_run(self, run_id: str) -> None:
        """Mark a crashed or killed run as running again (used by --resume)."""
        with signals_held():
            self.client.update_run(run_id, status="RUNNING")
            if run_id not in self.open_runs:
                self.open_runs.append(run_id)
        before = self.client.get_run(run_id).data.tags.get("status_reason")
        self.client.set_tag(run_id, "resumed", "true")
        if before:  # the reason belonged to the end that is now undone; kept under another name
            self.client.set_tag(run_id, "previous_status_reason", before)
            self.client.delete_tag(run_id, "status_reason")

    def end_run(self, run_id: str, status: str = "FINISHED", reason: str | None = None) -> None:
        """Close the run; its status is written first (the smallest write: it may be the only one a full disk
        takes), then the reason (tag `status_reason`)."""
        with signals_held():
            self.client.set_terminated(run_id, status=status)
            if run_id in self.open_runs:
                self.open_runs.remove(run_id)
            if reason:
                self.client.set_tag(run_id, "status_reason", mask_secrets(reason)[:5000])

    def close_run(self, run_id: str, status: str, reason: str | None = None) -> bool:
        """`end_run` for the paths where something already went wrong: never raises; the status alone is kept if the
        reason cannot be written. Returns whether the status was written."""
        try:
            self.end_run(run_id, status, reason)
            return True
        except Exception:  # noqa: BLE001  (a full disk, a lost server: the status may still have been written)
            pass
        if run_id in self.open_runs:
            self.open_runs.remove(run_id)
        try:
            return self.client.get_run(run_id).info.status == status
        except Exception:  # noqa: BLE001
            return False

    def close_open_runs(self, status: str, reason: str | None = None) -> list[str]:
        """Close every run still open here, newest first (children before their parent); never raises. Returns
        the ids whose status could not be written."""
        return [run_id for run_id in reversed(list(self.open_runs)) if not self.close_run(run_id, status, reason)]

    def is_open(self, run_id: str | None) -> bool:
        return run_id in self.open_runs

    def run_status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

    # ------------------------------------------------------------------ data
    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, mask_secrets(str(v))[:MAX_PARAM_LENGTH]) for k, v in params.items()]
        for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=items[start:start + MAX_PARAMS_PER_BATCH], synchronous=True)

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int) -> None:
        """All metrics of one step in a single request."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(step)) for k, v in metrics.items() if v is not None]
        if items:
            self.client.log_batch(run_id, metrics=items, synchronous=True)

    def logged_steps(self, run_id: str, key: str) -> set[int]:
        return {m.step for m in self.client.get_metric_history(run_id, key)}

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, mask_secrets(str(v))) for k, v in tags.items()]
        if items:
            self.client.log_batch(run_id, tags=items, synchronous=True)

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, mask_secrets(text), artifact_file)

    def log_json(self, run_id: str, data: Any, artifact_file: str) -> None:
        self.log_text(run_id, json.dumps(data, indent=2, sort_keys=True), artifact_file)

    def log_call_summary(self, run_id: str, rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
        """A call's per-configuration summary (see `summary_metrics` for `rows`) as metrics of its parent run, so
        the runs table shows the call's result on the parent's row; returns what was logged."""
        metrics = summary_metrics(rows)
        self.log_metrics(run_id, metrics, step=0)
        return metrics

    def log_datasets(self, run_id: str, datasets: Iterable[Mapping[str, Any]]) -> None:
        """Datasets as run inputs (what `mlflow.log_input` records), described, never copied.

        Each mapping: `name`, `size` (examples), `context` ("training", "validation", ...), `metadata` (a JSON-like
        dict saying what the data are: it is the dataset's source, and its digest is MLflow's hash of name, source
        and schema) and optionally `shape` (one example's tensor shape, for the schema).
        """
        import numpy as np
        from mlflow.data.code_dataset_source import CodeDatasetSource
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import Dataset as DatasetEntity, DatasetInput, InputTag
        from mlflow.types import Schema, TensorSpec
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        inputs = []
        for data in datasets:
            shape = data.get("shape")
            schema = Schema([TensorSpec(np.dtype(np.float32), (-1, *shape), "image"),
                             TensorSpec(np.dtype(np.int64), (-1,), "label")]) if shape else None
            source = CodeDatasetSource({**data["metadata"], "size": int(data["size"])})
            described = MetaDataset(source, name=data["name"], schema=schema).to_dict()
            entity = DatasetEntity(described["name"], described["digest"], described["source_type"],
                                   described["source"], schema=described.get("schema"),
                                   profile=json.dumps({"num_rows": int(data["size"])}))
            inputs.append(DatasetInput(entity, tags=[InputTag(MLFLOW_DATASET_CONTEXT, data["context"])]))
        self.client.log_inputs(run_id, datasets=inputs)

    def log_pytorch_model(self, run_id: str, model, input_example, requirements: list[str],
                          name: str = "model") -> str:
        """`model` (eval mode) as an MLflow logged model of `run_id`, with the signature of `input_example` (a
        tensor batch) and that example; returns its `models:/` URI, which `mlflow.pytorch.load_model` opens.

        Saved as a pickle, which `mlflow.pytorch.load_model` unpickles: only load models from a store you trust
        (the run's raw checkpoint, loaded with `weights_only=True`, is the safe path). MLflow's other format,
        `pt2` (torch.export), took 6 s per model here against 1.5 s, and fails on data-dependent branches.
        `requirements` (see `workbench.provenance.pip_requirements`) spares MLflow inferring them.
        """
        import mlflow
        import torch
        from mlflow.models import infer_signature

        with torch.no_grad():
            output = model(input_example)
        signature = infer_signature(input_example.numpy(), output.numpy())
        # the run's own experiment (log_model alone would use the process's active experiment)
        logged = self.client.create_logged_model(self.experiment_id, name=name, source_run_id=run_id)
        # log_model writes through the process-wide tracking URI: point it at this store, then restore it (unset
        # stays unset, so MLflow's default keeps following the current folder)
        previous = mlflow.get_tracking_uri() if mlflow.tracking.is_tracking_uri_set() else None
        mlflow.set_tracking_uri(self.tracking_uri)
        try:
            with _without_pickle_warning():
                info = mlflow.pytorch.log_model(model, name=name, model_id=logged.model_id, run_id=run_id,
                                                signature=signature, input_example=input_example.numpy(),
                                                pip_requirements=requirements, serialization_format="pickle")
        finally:
            mlflow.set_tracking_uri(previous)
        return info.model_uri

    def log_files(self, run_id: str, files: Iterable[tuple[str, str]]) -> None:
        """(name, text) pairs as artifacts."""
        with tempfile.TemporaryDirectory() as tmp:
            for name, text in files:
                path = Path(tmp) / name
                path.write_text(mask_secrets(text))
                self.log_artifact(run_id, path)


class _DropPickleWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Pickle or CloudPickle" not in record.getMessage()


@contextlib.contextmanager
def _without_pickle_warning():
    """Silence MLflow's per-model warning that pickles run code when loaded: `log_pytorch_model` documents it once,
    and repeated for every run of a call it would bury the runner's own messages."""
    logger, drop = logging.getLogger("mlflow.pytorch"), _DropPickleWarning()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _relocate_artifacts(db: Path, old: str, new: str) -> None:
    """The output folder was moved or copied: point this database's artifact locations at the new folder, so new
    artifacts land beside it (and a copy never writes into the original)."""
    with contextlib.closing(sqlite3.connect(db)) as connection, connection:
        connection.execute("UPDATE experiments SET artifact_location = ? WHERE artifact_location = ?", (new, old))
        connection.execute("UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) "
                           "WHERE substr(artifact_uri, 1, ?) = ?", (new, len(old) + 1, len(old), old))
    print(f"tracking: output folder moved; artifact locations now under {new}", file=sys.stderr)
