"""`python experiments/search.py --n-trials 8`: an Optuna search over SepViT's group sizes (and any other switch).

    python experiments/search.py --n-trials 8                              # group sizes, window size, window token
    python experiments/search.py --n-trials 8                              # again: 8 more trials in the same study
    python experiments/search.py --space training --n-trials 30 --processes 2
    python experiments/search.py --objectives top1 macs --n-trials 20      # accuracy against MACs: a Pareto front
    python experiments/search.py --space my_space.yaml --sampler grid
    python experiments/search.py --storage postgresql://user:pw@db-host/optuna --study-name gs --n-trials 10

Each trial trains one configuration with the runner's engine (`experiments.runner.run.train_and_evaluate`) and reports
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

This module is the command line (parse, validate, run the call, close it whatever ends it); the trial is
`experiments.search_objective`, the workers `experiments.search_workers`, the study's storage and records
`experiments.search_storage`, the space `experiments.search_space`, the report `experiments.search_report`.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # `python experiments/search.py`: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import optuna

from sepvit.config import PRESETS
from workbench.cli import (OneLineParser, UsageError, add_config_flag, add_dataclass_flags, add_model_flags,
                           add_tracking_flags, dataclass_from_args, expand_config, fail)
from workbench.tracking import (Tracker, TrackingError, check_experiment_name, check_tracking_uri,
                                default_tracking_uri, flatten)

from experiments import search_report
from experiments.base_model import DEFAULT_MODEL, base_config
from experiments.data import DataError, build_datasets, check_dataset
from experiments.runner.engine import check_training_settings, fit_model_to_data
from experiments.search_signals import STOP_SIGNALS, Stopped, describe_stop, signals_held, stop_signals
from experiments.search_space import SpaceError, load_space
from experiments.search_storage import (HOST, OBJECTIVES, Prepared, Settings, check_storage, close_dead_calls,
                                        fail_dead_trials, fail_stale_trials, mask_secrets, open_storage, open_study,
                                        study_id)
from experiments.search_workers import PRUNERS, SAMPLERS, run_workers
from experiments.train_config import TrainConfig

# Notebook 04 reads `search.mask_url` (its stored outputs pin its code; when it is next executed, it can use
# experiments.search_storage.mask_secrets and this import goes).
from experiments.search_storage import mask_url  # noqa: F401

PROG = "search.py"
DEFAULT_STUDY = "sepvit-search"
DEFAULT_EXPERIMENT = "sepvit-search"
# The search trains many configurations, so its default budget per trial is smaller than the runner's (9 epochs
# of 4000 images): 8 trials fit in 10 minutes on 2 CPU cores (README, "Searching").
SEARCH_BUDGET = {"epochs": 3, "train_size": 2000, "val_size": 500}
EXIT_FAILED = 1
STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]*$")
MAX_NAME = 200  # --experiment and --study-name name folders under --output (a file name holds 255 bytes)


# ---------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_flag(p)
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
    s.add_argument("--processes", dest="search_workers", type=int, default=1, metavar="N",
                   help="processes sharing the study, each taking trials in turn (Optuna's parallel workers; "
                        "-j/--workers is the DataLoader's, as in timm and ablate.py)")
    s.add_argument("--heartbeat", type=int, default=20,
                   help="seconds between a running trial's heartbeats; a trial silent for 3 heartbeats (its worker "
                        "died) is marked FAIL")
    m = p.add_argument_group("model (the base configuration: the paper's defaults unless changed here)")
    add_model_flags(m, PRESETS, DEFAULT_MODEL, "embed_dims=16,32,64,128")
    t = p.add_argument_group("training of every trial (TrainConfig fields, the runner's names)")
    add_dataclass_flags(t, TrainConfig, skip=("workers",), help_for={
        "seed": "training seed of every trial (the runner's --seed) and the sampler's seed; trials share it, so they "
                "differ only in their parameters",
        "epochs": "epochs per trial: the pruner's resource"})
    t.add_argument("-j", "--workers", dest="workers", type=int, default=0,
                   help="DataLoader worker processes per trial (as in timm and ablate.py)")
    p.set_defaults(**SEARCH_BUDGET)
    add_tracking_flags(p.add_argument_group("tracking"), DEFAULT_EXPERIMENT)
    return p


def command_line(argv: Sequence[str]) -> str:
    """The call's command as the parent run records it, credentials masked in each argument."""
    return " ".join([PROG, *(mask_secrets(a) for a in argv)])


def storage_url(args) -> str:
    if args.storage:
        return args.storage
    return f"sqlite:///{(Path(args.output) / 'optuna.db').resolve()}"


# ---------------------------------------------------------------------------------- flags -> a checked call
def prepare(args) -> Prepared:
    """Validate everything (no study, trial or MLflow run is created): a bad request raises a one-line error."""
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
    for flag, value, minimum in (("--n-trials", args.n_trials, 1), ("--processes", args.search_workers, 1),
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
    base = base_config(args)
    train = dataclass_from_args(TrainConfig, args, img_size=args.img_size or base.img_size)
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
    existing = study_id(storage, args.study_name)
    if existing is not None:
        _check_same_study(storage, existing, settings)
    return Prepared(settings, space, base, train, datasets, existing is not None, reference, note, combinations)


def _check_same_study(storage, existing_id: int, settings: Settings) -> None:
    """A call that continues a study must measure what its earlier trials measured."""
    name = settings.study_name
    directions = [d.name.lower() for d in storage.get_study_directions(existing_id)]
    stored = storage.get_study_user_attrs(existing_id).get("sepvit.settings")
    if stored is None:
        raise UsageError(f"study {name!r} in {mask_secrets(settings.storage)} was not created by {PROG}: choose "
                         "another --study-name")
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


# ---------------------------------------------------------------------------------- the call
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        argv = expand_config(parser, argv)
    except ValueError as exc:
        return fail(PROG, str(exc))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial's outcome is one line of ours
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
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
        text = search_report.finish_study(study, settings, tracker, parent, started)
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
