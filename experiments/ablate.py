"""`python experiments/ablate.py --no-gsa`: train SepViT with components switched off, compare, log to MLflow.

    python experiments/ablate.py --no-dssa --compare --seeds 3          # local-only vs full model, 3 seeds each
    python experiments/ablate.py --grid paper --seeds 2                  # the paper's component chain
    python experiments/ablate.py --grid one-off --epochs 5               # each switch off alone
    torchrun --nproc-per-node 2 experiments/ablate.py --no-gsa          # DistributedDataParallel (gloo on CPU)
    python experiments/ablate.py --resume output/<experiment>/<call>     # finish an interrupted call

Switches map one-to-one onto `SepViTConfig` fields; the training flags are generated from `TrainConfig`'s fields
(timm train.py names). A call plans every (configuration, seed) run in `<call>/call.json` before training, and
`--resume` finishes what is unfinished (see experiments/calls.py). Every run of a call is a child of one MLflow
parent run. Bad input is refused before any MLflow run is opened: one line on stderr, exit code 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Sequence

from sepvit.config import BLOCK_PATTERNS, PRESETS, WINDOW_TOKENS, SepViTConfig
from workbench.cli import (OneLineParser, UsageError, add_config_flag, add_dataclass_flags, expand_config, fail,
                           given_flags)

from experiments.base_model import DEFAULT_MODEL, base_config
from experiments.calls import (Call, CallError, CallLock, PlannedRun, find_call_folder, new_call_folder,
                               remove_temporary_files, slug)
from experiments.grids import GRIDS, REFERENCE, grid, label_for
from experiments.train_config import TrainConfig

DEFAULT_EXPERIMENT = "sepvit-ablation"
EXIT_RUN_FAILED, EXIT_INTERRUPTED = 1, 130  # a stop: 128 + its signal (Ctrl-C 130, SIGTERM 143)
PROG = "ablate.py"
# Training settings that --resume may change (applied to unfinished runs and recorded as resume.* tags):
# more epochs to extend, a lower lr or gradient clipping after a NaN, and where/how the data is loaded.
RESUME_MAY_CHANGE = ("epochs", "lr", "clip_grad", "workers", "device")
# Flags that only locate the call on --resume.
RESUME_LOCATORS = ("resume", "output", "tracking_uri", "parallel")

log = logging.getLogger("sepvit.ablate")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_flag(p)
    m = p.add_argument_group("model switches (map onto SepViTConfig; defaults = the authors' SepViT)")
    m.add_argument("--model", default=DEFAULT_MODEL, help=f"preset: {', '.join(PRESETS)}")
    m.add_argument("--model-kwargs", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="any other SepViTConfig field, typed by the field: gsa=false embed_dims=16,32,64,128")
    m.add_argument("--no-lwt", action="store_true", help="fixed zero window tokens (window_token='zero')")
    m.add_argument("--window-token", choices=WINDOW_TOKENS, help="window summary token")
    m.add_argument("--no-dssa", action="store_true",
                   help="local-only model: window attention in every block, no PWA, no GSA groups (dssa=False)")
    m.add_argument("--no-gsa", action="store_true", help="no grouped blocks (gsa=False)")
    m.add_argument("--group-size", type=int, nargs="+", metavar="N", help="windows per group side (one or per stage)")
    m.add_argument("--block-pattern", choices=BLOCK_PATTERNS, help="block type")
    m.add_argument("--no-ope", action="store_true", help="non-overlapping patch embedding (ope=False)")
    m.add_argument("--no-cpe", action="store_true", help="no conditional position encoding (cpe=False)")
    m.add_argument("--paper-equations", action="store_true", help="no inner DSSA shortcuts (inner_shortcuts=False)")
    m.add_argument("--window-size", type=int, help="window side in tokens")
    m.add_argument("--drop-path", type=float, help="stochastic depth rate (drop_path_rate)")
    t = p.add_argument_group("training (TrainConfig fields, timm train.py names)")
    add_dataclass_flags(t, TrainConfig)
    r = p.add_argument_group("runs and tracking")
    r.add_argument("--seeds", type=int, default=1, help="seeds per configuration (seed, seed+1, ...)")
    r.add_argument("--compare", action="store_true", help="also train the reference with the same seeds and data")
    r.add_argument("--grid", choices=list(GRIDS), help="a predefined set of configurations")
    r.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///<output>/mlflow.db)")
    r.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="MLflow experiment name")
    r.add_argument("--calibrate", action="store_true",
                   help="measure the instrument: the configuration (default the reference) and a null change "
                        "(fused_attn flipped: same function, another kernel) at --seeds seeds; reports the seed sd, "
                        "the null change's paired difference and the minimum detectable difference for 2-10 seeds")
    r.add_argument("--parallel", type=parallel_count, default="auto", metavar="N|auto",
                   help="train N runs of the call at once, in N processes sharing this process's CPU threads (a "
                        "run's numbers equal a sequential run with that many threads). auto (default): one process "
                        "per thread, as many as there are runs to train, one thread each (sequential on a GPU, "
                        "under torchrun, or with one thread)")
    r.add_argument("--resume", metavar="CALL",
                   help="finish an interrupted call: its folder, a last.pth inside it, or its parent run id")
    return p


# ---------------------------------------------------------------------------------- args -> plan
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


def switch_changes(args) -> dict:
    """The SepViTConfig fields set by the ablation switches (refusing contradictory combinations)."""
    changes: dict = {}
    if args.no_lwt:
        if args.window_token not in (None, "zero"):
            raise UsageError(f"--no-lwt means --window-token zero, but --window-token {args.window_token} was given: "
                             "use one of them")
        changes["window_token"] = "zero"
    elif args.window_token:
        changes["window_token"] = args.window_token
    if args.no_dssa:
        if "window_token" in changes:
            raise UsageError("--no-dssa removes window tokens, so --no-lwt/--window-token contradict it: drop one")
        if args.group_size:
            raise UsageError("--group-size has no effect with --no-dssa (GSA groups are DSSA blocks): drop one of them")
        changes["dssa"] = False
    if args.no_gsa:
        if args.group_size:
            raise UsageError("--group-size has no effect with --no-gsa: drop one of them")
        changes["gsa"] = False
    if args.group_size:
        changes["group_size"] = args.group_size[0] if len(args.group_size) == 1 else tuple(args.group_size)
    for flag, name, value in (("block_pattern", "block_pattern", args.block_pattern), ("no_ope", "ope", False),
                              ("no_cpe", "cpe", False), ("paper_equations", "inner_shortcuts", False),
                              ("window_size", "window_size", args.window_size)):
        given = getattr(args, flag)
        if given is not None and given is not False:  # `not in (None, False)` would read --window-size 0 as unset
            changes[name] = value
    return changes


def train_config(args, **changes) -> TrainConfig:
    """The TrainConfig of the command line (its flags are the dataclass's fields)."""
    return TrainConfig(**{**{name: getattr(args, name) for name in TrainConfig.__dataclass_fields__}, **changes})


def plan_configs(args, base: SepViTConfig) -> list[tuple[str, SepViTConfig]]:
    """(label, config) of every configuration this call trains; the reference is labelled "reference"."""
    changes = switch_changes(args)
    if args.calibrate:
        from experiments.calibration import NULL_LABEL, null_change

        if args.grid or args.compare:
            raise UsageError("--calibrate trains its own pair (the configuration and its null change): drop "
                             f"{'--grid' if args.grid else '--compare'}")
        cfg = base.replace(**changes)
        return [(REFERENCE if not changes else label_for(cfg, base), cfg), (NULL_LABEL, null_change(cfg))]
    if args.grid:
        if changes:
            raise UsageError(f"--grid {args.grid} trains its own configurations: drop the switches "
                             f"({', '.join(changes)}) or put shared settings in --model-kwargs")
        return grid(args.grid, base)
    cfg = base.replace(**changes)
    configs = [(label_for(cfg, base), cfg)]
    if args.compare and changes:
        configs.append((REFERENCE, base))
    return configs


def plan_runs(configs, base: SepViTConfig, train_cfg: TrainConfig, seeds: int) -> list[PlannedRun]:
    runs = []
    for label, cfg in configs:
        diff = cfg.diff(base)
        tags = {"config": label, "ablation": label, "is_reference": str(not diff).lower(),
                **{f"ablation.{k}": str(v) for k, v in diff.items()}}
        for seed in range(train_cfg.seed, train_cfg.seed + seeds):
            name = f"{label} seed{seed}"
            runs.append(PlannedRun(label, seed, cfg, train_cfg.replace(seed=seed), slug(name),
                                   {**tags, "seed": str(seed)}))
    return runs


def command_line(argv: Sequence[str]) -> str:
    """The call's command as call.json and the parent's `command` tag keep it: passwords in URLs masked."""
    from workbench.tracking import mask_secrets

    return " ".join([PROG, *(mask_secrets(a) for a in argv)])


def prepare(args):
    """Validate everything and build the data, before any MLflow run exists: (runs, reference, datasets, uri)."""
    from experiments.data import build_datasets, check_dataset, check_sizes_available
    from experiments.engine import check_mixup_batch, check_training_settings, fit_model_to_data
    from workbench.tracking import check_experiment_name, check_tracking_uri, default_tracking_uri, unwritable_folder

    if args.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
    check_parallel(args.parallel)
    base = base_config(args)
    train_cfg = train_config(args, img_size=args.img_size or base.img_size)
    check_training_settings(train_cfg)
    check_dataset(train_cfg.dataset, train_cfg.data_dir)
    configs = plan_configs(args, base)
    check_experiment_name(args.experiment)
    problem = unwritable_folder(args.output)
    if problem:
        raise UsageError(f"--output {args.output}: the call folder cannot be made ({problem}); choose another --output")
    uri = args.tracking_uri or default_tracking_uri(args.output)
    check_tracking_uri(uri)
    datasets = build_datasets(train_cfg.dataset, train_cfg.data_dir, train_cfg.img_size, train_cfg.train_size,
                              train_cfg.val_size, seed=train_cfg.data_seed, verify=True)
    info = datasets[2]
    check_sizes_available(info, train_cfg.train_size, train_cfg.val_size)
    check_mixup_batch(train_cfg, info.train_size, int(os.environ.get("WORLD_SIZE", "1")))
    configs = [(label, fit_model_to_data(cfg, info)) for label, cfg in configs]  # re-validates at the data's size
    base = fit_model_to_data(base, info)
    reference = next((label for label, cfg in configs if not cfg.diff(base)), None)
    if args.calibrate:
        reference = configs[0][0]  # the calibrated configuration, whatever its switches
    return plan_runs(configs, base, train_cfg.replace(img_size=info.img_size), args.seeds), reference, datasets, uri


# ---------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        argv = expand_config(parser, argv)
    except ValueError as exc:
        return fail(PROG, str(exc))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
    if args.resume:
        return resume(args, given_flags(parser, argv))
    from experiments.data import DataError
    from workbench.tracking import TrackingError

    try:
        runs, reference, datasets, uri = prepare(args)
    except (UsageError, DataError, TrackingError, ValueError) as exc:
        return fail(PROG, str(exc))

    def start(life: CallLifecycle) -> int:
        from workbench.tracking import signals_held

        with signals_held():  # the call folder exists with its plan, known to the lifecycle, or not at all
            folder = _shared(new_call_folder(args.output, args.experiment) if life.rank == 0 else None, life.world)
            if life.rank == 0:
                life.lock = CallLock.acquire(folder)  # a new folder: nobody else can hold it yet
            life.call = Call(folder, command_line(argv), args.experiment, runs, reference, args.tracking_uri,
                             name=f"{'calibrate' if args.calibrate else args.grid or runs[0].label} {folder.name}",
                             calibrate=args.calibrate)
            if life.rank == 0:
                life.call.save()
        return run_call(life, datasets, uri, parallel=args.parallel)

    return CallLifecycle().run(start)


def resume(args, given: set[str]) -> int:
    """Finish a call: skip its FINISHED runs, resume those with a last.pth, start the rest; then report."""
    from experiments.data import DataError, build_datasets
    from workbench.tracking import TrackingError, check_tracking_uri, unwritable_folder

    lock = None
    try:
        call = Call.load(find_call_folder(args.resume, args.output, args.tracking_uri))
        problem = unwritable_folder(call.folder)
        if problem:
            raise UsageError(f"the call folder {call.folder} cannot be written ({problem}): make it writable, or "
                             "copy the output folder somewhere writable and resume the copy")
        if _rank_from_environment() == 0:  # before the call's state is read: nobody else may change it meanwhile
            lock = CallLock.acquire(call.folder)
        changes = resume_changes(args, given, call)
        call.runs = [PlannedRun(r.label, r.seed, r.model, r.train.replace(**changes), r.folder, r.tags)
                     for r in call.runs]
        if args.tracking_uri:
            call.tracking_uri = args.tracking_uri
        uri = call.resolved_tracking_uri()
        check_tracking_uri(uri)
        check_parent_exists(call, uri)
        first = call.runs[0].train
        datasets = build_datasets(first.dataset, first.data_dir, first.img_size, first.train_size, first.val_size,
                                  seed=first.data_seed, verify=True)
        for run in call.runs:
            check_resumable(call, run)
        check_parallel(args.parallel)
    except (UsageError, CallError, DataError, TrackingError, ValueError) as exc:
        if lock is not None:
            lock.release()
        return fail(PROG, str(exc))

    def start(life: CallLifecycle) -> int:
        life.call, life.lock = call, lock
        if life.rank == 0:
            call.save()  # the applied changes become part of the plan
            done = sum(not call.needs_training(r) for r in call.runs)
            print(f"resuming {call.folder}: {done} of {len(call.runs)} runs finished"
                  + (f"; changed: {', '.join(f'{k}={v}' for k, v in changes.items())}" if changes else ""),
                  file=sys.stderr)
        return run_call(life, datasets, uri, changes=changes, parallel=args.parallel)

    return CallLifecycle().run(start)


def check_parent_exists(call: Call, uri: str) -> None:
    """The store a call recorded its parent in still holds it: else resuming would make a new, empty store (a
    moved output folder without its mlflow.db) or fail after training started."""
    if call.parent_run_id is None:
        return
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from workbench.tracking import mask_secrets, sqlite_path, sqlite_store_problem

    path = sqlite_path(uri)
    problem = sqlite_store_problem(path) if path is not None else None
    if problem:
        raise UsageError(f"the call's MLflow store is gone ({problem}): restore it beside the call's output folder, "
                         "or pass --tracking-uri of the store that holds its parent run")
    try:
        MlflowClient(tracking_uri=uri).get_run(call.parent_run_id)
    except MlflowException:
        raise UsageError(f"the MLflow store {mask_secrets(uri)} holds no run {call.parent_run_id} (the call's parent): "
                         "pass --tracking-uri of the store that holds it") from None


def check_parallel(parallel: int | str) -> None:
    if parallel == "auto":
        return
    if parallel < 1:
        raise UsageError(f"--parallel must be >= 1, got {parallel}")
    if parallel > 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("--parallel trains runs side by side in one process each: drop it under torchrun")


def resume_changes(args, given: set[str], call: Call) -> dict:
    """The TrainConfig changes --resume applies; a flag it cannot honour is refused, naming the flag."""
    planned = call.runs[0].train
    changes = {}
    for name in sorted(given - set(RESUME_LOCATORS)):
        flag = "--" + name.replace("_", "-")
        if name in RESUME_MAY_CHANGE:
            if getattr(args, name) != getattr(planned, name):
                changes[name] = getattr(args, name)
        elif name not in TrainConfig.__dataclass_fields__ or getattr(args, name) != getattr(planned, name):
            raise UsageError(f"{flag} cannot change when resuming: the call's runs were planned with it (resume may "
                             f"change {', '.join('--' + n.replace('_', '-') for n in RESUME_MAY_CHANGE)}); drop "
                             f"{flag} or start a new call")
    planned.replace(**changes)  # validates the changed values
    return changes


def check_resumable(call: Call, run: PlannedRun) -> None:
    """Refuse, before training, a run whose last.pth cannot continue it (damaged, foreign, other configuration)."""
    from experiments.checkpoint import CheckpointError, check_resumable_checkpoint

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


def worker_layout(parallel: int | str, to_train: int, threads: int, device: str, world: int) -> tuple[int, int]:
    """(processes, threads per process) for the call's unfinished runs. auto: one single-thread process per
    available thread, no more than there are runs (one process on a GPU, under torchrun, or with one thread):
    each run's numbers then depend only on its own thread count, which every run records (env.torch_threads)."""
    if parallel == "auto":
        import torch

        on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        parallel = 1 if on_gpu or world > 1 else min(max(to_train, 1), threads)
    processes = max(1, min(parallel, max(to_train, 1)))
    return processes, max(1, threads // processes)


class CallLifecycle:
    """Owns every exit of a call, from before its folder or first run exists until its parent run is closed.

    For that whole span SIGINT raises KeyboardInterrupt and SIGTERM/SIGHUP raise RunInterrupted (start-up, cost
    measurement, between runs, after the last epoch, the summary). Whatever ends the call (success, a stop, an
    error, a full disk), every MLflow run this process opened is left FINISHED, FAILED or KILLED with the reason,
    temporary files are removed, and one line on stderr says how to go on. The handlers of a stop or an error run
    with further stops deferred, and cannot themselves fail.
    """

    def __init__(self):
        self.call: Call | None = None
        self.tracker = None  # workbench.tracking.Tracker, once made (rank 0)
        self.lock: CallLock | None = None  # held by rank 0 until the call ends
        self.rank, self.world = 0, 1

    def run(self, start) -> int:
        """`start(self)`: make or load the call (setting `self.call`), train it, return the exit code."""
        from experiments.run import RunInterrupted, stop_signals, stops_deferred

        try:
            with stop_signals():
                try:
                    self.rank, self.world = _init_distributed()
                    if self.rank != 0:  # only rank 0 reports
                        logging.getLogger("sepvit").setLevel(logging.WARNING)
                    return start(self)
                except (KeyboardInterrupt, RunInterrupted) as exc:
                    with stops_deferred(self._again):
                        return self._stopped(exc)
                except Exception as exc:  # a failure nobody foresaw
                    with stops_deferred(self._again):
                        return self._failed(exc)
        finally:
            if self.call is not None and self.rank == 0:
                remove_temporary_files(self.call.folder)
            if self.lock is not None:
                self.lock.release()
            _shutdown_distributed(self.world)

    def _again(self, name: str) -> None:
        print(f"{PROG}: {name} received while the call's runs are being closed: closing them first", file=sys.stderr)

    def _way_out(self) -> str:
        return f"resume with: python experiments/ablate.py --resume {self.call.folder}"

    def _unfinished(self) -> list[str]:
        try:
            return [r.name for r in self.call.runs if self.call.needs_training(r)]
        except (OSError, ValueError):  # a result.json that cannot be read: resume decides
            return [r.name for r in self.call.runs]

    def _stopped(self, exc: BaseException) -> int:
        from experiments.run import stop_exit_code, stop_name

        how = stop_name(exc)
        if self.call is None:
            print(f"{PROG}: interrupted ({how}) before the call began; nothing was recorded", file=sys.stderr)
            return stop_exit_code(exc)
        unfinished = self._unfinished()
        reason = (f"interrupted ({how}); unfinished: {', '.join(unfinished)}; {self._way_out()}" if unfinished else
                  f"interrupted ({how}) while the call's summary was written; every run finished; {self._way_out()}")
        self._close_runs("KILLED", reason)
        print(f"{PROG}: {reason}", file=sys.stderr)
        return stop_exit_code(exc)

    def _failed(self, exc: BaseException) -> int:
        from workbench.tracking import is_disk_full

        first = _first_line(exc)
        if self.call is None:
            print(f"{PROG}: {first}; nothing was recorded", file=sys.stderr)
            return EXIT_RUN_FAILED
        if is_disk_full(exc):
            reason = f"no space left on device ({first}): free space, then {self._way_out()}"
            self._close_runs("FAILED", reason)
            print(f"{PROG}: {reason}", file=sys.stderr)
            return EXIT_RUN_FAILED
        self._close_runs("FAILED", first)
        where = _write_error_log(self.call.folder, traceback.format_exc())
        print(f"{PROG}: {first} ({where}); {self._way_out()}", file=sys.stderr)
        return EXIT_RUN_FAILED

    def _close_runs(self, status: str, reason: str) -> None:
        if self.tracker is None:
            return
        for run_id in self.tracker.close_open_runs(status, reason):
            print(f"{PROG}: the MLflow run {run_id} could not be marked {status}: the next --resume repairs it",
                  file=sys.stderr)


def _first_line(exc: BaseException) -> str:
    from workbench.tracking import mask_secrets

    text = mask_secrets(str(exc)).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _write_error_log(folder: Path, text: str) -> str:
    """The traceback (passwords in URLs masked) in `<call>/error.log`; where it went, in words. Never raises (a
    full disk, a read-only folder: then it says so)."""
    from workbench.tracking import mask_secrets

    try:
        (folder / "error.log").write_text(mask_secrets(text))
        return f"traceback in {folder / 'error.log'}"
    except OSError as exc:
        return f"the traceback could not be written: {exc.strerror or exc}"


def run_call(life: CallLifecycle, datasets, uri: str, changes: dict | None = None, parallel: int | str = 1) -> int:
    """Train every unfinished planned run under one MLflow parent; report; close the parent as its children ended.
    Every exit is `life`'s."""
    from experiments import executor

    import torch

    call, rank, world = life.call, life.rank, life.world
    tracker = None
    if rank == 0:
        from workbench.tracking import Tracker, mask_secrets

        tracker = life.tracker = Tracker(uri, call.experiment,
                                         artifact_root=None if call.tracking_uri else call.output / "mlartifacts")
        _open_parent(tracker, call)
        print(f"MLflow: {mask_secrets(uri)} experiment {call.experiment!r}, parent run {call.parent_run_id}; call "
              f"folder {call.folder}", file=sys.stderr)
        completed = complete_finished_records(call, tracker)
        if completed:
            print(f"completed the MLflow record of {', '.join(completed)}: training had finished, the record had not",
                  file=sys.stderr)
    to_train = sum(call.needs_training(r) for r in call.runs)
    processes, threads = worker_layout(parallel, to_train, torch.get_num_threads(), call.runs[0].train.device, world)
    if processes > 1:
        print(f"training {to_train} runs, {processes} at a time, {threads} thread(s) each (--parallel 1: one after "
              "another on every thread)", file=sys.stderr)
        results = executor.train_in_parallel(call, uri, changes or {}, processes, threads)
    else:
        results = executor.train_in_sequence(call, datasets, tracker, tracker is not None or world == 1, changes or {})
    if rank == 0:
        report_results(results, tracker, call, datasets[2])
    return 0 if all(r.status == "FINISHED" for r in results) else EXIT_RUN_FAILED


def complete_finished_records(call: Call, tracker) -> list[str]:
    """Resume reconciles the two stores: a run whose result.json says FINISHED but whose MLflow record does not
    (stopped while its results were recorded) gets its record completed. Returns the runs' names."""
    from experiments.run import Result, complete_record

    completed = []
    for run in call.runs:
        result = call.result_of(run)
        if call.needs_training(run) or not result.get("run_id") or tracker.run_status(result["run_id"]) == "FINISHED":
            continue
        complete_record(tracker, Result.from_dict(result, call.run_dir(run)))
        completed.append(run.name)
    return completed


def _open_parent(tracker, call: Call) -> None:
    from workbench.tracking import signals_held

    if call.parent_run_id is not None:
        tracker.reopen_run(call.parent_run_id)
        return
    labels = list(dict.fromkeys(r.label for r in call.runs))
    with signals_held():  # the parent exists and call.json names it, or neither
        call.parent_run_id = tracker.start_run(call.name, tags={
            "kind": "parent", "command": call.command, "configs": "; ".join(labels),
            "seeds": str(len(call.runs) // max(len(labels), 1)), "planned_runs": str(len(call.runs)),
            "call_folder": str(call.folder.relative_to(call.output))})
        call.save()
    tracker.log_text(call.parent_run_id, (call.folder / "call.json").read_text(), "call.json")  # masked copy


def report_results(results, tracker, call: Call, info) -> None:
    """The end-of-call table on stdout, also logged to the parent run (csv + markdown); closes the parent."""
    from experiments.report import call_report

    from experiments.call_costs import interleaved_costs

    finished = [r for r in results if r.status == "FINISHED"]
    configs = {r.label: r.model for r in call.runs}
    costs = interleaved_costs({label: configs[label] for label in dict.fromkeys(
        r.run_name.rsplit(" seed", 1)[0] for r in finished)}, call.runs[0].train.batch_size) if finished else None
    text, markdown, files, summary_rows = call_report(results, call.reference, num_classes=info.num_classes,
                                                      val_size=info.val_size, costs=costs)
    if call.calibrate:
        from experiments.calibration import calibrate, format_calibration
        from experiments.report import results_frame

        curves = {r.run_id: [h[r.metric] for h in r.history] for r in finished}
        cal = calibrate(results_frame(results, call.reference), curves, call.reference, info.num_classes)
        text += "\n\n" + format_calibration(cal)
        markdown += "\n\n## Calibration\n\n" + format_calibration(cal, markdown=True)
        files.append(("calibration.json", json.dumps(cal, indent=1, default=float)))
        (call.folder / "calibration.json").write_text(files[-1][1])
    print(text)
    if tracker is not None:
        tracker.log_files(call.parent_run_id, [*files, ("summary.md", markdown)])
        tracker.log_call_summary(call.parent_run_id, summary_rows)
        unfinished = [r.run_name + f" ({r.status})" for r in results if r.status != "FINISHED"]
        tracker.end_run(call.parent_run_id, "FAILED" if unfinished else "FINISHED",
                        f"{len(unfinished)} of {len(results)} runs did not finish: " + "; ".join(unfinished)
                        if unfinished else None)


# ---------------------------------------------------------------------------------- distributed
def _rank_from_environment() -> int:
    """This process's rank under torchrun (0 otherwise), before the process group exists."""
    return int(os.environ.get("RANK", "0"))


def _init_distributed() -> tuple[int, int]:
    """Under torchrun: join the process group (NCCL on GPU, gloo on CPU). Returns (rank, world size)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def _shared(value, world: int):
    """Rank 0's `value` on every rank."""
    if world == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _shutdown_distributed(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
