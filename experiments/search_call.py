"""A search call as objects: `plan_search` checks it (nothing created), `run_search` runs it and closes it.

    prepared = plan_search(SepViTConfig.preset("sepvit_nano_32"), TrainConfig(), n_trials=8, confirm=3)
    exit_code = run_search(prepared)          # the trials, the confirmation, the report; never raises for a stop

`experiments/search.py` is its command line. Whatever ends a call (an error, Ctrl-C, SIGTERM, SIGHUP) closes its
parent run and the trial in progress with the reason (Optuna's `fail_reason` too); the same call continues the
study. A call killed outright (SIGKILL, out of memory) is repaired by the next call on the same machine: its
trials FAIL, its parent is KILLED and a lost reference trial is enqueued again.

With `confirm=K` the call then trains the best trial's configuration and the paper's at K paired seeds as one runner
call (`confirm_best`, experiments.search_confirm); its answer is stored in the study and the report states it.
"""
from __future__ import annotations

import dataclasses
import os
import re
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import optuna

from sepvit.config import SepViTConfig
from workbench.cli import EXIT_BAD_INPUT, UsageError
from workbench.tracking import Tracker, check_experiment_name, check_tracking_uri, default_tracking_uri, flatten

from experiments import runner, search_confirm, search_report
from experiments.data import build_datasets_for, check_dataset, final_val_images
from experiments.grids import REFERENCE, label_for
from experiments.runner.calls import Call
from experiments.runner.engine import check_training_settings, fit_model_to_data
from experiments.runner.plan import check_parallel
from experiments.search_signals import STOP_SIGNALS, Stopped, describe_stop, signals_held, stop_signals
from experiments.search_space import load_space
from experiments.search_storage import (CONFIRMATION_RECENT_S, HOST, Prepared, Settings, check_storage,
                                        close_dead_calls, confirming_elsewhere, fail_dead_trials, fail_stale_trials,
                                        mask_secrets, open_storage, open_study, study_id)
from experiments.search_workers import run_workers
from experiments.stats import verdict_text
from experiments.train_config import TrainConfig

PROG = "search.py"  # the search's command: its messages start with it
DEFAULT_STUDY = "sepvit-search"
DEFAULT_EXPERIMENT = "sepvit-search"
EXIT_FAILED = 1
STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]*$")
MAX_NAME = 200  # the experiment and the study name folders under the output (a file name holds 255 bytes)


# ---------------------------------------------------------------------------------- a checked call
def plan_search(base: SepViTConfig, train: TrainConfig, *, space: str = "default",
                objectives: Sequence[str] = ("top1",), n_trials: int = 8, timeout: float | None = None,
                study_name: str = DEFAULT_STUDY, storage: str | None = None, sampler: str = "tpe",
                pruner: str | None = None, workers: int = 1, heartbeat: int = 20,
                experiment: str = DEFAULT_EXPERIMENT, tracking_uri: str | None = None,
                command: str | None = None, confirm: int = 0, parallel: int | str = "auto",
                force_confirm: bool = False) -> Prepared:
    """Check a search call: `n_trials` trials of `space` (default, training, or a YAML file) around `base`, each
    trained with `train` into `train.output`, the study in `storage` (default sqlite:///<output>/optuna.db), the
    runs in MLflow (`tracking_uri`, default the output folder's store) under `experiment`. `pruner` None: median
    with one objective, none with several. `confirm` K >= 2: after the trials, train the best trial's configuration
    and the base at K paired seeds as one runner call (`parallel` runs at a time, the runner's --parallel) and
    report whether the difference is beyond seed noise (0: no confirmation; n_trials may then be 0, to confirm an
    existing study's best trial); refused while another process's confirmation of the study is recorded as running,
    unless `force_confirm`. No study, trial or MLflow run is created; a bad request raises a one-line ValueError
    (UsageError, SpaceError, DataError, TrackingError)."""
    objectives = tuple(objectives)
    if len(set(objectives)) != len(objectives):
        raise UsageError(f"--objectives {' '.join(objectives)} repeats an objective: name each once")
    if "top1" not in objectives:
        raise UsageError(f"--objectives {' '.join(objectives)}: the search trains for accuracy, so top1 must be one "
                         "of them (add it: --objectives top1 " + " ".join(objectives) + ")")
    # top-1 first, whatever order was asked: the report, the best trial and --confirm read a trial's values[0]
    objectives = ("top1", *(o for o in objectives if o != "top1"))
    pruner = pruner or ("median" if len(objectives) == 1 else "none")
    if len(objectives) > 1 and pruner != "none":
        raise UsageError(f"--pruner {pruner} needs a single objective (Optuna cannot prune multi-objective trials): "
                         "drop --pruner or the extra objectives")
    for flag, value, minimum in (("--processes", workers, 1), ("--heartbeat", heartbeat, 1)):
        if value < minimum:
            raise UsageError(f"{flag} must be >= {minimum}, got {value}")
    if force_confirm and not confirm:
        raise UsageError("--force-confirm lets --confirm K run beside another process's confirmation: use it with "
                         "--confirm K")
    if n_trials < (0 if confirm else 1):
        raise UsageError(f"--n-trials must be >= 1 (0 only with --confirm, to confirm a study's best trial without "
                         f"new trials), got {n_trials}")
    check_parallel(parallel)
    if timeout is not None and not timeout > 0:
        raise UsageError(f"--timeout must be a positive number of seconds, got {timeout}")
    if not STUDY_NAME.match(study_name or ""):
        raise UsageError(f"--study-name {study_name!r}: use letters, digits and _ . : + - (starting with a "
                         "letter or digit)")
    for flag, name in (("--study-name", study_name), ("--experiment", experiment)):
        if len(name) > MAX_NAME:
            raise UsageError(f"{flag} is {len(name)} characters long: use at most {MAX_NAME} (it also names a folder "
                             "under --output)")
    train = train.replace(img_size=train.img_size or base.img_size)
    check_training_settings(train)
    check_dataset(train.dataset, train.data_dir)
    searched = load_space(space, base, train)
    search_confirm.check_confirm(confirm, searched)
    check_experiment_name(experiment)
    tracking = tracking_uri or default_tracking_uri(train.output)
    check_tracking_uri(tracking)
    url = storage or f"sqlite:///{(Path(train.output) / 'optuna.db').resolve()}"
    check_storage(url)
    datasets = build_datasets_for(train, verify=True)
    info = datasets[2]
    base = fit_model_to_data(base, info)
    train = train.replace(img_size=info.img_size)
    combinations = searched.check(base, train)
    if sampler == "grid" and not searched.finite:
        continuous = [p.name for p in searched.params if not p.finite]
        raise UsageError(f"--sampler grid needs a finite space, but {', '.join(continuous)} "
                         f"{'is a continuous range' if len(continuous) == 1 else 'are continuous ranges'}: give "
                         "choices or a step, or use --sampler tpe/random")
    reference, note = searched.reference_values(base, train)
    settings = Settings(
        study_name=study_name, storage=url, space=searched.to_dict(), space_source=searched.source,
        model=base.to_dict(), train=train.to_dict(), objectives=objectives, sampler=sampler, pruner=pruner,
        seed=train.seed, heartbeat=heartbeat, tracking_uri=tracking, experiment=experiment,
        artifact_root=None if tracking_uri else str(Path(train.output).resolve() / "mlartifacts"),
        n_trials=n_trials, workers=workers, timeout=timeout, reference=reference)
    opened = open_storage(url, heartbeat=None)
    existing = study_id(opened, study_name)
    if existing is not None:
        _check_same_study(opened, existing, settings)
        if confirm and not force_confirm:  # before any trial: this call would end in the refusal
            _check_no_other_confirmation(opened.get_study_user_attrs(existing), study_name)
    elif n_trials == 0:
        raise UsageError(f"--n-trials 0 --confirm {confirm} confirms the best trial of an existing study, but "
                         f"{mask_secrets(url)} holds no study {study_name!r}: give --n-trials 1 or more")
    return Prepared(settings, searched, base, train, datasets, existing is not None, reference, note, combinations,
                    command or f"plan_search({study_name}; {n_trials} trials)", confirm, parallel, force_confirm)


def _check_no_other_confirmation(attrs: Mapping[str, Any], study_name: str) -> None:
    """Refuse (UsageError) while a confirmation of the study by another process is recorded as running: two
    machines on one storage would train the same confirmation twice and the last record would win. Not a lock
    (the check and this process's own record are two writes apart), which the storage does not offer."""
    for key, record in attrs.items():
        if key.startswith(search_confirm.RECORD_PREFIX) and confirming_elsewhere(record):
            worker = record.get("worker") or {}
            raise UsageError(
                f"another confirmation of study {study_name!r} is in progress (trial {record.get('trial')}, pid "
                f"{worker.get('pid')} on {worker.get('host')}, started {record.get('when')}, call folder "
                f"{record.get('call_folder')}): wait for it to finish, or add --force-confirm if that process is gone "
                f"(a record older than {CONFIRMATION_RECENT_S // 3600} h is not waited for)")


def _scored_as(train: dict[str, Any]) -> dict[str, Any]:
    """Training settings with `final_val_size` as the images it means (unset: 10000 or none, by dataset and
    --val-size), so that two spellings of the same scoring compare equal."""
    return {**train, "final_val_size": final_val_images(TrainConfig.from_dict(train))}


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
    # a field added to TrainConfig after the study was made: its trials ran with the value such runs had
    filled = TrainConfig.as_logged_before(stored["train"])
    stored = {**stored, "train": _scored_as({k: v for k, v in filled.items()
                                             if k in current["train"] or k in stored["train"]})}
    current = {**current, "train": _scored_as(current["train"])}
    for section in ("space", "model", "train"):
        if stored[section] != current[section]:
            keys = sorted(set(stored[section]) | set(current[section]))
            diffs = [f"{k}: {stored[section].get(k)} -> {current[section].get(k)}" for k in keys
                     if stored[section].get(k) != current[section].get(k)]
            what = {"space": "search space", "model": "base model", "train": "training settings"}[section]
            raise UsageError(f"study {name!r} was created with another {what} ({'; '.join(diffs[:3])}): its trials "
                             "would not be comparable; repeat the study's settings or choose another --study-name")


# ---------------------------------------------------------------------------------- the call
def run_search(prepared: Prepared) -> int:
    """Run the call's trials under one MLflow parent run, print the study's report, and return the exit code (0; 1
    when a worker died or every trial failed; 128 + the signal that stopped it). Its own signal handling spans
    from before the parent run opens until it is closed: whatever ends it (success, an exception, Ctrl-C, SIGTERM,
    SIGHUP), the parent and every trial it started are closed with the reason, and one line on stderr says so."""
    with stop_signals():
        return _run_search(prepared, mask_secrets(prepared.command))


def _run_search(prepared: Prepared, command: str) -> int:
    settings = prepared.settings
    study = tracker = parent = None
    confirming = False
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
        confirmed = 0
        if prepared.confirm:
            confirming = True
            confirmed = confirm_best(prepared, study, tracker, parent)
            confirming = False
            study = optuna.load_study(study_name=settings.study_name, storage=open_storage(settings.storage, None))
        text = search_report.finish_study(study, settings, tracker, parent, started)
        print(text)
        return _finish(study, settings, tracker, parent, dead) or confirmed
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP (Stopped), or a worker that was interrupted
        how, code = describe_stop(exc)
        reason = f"interrupted ({how}); run the same command to continue study {settings.study_name!r}"
        if confirming:
            reason = (f"interrupted ({how}) while confirming the best trial of study {settings.study_name!r} (its "
                      f"trials are kept); the same command with --n-trials 0 --confirm {prepared.confirm} finishes the "
                      "confirmation")
        with signals_held():
            if study is not None:
                fail_dead_trials(settings, study, leaving=f"the call was {reason}")
            _close(tracker, parent, "KILLED", reason)
        print(f"{PROG}: {reason}", file=sys.stderr)
        return code
    except Exception as exc:  # a failure nobody foresaw: close what is open, keep the traceback, one line here
        message = mask_secrets(("while confirming the best trial: " if confirming else "")
                               + f"{type(exc).__name__}: {exc}")
        with signals_held():
            if study is not None:
                fail_dead_trials(settings, study, leaving=f"the call failed: {message}")
            _close(tracker, parent, "FAILED", message)
            where = _error_log(Path(prepared.train.output), mask_secrets(traceback.format_exc()))
        first = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
        print(f"{PROG}: {first} ({where})", file=sys.stderr)
        return EXIT_FAILED


# ---------------------------------------------------------------------------------- the confirmation
def confirm_best(prepared: Prepared, study: optuna.Study, tracker, parent: str) -> int:
    """Train the study's best trial's configuration and the paper's (the base) at `prepared.confirm` paired seeds,
    the study's data and TrainConfig, as one runner call (`runner.plan_call` + `run_call`: what `ablate.py --compare
    --seeds K` runs, with its report, its MLflow parent run and its lifecycle), and store the answer in the study
    (experiments.search_confirm). A confirmation of the same request that finished is not trained again; any other
    of the same request is resumed from its call folder; one at fewer seeds is extended (its runs kept, the record
    keeping each look's seeds), and a finished one at more seeds answers a request at fewer. Before a run trains,
    the study holds a `running` record naming the call folder, so that a process killed outright (SIGKILL: no
    handler runs) leaves its call to the next --confirm (its runs, closed KILLED meanwhile by `close_dead_calls`,
    are reopened by the runner's resume).
    Returns 0; EXIT_FAILED when a run failed; EXIT_BAD_INPUT, with one line, while another process's confirmation is
    recorded as running (unless --force-confirm). A stop (Ctrl-C, SIGTERM, SIGHUP) is re-raised once the runner
    has closed its runs and the study holds the call folder."""
    settings, k = prepared.settings, prepared.confirm
    t = _confirmable(study, settings)
    if t is None:
        return 0
    seeds = t.fresh_seeds(k)
    previous = search_confirm.record_of(study, t)
    answered = _answered_already(previous, t, seeds)
    if answered is not None:
        return answered
    if not prepared.force_confirm:
        try:  # again: another machine may have begun while this call's trials ran
            _check_no_other_confirmation(study.user_attrs, settings.study_name)
        except UsageError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    label = label_for(t.model, t.base)
    command, _ = search_confirm.command_for(t, k)
    relation = search_confirm.seeds_relation(previous, t, seeds)
    earlier = previous if relation == "fewer" and previous.get("status") == "finished" else None  # a look, kept
    request = _request(t, seeds, label, command, settings, parent, earlier)
    announce = _announcer(study, search_confirm.record_key(t.trial), request)
    plan = None
    if relation in ("same", "fewer") and previous.get("call_folder"):
        plan = _resumption(previous, prepared, seeds)
    if plan is not None:
        _name_confirmation(plan, _confirmation_tags(t, prepared, parent, command, k))
        announce(plan.call.folder, plan.call.parent_run_id)
    else:
        looks = None if earlier is None else list(earlier.get("seed_counts") or [len(earlier["seeds"])])
        plan = dataclasses.replace(_new_plan(t, k, label, command, prepared, parent), on_open=announce,
                                   seed_counts=looks)
    print(f"confirmation: trial {t.trial} ({label}) against the paper's configuration at seeds {seeds[0]}-{seeds[-1]}"
          f": {2 * k} runs through the runner" + (f", as `{command}`" if command else ""), file=sys.stderr)
    results = runner.run_call(plan)
    if results.report is not None:
        print(results.report)
    return _store_result(study, tracker, parent, request, results)


def _answered_already(previous: Mapping[str, Any] | None, t: search_confirm.Target, seeds: list[int]) -> int | None:
    """The exit code when the stored confirmation answers the request without training (saying why on stderr):
    it finished at these seeds, or at more that start with them; EXIT_BAD_INPUT when one at more seeds is unfinished
    (finishing it answers this request too; a new call would train its runs again). None: train."""
    relation = search_confirm.seeds_relation(previous, t, seeds)
    if relation not in ("same", "more"):
        return None
    have, finished = previous["seeds"], previous.get("status") == "finished"
    if relation == "same" and finished:
        print(f"confirmation: trial {t.trial}'s configuration was confirmed at seeds {seeds[0]}-{seeds[-1]} (call "
              f"{previous.get('call_folder')}): not trained again", file=sys.stderr)
        return 0
    if relation == "more" and finished:
        print(f"confirmation: trial {t.trial}'s configuration was confirmed at {len(have)} seeds, {have[0]}-"
              f"{have[-1]} (call {previous.get('call_folder')}), which include seeds {seeds[0]}-{seeds[-1]}: not "
              f"trained again; the answer at {len(have)} seeds stands", file=sys.stderr)
        return 0
    if relation == "more":
        print(f"{PROG}: error: --confirm {len(seeds)}: the confirmation of trial {t.trial} at {len(have)} seeds (call "
              f"{previous.get('call_folder')}) is {_ended(previous)} and holds these seeds' runs: finish it with "
              f"--confirm {len(have)} (its runs kept) rather than train them again", file=sys.stderr)
        return EXIT_BAD_INPUT
    return None


def _confirmable(study: optuna.Study, settings: Settings) -> search_confirm.Target | None:
    """The study's best trial to confirm, or None (saying why on stderr) when there is nothing to confirm."""
    t = search_confirm.target(study, settings.train)
    if t is None:
        print("confirmation: the study has no COMPLETE trial: nothing to confirm", file=sys.stderr)
    elif t.is_reference:
        print(f"confirmation: the best trial, {t.best}, is the paper's configuration: nothing to confirm",
              file=sys.stderr)
    elif t.training_changes:  # refused by plan_search for the call's space; a guard for the study's
        print(f"confirmation: trial {t.trial} differs in training settings ({', '.join(t.training_changes)}): not "
              "confirmed (a runner call trains both configurations with one TrainConfig)", file=sys.stderr)
    else:
        return t
    return None


def _request(t: search_confirm.Target, seeds: list[int], label: str, command: str | None, settings: Settings,
             parent: str, earlier: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a confirmation record says before the call runs: the request (`search_confirm.same_request` reads it);
    `earlier`: the finished confirmation at its first seeds, whose answer stands until this one finishes."""
    return {"trial": t.trial, "best": t.best, "label": label, "reference_label": REFERENCE, "seeds": seeds,
            "params": t.params, "experiment": settings.experiment, "command": command,
            "search_parent_run_id": parent, "model": t.model.to_dict(), "base": t.base.to_dict(),
            "train": t.confirm_train.to_dict(),
            **({"earlier": {k: v for k, v in earlier.items() if k != "earlier"}} if earlier else {})}


def _announcer(study: optuna.Study, key: str, request: Mapping[str, Any]) -> Callable[[Path, str | None], None]:
    """Writes the `running` record of the call in `folder`: the process, so that another one can tell whether it
    still runs (search_storage.confirming_elsewhere), and the folder, so that the next --confirm can resume it."""
    def announce(folder: Path, parent_run_id: str | None = None) -> None:
        study.set_user_attr(key, {**request, "status": "running", "reason": None,
                                  "call_folder": str(Path(folder).resolve()), "parent_run_id": parent_run_id,
                                  "worker": {"host": HOST, "pid": os.getpid()}, "started": time.time(),
                                  "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "runs": []})
    return announce


def _resumption(previous: Mapping[str, Any], prepared: Prepared, seeds: list[int]):
    """The runner's resumption of the call a record names, at the request's seeds (a record at fewer seeds is
    extended: its runs kept, the next seeds of both arms added; an extension that call.json lost is made again),
    or None (saying why) when it cannot be resumed."""
    have, k = len(previous.get("seeds") or []), len(seeds)
    how = f"extending the {_ended(previous)} call" if have < k else f"resuming the {_ended(previous)} call"
    try:
        plan = runner.plan_resume(previous["call_folder"], parallel=prepared.parallel, seeds=k, confirming=True)
    except ValueError as exc:
        print(f"confirmation: the {_ended(previous)} call {previous['call_folder']} cannot be resumed at {k} seeds "
              f"({exc}): starting a new one", file=sys.stderr)
        return None
    print(f"confirmation: {how} {previous['call_folder']}" + (
        f" from {have} to {k} seeds per configuration (its runs kept; the report prices looking again)"
        if have < k else ""), file=sys.stderr)
    return plan


def _ended(record: Mapping[str, Any]) -> str:
    """How the call a record names ended, in words: a `running` record that is not in progress was left by a
    process killed outright."""
    if record.get("status") == "running":
        return "running" if confirming_elsewhere(dict(record)) else "killed"
    return str(record.get("status"))


def _name_confirmation(plan, tags: Mapping[str, str]) -> None:
    """A resumed (or extended) confirmation's parent run says what it is: its command at the new seeds, and this
    process, since the tags `close_dead_calls` reads would otherwise name the process that started it, which is
    gone, and a later call would close the run this one trains. A parent never opened gets every search tag."""
    plan.call.command = plan.command = tags["command"]
    if plan.call.parent_run_id is None:
        plan.parent_tags.update(tags)
    else:  # at once, not when the runner reopens it: a search starting meanwhile must not take it for dead
        Tracker(plan.uri, plan.experiment).set_tags(plan.call.parent_run_id,
                                                    {k: tags[k] for k in ("command", "host", "pid")})


def _confirmation_tags(t: search_confirm.Target, prepared: Prepared, parent: str, command: str | None,
                       k: int) -> dict[str, str]:
    """The tags of a confirmation's MLflow parent run: what it confirms, for which search, and by which process."""
    settings = prepared.settings
    return {"search.confirmation": "true", "search.study": settings.study_name, "search.trial": str(t.trial),
            "search.parent_run_id": parent, "search.storage": mask_secrets(settings.storage), "host": HOST,
            "pid": str(os.getpid()),
            "command": command or f"{PROG} --confirm {k} (study {settings.study_name}, trial {t.trial})"}


def _new_plan(t: search_confirm.Target, k: int, label: str, command: str | None, prepared: Prepared, parent: str):
    settings = prepared.settings
    tags = _confirmation_tags(t, prepared, parent, command, k)
    return runner.plan_call(
        {label: t.model, REFERENCE: t.base}, t.confirm_train, seeds=k, base=t.base, experiment=settings.experiment,
        tracking_uri=settings.tracking_uri if settings.artifact_root is None else None,
        parallel=prepared.parallel, name=f"confirm {settings.study_name} trial {t.trial}",
        command=tags.pop("command"), parent_tags=tags)


def _store_result(study: optuna.Study, tracker, parent: str, request: Mapping[str, Any], results) -> int:
    """The call's outcome in the study (its record) and on the search's parent run (tags); re-raises a stop."""
    stop = results.exit_code - 128 if results.exit_code - 128 in STOP_SIGNALS else None
    status = "finished" if results.exit_code == 0 else "interrupted" if stop is not None else "failed"
    unfinished = [f"{r.run_name} ({r.status})" for r in results.runs if r.status != "FINISHED"]
    reason = (None if status == "finished" else f"interrupted ({describe_stop(_stop_exception(stop))[0]})"
              if stop is not None else "; ".join(unfinished) or f"the call ended with exit code {results.exit_code}")
    key = search_confirm.record_key(request["trial"])
    record = {**request, "status": status, "reason": reason,
              "call_folder": None if results.folder is None else str(results.folder.resolve()),
              "parent_run_id": results.parent_run_id, "worker": {"host": HOST, "pid": os.getpid()},
              "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "runs": [{"label": r.run_name.rsplit(" seed", 1)[0], "seed": r.train_cfg.seed, "status": r.status,
                        "top1": r.top1 if r.status == "FINISHED" else None} for r in results.runs]}
    looks = _seed_counts(results.folder)
    if looks:
        record["seed_counts"] = looks
    trained = {label: sorted(r["seed"] for r in record["runs"] if r["label"] == label and r["status"] == "FINISHED")
               for label in (request["label"], request["reference_label"])}
    if status == "finished" and any(seeds != request["seeds"] for seeds in trained.values()):
        status, reason = "failed", (f"the call finished seeds {trained} per configuration, not the "
                                    f"{request['seeds']} asked for")
        record.update(status=status, reason=reason)
    if status == "finished":
        record.pop("earlier", None)  # superseded
    d = search_confirm.difference(record) if status == "finished" else None
    tags = {"confirmation.trial": str(request["trial"]), "confirmation.status": status,
            "confirmation.call_folder": str(record["call_folder"]),
            "confirmation.parent_run_id": str(results.parent_run_id)}
    if d is not None:
        tags["confirmation.verdict"] = verdict_text(d.verdict, d.bound, d.seeds_needed)
    with signals_held():  # the study and the search's parent run name the call, or the stop waits
        study.set_user_attr(key, record)
        tracker.set_tags(parent, tags)
    if stop is not None:
        raise _stop_exception(stop)
    return 0 if status == "finished" else EXIT_FAILED


def _seed_counts(folder: Path | None) -> list[int] | None:
    """The looks of an extended confirmation (its call's `seed_counts`), or None for one looked at once."""
    try:
        return None if folder is None else Call.load(Path(folder)).seed_counts
    except ValueError:  # a damaged call.json: the record keeps the runs, without the looks
        return None


def _stop_exception(signum: int) -> KeyboardInterrupt:
    return KeyboardInterrupt() if signum == signal.SIGINT else Stopped(signum)


def _print_start(prepared: Prepared, before: int, parent: str, closed: list[str]) -> None:
    settings = prepared.settings
    count = prepared.combinations.get("combinations")
    print(f"study {settings.study_name!r} in {mask_secrets(settings.storage)}: {before} trials so far"
          f"{' (new)' if not prepared.existing else ''}; this call adds {settings.n_trials} with {settings.workers} "
          f"worker(s); space: {prepared.space.describe()}"
          f"{f' ({count} combinations)' if count else ''}", file=sys.stderr)
    if prepared.confirm:
        print(f"then: the best trial against the paper's configuration at {prepared.confirm} paired seeds "
              "(--confirm)", file=sys.stderr)
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
