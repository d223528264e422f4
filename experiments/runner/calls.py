"""A call of the runner is the unit of resume: its plan, its folder, and the state of each planned run.

    <output>/<experiment>/<call id>/        call id = UTC time + a random suffix: unique even within a second
        call.json                           the plan, written before any training (below)
        <run>/last.pth, best.pth            checkpoints (see experiments.runner.run)
        <run>/result.json                   written when the run ends: status, reason, history, best, cost, ids
        <run>/mlflow_run.json               the run's MLflow run id, written when that run is opened (a resume
                                            reopens it rather than opening a second run of the same name)

`call.json` holds the command, the MLflow experiment and parent run id, the tracking URI (null = the default
SQLite store of the output folder, so a moved or copied output folder still resumes), and every planned run:
label, seed, model and training configuration, and its folder relative to the call folder; after `--resume CALL
--seeds N` added seeds, `seed_counts`: the seeds per configuration of each report made with every run finished
(e.g. [3, 6]: reported at 3 seeds, then extended and reported at 6); for a search's confirmation,
`confirmation`: the study and trial it confirms (its seeds are the search's to add: `search.py --confirm N`).
`ablate.py --resume CALL` re-reads the plan, skips FINISHED runs, resumes runs that have a `last.pth` and starts
the others, then writes the comparison.
"""
from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sepvit.config import SepViTConfig
from workbench.tracking import default_tracking_uri, sqlite_path, sqlite_store_problem

from experiments.train_config import TrainConfig

CALL_FILE, RESULT_FILE = "call.json", "result.json"
RUN_RECORD = "mlflow_run.json"  # {"run_id"}: written the moment a run's MLflow record is opened
RUN_ID = re.compile(r"^[0-9a-f]{32}$")


class CallError(ValueError):
    """A call folder or resume target that cannot be used; the message is one line saying what to do."""


def slug(text: str) -> str:
    """`text` as one file name: letters, digits, `_.-` kept, runs of anything else made one '-'; never '', '.' or
    '..' (names of this folder and its parent: a folder named so would land outside where it was meant to)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")
    return name if name.strip(".") else "run"


def write_json(path: Path, data: Any) -> None:
    """Atomically: a reader (or a crash) never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except BaseException:  # a full disk or a stop mid-write: no half file left behind
        tmp.unlink(missing_ok=True)
        raise


TEMPORARY = re.compile(r"^\..+\.tmp\d+$")  # what write_json and checkpoint.save_checkpoint write before renaming


def remove_temporary_files(folder: Path) -> list[Path]:
    """Remove the temporary files a write cut short left in `folder` and below (a process killed outright between
    writing and renaming). Only safe while no other process writes there: the caller holds the call's lock."""
    removed = []
    for path in folder.rglob(".*.tmp*"):
        if TEMPORARY.match(path.name) and path.is_file():
            try:
                path.unlink()
                removed.append(path)
            except OSError:
                pass
    return removed


@dataclass
class PlannedRun:
    """One training run of a plan: which configuration, which seed, how it is trained, where and under what name."""

    label: str  # the configuration's label (the report's rows)
    seed: int
    model: SepViTConfig
    train: TrainConfig
    folder: str  # relative to the call folder
    tags: dict[str, str] = field(default_factory=dict)
    run_name: str | None = None  # None: "<label> seed<seed>"

    @classmethod
    def of(cls, model: SepViTConfig, train: TrainConfig, name: str = "run", tags: dict[str, str] | None = None):
        """A run outside any call (a search trial, a test): labelled and named `name`, seeded by `train.seed`."""
        return cls(name, train.seed, model, train, slug(name), dict(tags or {}), run_name=name)

    @property
    def name(self) -> str:
        return self.run_name or f"{self.label} seed{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        data = {"label": self.label, "seed": self.seed, "model": self.model.to_dict(), "train": self.train.to_dict(),
                "folder": self.folder, "tags": self.tags}
        return data if self.run_name is None else {**data, "run_name": self.run_name}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PlannedRun":
        return cls(data["label"], int(data["seed"]), SepViTConfig.from_dict(data["model"]),
                   TrainConfig.from_dict(data["train"]), data["folder"], dict(data.get("tags", {})),
                   data.get("run_name"))


@dataclass
class Call:
    folder: Path
    command: str
    experiment: str
    runs: list[PlannedRun]
    reference: str | None = None  # the label of the reference configuration, if the call trains one
    tracking_uri: str | None = None  # None: the default store of the output folder
    parent_run_id: str | None = None
    name: str = ""
    calibrate: bool = False  # a --calibrate call: the report adds the calibration (experiments.calibration)
    # once `--resume --seeds N` extended the call (None: never): the seeds per configuration of each report made
    # with every run finished, i.e. each look at the data (more than one: the report says what that costs)
    seed_counts: list[int] | None = None
    # a search's confirmation ("study <name> trial <N>"; None: any other call): kept in the plan, not only on the
    # MLflow parent, so that a confirmation killed before its parent opened is still known as one
    confirmation: str | None = None

    @property
    def output(self) -> Path:
        """The output folder: <output>/<experiment>/<call id>."""
        return self.folder.parents[1]

    @property
    def next_seed(self) -> int:
        """The first seed after the plan's: where a confirmation at fresh seeds starts."""
        return max(r.seed for r in self.runs) + 1

    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or default_tracking_uri(self.output)

    def run_dir(self, run: PlannedRun) -> Path:
        return self.folder / run.folder

    def save(self) -> None:
        write_json(self.folder / CALL_FILE, {
            "command": self.command, "experiment": self.experiment, "reference": self.reference,
            "tracking_uri": self.tracking_uri, "parent_run_id": self.parent_run_id, "name": self.name,
            "calibrate": self.calibrate, "runs": [run.to_dict() for run in self.runs],
            **({"seed_counts": self.seed_counts} if self.seed_counts is not None else {}),
            **({"confirmation": self.confirmation} if self.confirmation is not None else {})})

    @classmethod
    def load(cls, folder: Path) -> "Call":
        path = folder / CALL_FILE
        try:
            data = json.loads(path.read_text())
            runs = [PlannedRun.from_dict(r) for r in data["runs"]]
        except FileNotFoundError:
            raise CallError(f"{folder} is not a call folder (no {CALL_FILE}): pass the folder of a runner call, a "
                            f"last.pth inside one, or the parent run id") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise CallError(f"{path} is damaged ({type(exc).__name__}: {exc}): it cannot be resumed") from None
        if folder.resolve().parent.name != slug(data["experiment"]):  # e.g. the copy logged as an MLflow artifact
            raise CallError(f"{folder} holds a copy of a call's plan, not the call (a call folder is "
                            f"<output>/{slug(data['experiment'])}/<call id>): pass the call folder")
        return cls(folder, data["command"], data["experiment"], runs, data.get("reference"), data.get("tracking_uri"),
                   data.get("parent_run_id"), data.get("name", ""), bool(data.get("calibrate", False)),
                   None if data.get("seed_counts") is None else [int(n) for n in data["seed_counts"]],
                   data.get("confirmation"))

    def result_of(self, run: PlannedRun) -> dict[str, Any] | None:
        """The run's result.json (None if it never ended)."""
        path = self.run_dir(run) / RESULT_FILE
        return json.loads(path.read_text()) if path.is_file() else None

    def recorded_run_id(self, run: PlannedRun) -> str | None:
        """The MLflow run opened for this planned run, if one was (also when it never reached a checkpoint)."""
        path = self.run_dir(run) / RUN_RECORD
        try:
            run_id = json.loads(path.read_text()).get("run_id")
        except (OSError, ValueError, AttributeError):
            return None
        return run_id if isinstance(run_id, str) and RUN_ID.match(run_id) else None

    def state_of(self, run: PlannedRun) -> str:
        """'finished', 'resumable' (a last.pth to continue from) or 'new'."""
        result = self.result_of(run)
        if result is not None and result["status"] == "FINISHED":
            return "finished"
        return "resumable" if (self.run_dir(run) / "last.pth").is_file() else "new"

    def needs_training(self, run: PlannedRun) -> bool:
        """False once the run finished all its planned epochs (a resume with more --epochs extends it)."""
        result = self.result_of(run)
        if result is None or result["status"] != "FINISHED":
            return True
        return len(result["history"]) < run.train.epochs and not result.get("stopped_early")


class CallLock:
    """An exclusive OS lock on a call folder while a process trains it (`fcntl.flock` on `<call>/.lock`, holding
    the owner's pid): a second process that would train the same call is refused, and the kernel releases the lock
    when its owner ends, however it ends (even SIGKILL), so a stale lock never blocks a resume."""

    FILE = ".lock"

    def __init__(self, handle):
        self._handle = handle

    @classmethod
    def acquire(cls, folder: Path) -> "CallLock":
        """The lock, or CallError naming the process that holds it."""
        try:
            import fcntl
        except ImportError:  # Windows: no flock; calls are not guarded there
            return cls(None)
        handle = open(folder / cls.FILE, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            raise CallError(f"the call {folder} is being trained by another process (pid {owner}): wait for it to "
                            "end, or stop it (Ctrl-C or kill) and resume then") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        return cls(handle)

    def release(self) -> None:
        if self._handle is not None and not self._handle.closed:
            self._handle.close()  # closing the file releases the flock


def new_call_folder(output: str | Path, experiment: str) -> Path:
    """A fresh, unique call folder: two calls started in the same second never share one."""
    parent = Path(output) / slug(experiment)
    parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    while True:
        folder = parent / f"{stamp}-{secrets.token_hex(3)}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue


def find_call_folder(target: str, output: str | Path, tracking_uri: str | None, named_by: str = "--resume") -> Path:
    """The call folder named by `named_by` (--resume, or rescore.py's CALL): the folder itself, a file inside it
    (e.g. a run's last.pth), or the parent run id (looked up in the tracking store)."""
    path = Path(target).expanduser()
    for candidate in (path, *path.parents[:3]):
        if (candidate / CALL_FILE).is_file():
            return candidate
    if path.exists():
        raise CallError(f"{target} is not inside a runner call folder (no {CALL_FILE} in it or above it): pass the "
                        "call folder printed by ablate.py, a last.pth inside it, or the parent run id")
    if RUN_ID.match(target):
        return _call_folder_of_parent(target, output, tracking_uri, named_by)
    raise CallError(f"{named_by} {target}: no such file or folder, and not an MLflow run id")


def _call_folder_of_parent(run_id: str, output: str | Path, tracking_uri: str | None, named_by: str) -> Path:
    from mlflow.exceptions import MlflowException  # mlflow takes ~1.3 s to import: only when a run id is given
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or default_tracking_uri(output)
    path = sqlite_path(uri)
    problem = sqlite_store_problem(path) if path is not None else None
    if problem:  # looking a run up must not create an empty store
        raise CallError(f"{named_by} {run_id}: {problem}; pass --output (or --tracking-uri) of the call's store, or "
                        "the call folder")
    try:
        run = MlflowClient(tracking_uri=uri).get_run(run_id)
    except MlflowException:
        raise CallError(f"no MLflow run {run_id} in {uri}: pass --output (or --tracking-uri) of the call's store, "
                        "or the call folder") from None
    folder = run.data.tags.get("call_folder")
    if folder is None:
        raise CallError(f"run {run_id} is not the parent run of a runner call: pass the parent run id")
    resolved = Path(output) / folder
    if not (resolved / CALL_FILE).is_file():
        raise CallError(f"the call folder of run {run_id}, {resolved}, is gone: pass its new location")
    return resolved
