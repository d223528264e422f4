"""A call planned and checked before anything is made: its runs (configurations x seeds), their data, their store.

`plan_call` refuses bad input with one line (UsageError, DataError, TrackingError or another ValueError) before any
folder, file or MLflow run exists; `plan_resume` does the same for a call to finish. `run_call` (experiments.runner
.running) then trains either.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from sepvit.config import SepViTConfig
from workbench.cli import UsageError
from workbench.tracking import (check_experiment_name, check_tracking_uri, default_tracking_uri, mask_secrets,
                                signals_held, sqlite_path, sqlite_store_problem, unwritable_folder)

from experiments.data import build_datasets_for, check_dataset, check_sizes_available
from experiments.runner.calls import Call, CallLock, PlannedRun, new_call_folder, slug
from experiments.runner.checkpoint import CheckpointError, check_resumable_checkpoint
from experiments.runner.engine import check_mixup_batch, check_training_settings, fit_model_to_data
from experiments.runner.lifecycle import CallLifecycle, rank_from_environment, shared, world_size
from experiments.train_config import TrainConfig

DEFAULT_EXPERIMENT = "sepvit-ablation"


@dataclass
class Plan:
    """A new call, checked: every planned run, the data they share (built and verified), where it is recorded."""

    runs: list[PlannedRun]
    reference: str | None  # the label of the configuration the others are compared with (None: none is)
    datasets: tuple  # (train, val, DataInfo)
    experiment: str
    tracking_uri: str | None  # as given; None: the output folder's default store (call.json keeps it so)
    parallel: int | str  # runs trained at once: N or "auto" (running.worker_layout)
    name: str  # the parent run's name, before the call folder's
    command: str  # what call.json and the parent's `command` tag keep
    calibrate: bool = False  # the report adds the calibration (experiments.calibration)
    changes: dict[str, Any] = field(default_factory=dict)  # none for a new call (a Resumption's are applied)
    parent_tags: dict[str, str] = field(default_factory=dict)  # added to the parent run's tags when it is opened
    # called with the call folder once its plan is written and before any run trains: a caller that must find the
    # call again after a kill (SIGKILL: no handler runs) records the folder here (search --confirm does)
    on_open: Callable[[Path], None] | None = None
    # looks already taken at these runs' first seeds in an earlier call (Call.seed_counts; None: none), e.g. a
    # search's confirmation that could not extend its finished call at fewer seeds and trains them again
    seed_counts: list[int] | None = None

    @property
    def output(self) -> Path:
        return Path(self.runs[0].train.output)

    @property
    def uri(self) -> str:
        return self.tracking_uri or default_tracking_uri(self.output)

    def open(self, life: CallLifecycle) -> Call:
        """Make the call's folder, lock it and write its plan: all of it, or nothing (stops held meanwhile)."""
        with signals_held():
            folder = shared(new_call_folder(self.output, self.experiment) if life.rank == 0 else None, life.world)
            if life.rank == 0:
                life.lock = CallLock.acquire(folder)  # a new folder: nobody else can hold it yet
            life.call = Call(folder, self.command, self.experiment, self.runs, self.reference, self.tracking_uri,
                             name=f"{self.name} {folder.name}", calibrate=self.calibrate,
                             seed_counts=None if self.seed_counts is None else list(self.seed_counts),
                             confirmation=confirmation_of(self.parent_tags))
            if life.rank == 0:
                life.call.save()
                if self.on_open is not None:
                    self.on_open(folder)
        return life.call


def confirmation_of(parent_tags: Mapping[str, str]) -> str | None:
    """What a search's confirmation confirms ("study <name> trial <N>"), from its parent tags; None for any other
    call."""
    if parent_tags.get("search.confirmation") != "true":
        return None
    return f"study {parent_tags.get('search.study', '?')} trial {parent_tags.get('search.trial', '?')}"


def plan_call(configs: Mapping[str, SepViTConfig], train: TrainConfig, *, seeds: int = 1,
              base: SepViTConfig | None = None, reference: str | None = None,
              experiment: str = DEFAULT_EXPERIMENT, tracking_uri: str | None = None, parallel: int | str = "auto",
              calibrate: bool = False, name: str | None = None, command: str | None = None,
              parent_tags: Mapping[str, str] | None = None) -> Plan:
    """Check and plan a call: every configuration (label -> SepViTConfig) at `seeds` seeds (train.seed,
    train.seed + 1, ...), trained with `train` into `train.output`, recorded in MLflow (`tracking_uri`, default
    the output folder's SQLite store) under `experiment`.

    base: what each run's `ablation.*` tags are measured from (default: the reference's configuration, else the
        first); reference: the label every other configuration is compared with (default: the configuration equal
        to `base`, if any). The data are built and verified here, and every configuration fitted to them.
    parent_tags: further tags of the call's MLflow parent run (e.g. the search's confirmation names its study).
    Raises a one-line ValueError (UsageError, DataError, TrackingError) for bad input; creates nothing.
    """
    if not configs:
        raise UsageError("a call needs at least one configuration")
    if reference is not None and reference not in configs:
        raise UsageError(f"the reference {reference!r} is not among the configurations ({', '.join(configs)})")
    if seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {seeds}")
    check_parallel(parallel)
    base = base or configs[reference or next(iter(configs))]
    train = train.replace(img_size=train.img_size or base.img_size)
    check_training_settings(train)
    check_dataset(train.dataset, train.data_dir)
    check_experiment_name(experiment)
    problem = unwritable_folder(train.output)
    if problem:
        raise UsageError(f"--output {train.output}: the call folder cannot be made ({problem}); choose another "
                         "--output")
    check_tracking_uri(tracking_uri or default_tracking_uri(train.output))
    datasets = build_datasets_for(train, verify=True)
    info = datasets[2]
    check_sizes_available(info, train.train_size, train.val_size)
    check_mixup_batch(train, info.train_size, world_size())
    fitted = {label: fit_model_to_data(cfg, info) for label, cfg in configs.items()}  # re-validated at the data's size
    base = fit_model_to_data(base, info)
    if reference is None:
        reference = next((label for label, cfg in fitted.items() if not cfg.diff(base)), None)
    labels = list(fitted)
    return Plan(plan_runs(fitted, base, train.replace(img_size=info.img_size), seeds), reference, datasets,
                experiment, tracking_uri, parallel, name or ("calibrate" if calibrate else labels[0]),
                command or f"plan_call({', '.join(labels)}; {seeds} seed(s))", calibrate,
                parent_tags={k: str(v) for k, v in (parent_tags or {}).items()})


def plan_runs(configs: Mapping[str, SepViTConfig], base: SepViTConfig, train: TrainConfig,
              seeds: int) -> list[PlannedRun]:
    """Every (configuration, seed) run, configuration by configuration, tagged with its differences from `base`."""
    runs = []
    for label, cfg in configs.items():
        diff = cfg.diff(base)
        tags = {"config": label, "ablation": label, "is_reference": str(not diff).lower(),
                **{f"ablation.{k}": str(v) for k, v in diff.items()}}
        for seed in range(train.seed, train.seed + seeds):
            name = f"{label} seed{seed}"
            runs.append(PlannedRun(label, seed, cfg, train.replace(seed=seed), slug(name),
                                   {**tags, "seed": str(seed)}))
    return runs


def parallel_count(text: str) -> int | str:
    """argparse type of --parallel: 'auto' or a positive integer."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 or auto, got {value}")
    return value


def check_parallel(parallel: int | str) -> None:
    if parallel == "auto":
        return
    if parallel < 1:
        raise UsageError(f"--parallel must be >= 1, got {parallel}")
    if parallel > 1 and world_size() > 1:
        raise UsageError("--parallel trains runs side by side in one process each: drop it under torchrun")


# ---------------------------------------------------------------------------------- finishing a call
# Training settings a resume may change (applied to unfinished runs and recorded as resume.* tags): more epochs to
# extend, a lower lr or gradient clipping after a NaN, and where/how the data is loaded.
RESUME_MAY_CHANGE = ("epochs", "lr", "clip_grad", "workers", "device")


@dataclass
class Resumption(Plan):
    """A call to finish, checked: its own plan with the allowed `changes` applied, its folder locked."""

    call: Call | None = None
    lock: CallLock | None = None
    added_runs: int = 0  # runs of the seeds `--seeds` added (plan.add_seeds)

    @property
    def output(self) -> Path:
        return self.call.output  # where the call folder is now (it may have moved since it was planned)

    @property
    def uri(self) -> str:
        return self.call.resolved_tracking_uri()

    def open(self, life: CallLifecycle) -> Call:
        life.call, life.lock = self.call, self.lock
        if life.rank == 0:
            self.call.save()  # the applied changes become part of the plan
            done = sum(not self.call.needs_training(r) for r in self.call.runs)
            print(f"resuming {self.call.folder}: {done} of {len(self.call.runs)} runs finished"
                  + (f"; changed: {', '.join(f'{k}={v}' for k, v in self.changes.items())}" if self.changes else "")
                  + (f"; seeds per configuration: {self.parent_tags['resume.seeds']}" if self.added_runs else ""),
                  file=sys.stderr)
        return self.call


def plan_resume(folder: str | Path, *, changes: Mapping[str, Any] | None = None, tracking_uri: str | None = None,
                parallel: int | str = "auto", seeds: int | None = None, confirming: bool = False) -> Resumption:
    """Check a call to finish (its folder: see `calls.find_call_folder` for other ways to name it): FINISHED runs
    are kept, runs with a last.pth continue, the others start. `changes`: settings asked for (field -> value); those
    in RESUME_MAY_CHANGE that differ from the plan are applied, any other that differs is refused. `seeds`: seeds
    per configuration; more than the call has adds the next seeds of every configuration (`add_seeds`; `confirming`:
    the search adds them to its own confirmation, which any other caller is refused). Locks the
    call (released when the call ends, or by the garbage collector if it is never run). Raises a one-line
    ValueError."""
    lock = None
    try:
        call = Call.load(Path(folder))
        problem = unwritable_folder(call.folder)
        if problem:
            raise UsageError(f"the call folder {call.folder} cannot be written ({problem}): make it writable, or "
                             "copy the output folder somewhere writable and resume the copy")
        if rank_from_environment() == 0:  # before the call's state is read: nobody else may change it meanwhile
            lock = CallLock.acquire(call.folder)
            call = Call.load(call.folder)  # the plan as it is now that nobody else can change it
        applied = resume_changes(call, dict(changes or {}))
        call.runs = [PlannedRun(r.label, r.seed, r.model, r.train.replace(**applied), r.folder, r.tags, r.run_name)
                     for r in call.runs]
        if tracking_uri:
            call.tracking_uri = tracking_uri
        uri = call.resolved_tracking_uri()
        check_tracking_uri(uri)
        parent = check_parent_exists(call, uri)
        added, seeds_before = 0, seeds_per_configuration(call)
        if seeds is not None:
            added = add_seeds(call, seeds, dict(parent.data.tags) if parent else {},
                              resumed_with_other_settings(uri, parent) if parent else [], applied,
                              confirming=confirming)
        first = call.runs[0].train
        datasets = build_datasets_for(first, verify=True)
        for run in call.runs:
            check_resumable(call, run)
        check_parallel(parallel)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    seed_tags = {"seeds": str(seeds_per_configuration(call)), "planned_runs": str(len(call.runs)),
                 **({"resume.seeds": f"{seeds_before} -> {seeds}"} if added else {})}
    return Resumption(call.runs, call.reference, datasets, call.experiment, call.tracking_uri, parallel, call.name,
                      call.command, call.calibrate, applied, call=call, lock=lock, added_runs=added,
                      parent_tags=seed_tags if call.seed_counts is not None else {})


def seeds_per_configuration(call: Call) -> int:
    return len(call.runs) // max(len({r.label for r in call.runs}), 1)


# Resume changes after which a run's schedule is not a new run's: new seeds could not be pooled with it
SCHEDULE_CHANGES = ("epochs", "lr", "clip_grad")


def add_seeds(call: Call, seeds: int, parent_tags: Mapping[str, str], resumed_otherwise: list[str],
              applied: Mapping[str, Any], confirming: bool = False) -> int:
    """Plan the seeds a resume asks for beyond the call's (`--resume CALL --seeds N`): every configuration gets
    the next seeds, trained exactly as a new call at N seeds would train them, so the call's report then pools all
    N. `call.seed_counts` keeps the seeds per configuration of each report made with every run finished (the
    looks at the data; the report's `looks_sentence`). Returns the runs added; refuses what would not be one
    call's seeds: fewer seeds than planned, configurations on different seeds, a search's confirmation (unless
    `confirming`: the search extending it, which records the seeds in its study), runs
    named by their caller, and runs trained on another schedule than new ones would be (`resumed_otherwise`:
    runs resumed with a changed --epochs/--lr/--clip-grad, or such a change asked for now in `applied`)."""
    by_label: dict[str, list[PlannedRun]] = {}
    for run in call.runs:
        by_label.setdefault(run.label, []).append(run)
    first = call.runs[0].seed
    have = len(by_label[call.runs[0].label])
    if any([r.seed for r in runs] != list(range(first, first + have)) for runs in by_label.values()):
        raise UsageError(f"--seeds {seeds}: the call's configurations were not planned on the same run of seeds, so "
                         "there is no next seed to add; start a new call with --seed and --seeds")
    if seeds < have:
        raise UsageError(f"--seeds {seeds}: the call has {have} seed(s) per configuration and a resume cannot drop "
                         f"any: give {have} or more")
    if seeds == have:
        return 0
    if (call.confirmation is not None or parent_tags.get("search.confirmation") == "true") and not confirming:
        raise UsageError("--seeds: this call is a search's confirmation, which the study records with its seeds: ask "
                         f"the search for them (python experiments/search.py --n-trials 0 --confirm {seeds} with the "
                         "study's flags)")
    if any(r.run_name is not None for r in call.runs):
        raise UsageError("--seeds: the call's runs were named by their caller, not by configuration and seed: start "
                         "a new call for more seeds")
    changing = [f"--{k.replace('_', '-')}" for k in applied if k in SCHEDULE_CHANGES]
    if changing:
        raise UsageError(f"--seeds with {', '.join(changing)}: the call's runs would continue on a changed schedule "
                         "while the new seeds train on it from the start, and the two cannot be pooled; add the seeds "
                         f"first (--seeds {seeds}), then resume again with {', '.join(changing)} for every run")
    if resumed_otherwise:
        raise UsageError(f"--seeds: {'; '.join(resumed_otherwise[:3])} continued on a changed schedule, which new "
                         "seeds would not share, so they cannot be pooled: start a new call with the settings it "
                         "ended with")
    added = []
    for runs in by_label.values():
        template = runs[0]
        for seed in range(first + have, first + seeds):
            name = f"{template.label} seed{seed}"
            added.append(PlannedRun(template.label, seed, template.model, template.train.replace(seed=seed),
                                    slug(name), {**template.tags, "seed": str(seed)}))
    taken = {r.folder for r in call.runs}
    clash = next((r.folder for r in added if r.folder in taken or (call.folder / r.folder).exists()), None)
    if clash is not None:
        raise UsageError(f"--seeds {seeds}: the call folder already holds {clash}, which its plan does not list: "
                         "move it away, or start a new call")
    call.runs = [r for label in by_label for r in (*by_label[label], *[a for a in added if a.label == label])]
    if call.seed_counts is None:  # the first extension: the call's report at `have` seeds was a look if it finished
        call.seed_counts = [have] if all(not call.needs_training(r) for r in call.runs if r.seed < first + have) else []
    return len(added)


def resumed_with_other_settings(uri: str, parent) -> list[str]:
    """The call's runs that a resume continued with a changed --epochs/--lr/--clip-grad (their `resume.*` tags):
    "<run> (resume.epochs 5 -> 12)"."""
    from mlflow.tracking import MlflowClient

    runs = MlflowClient(tracking_uri=uri).search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return sorted(f"{r.info.run_name} ({k} {v})" for r in runs for k, v in r.data.tags.items()
                  if k in {f"resume.{name}" for name in SCHEDULE_CHANGES})


def resume_changes(call: Call, asked: dict[str, Any]) -> dict[str, Any]:
    """The TrainConfig changes a resume applies; a setting it cannot honour is refused, naming its flag."""
    planned = call.runs[0].train
    changes = {}
    for name in sorted(asked):
        flag = "--" + name.replace("_", "-")
        if name in RESUME_MAY_CHANGE:
            if asked[name] != getattr(planned, name):
                changes[name] = asked[name]
        elif name not in TrainConfig.__dataclass_fields__ or asked[name] != getattr(planned, name):
            raise UsageError(f"{flag} cannot change when resuming: the call's runs were planned with it (resume may "
                             f"change {', '.join('--' + n.replace('_', '-') for n in RESUME_MAY_CHANGE)}); drop "
                             f"{flag} or start a new call")
    planned.replace(**changes)  # validates the changed values
    return changes


def check_parent_exists(call: Call, uri: str):
    """The store a call recorded its parent in still holds it: else resuming would make a new, empty store (a
    moved output folder without its mlflow.db) or fail after training started. Returns the parent (an MLflow Run;
    None when the call never opened one)."""
    if call.parent_run_id is None:
        return None
    from mlflow.exceptions import MlflowException  # mlflow takes ~1.3 s to import: only when a parent exists
    from mlflow.tracking import MlflowClient

    path = sqlite_path(uri)
    problem = sqlite_store_problem(path) if path is not None else None
    if problem:
        raise UsageError(f"the call's MLflow store is gone ({problem}): restore it beside the call's output folder, "
                         "or pass --tracking-uri of the store that holds its parent run")
    try:
        return MlflowClient(tracking_uri=uri).get_run(call.parent_run_id)
    except MlflowException:
        raise UsageError(f"the MLflow store {mask_secrets(uri)} holds no run {call.parent_run_id} (the call's parent): "
                         "pass --tracking-uri of the store that holds it") from None


def check_resumable(call: Call, run: PlannedRun) -> None:
    """Refuse, before training, a run whose last.pth cannot continue it (damaged, foreign, other configuration)."""
    last = call.run_dir(run) / "last.pth"
    if call.state_of(run) == "new" or not last.is_file():
        return
    try:
        done = check_resumable_checkpoint(last, run.model, run.train)
    except CheckpointError as exc:
        raise UsageError(str(exc)) from None
    if done > run.train.epochs:
        raise UsageError(f"{run.name} has already trained {done} epochs: --epochs {run.train.epochs} cannot shorten "
                         "it; give at least that many")
