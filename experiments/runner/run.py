"""One training run's lifecycle around the engine: resume, checkpoint policy, MLflow, signals.

    result = train_and_evaluate(PlannedRun.of(model_cfg, train_cfg, "no-gsa seed0"), RunContext(tracker=tracker))

A call (`experiments.runner.run_call`) trains each of its planned runs with it, and the Optuna search each trial
(with an `on_epoch_end` callback that reports to the trial and returns True to prune).

Checkpoints (`run_dir`): `last.pth` (every `checkpoint_every` epochs and the last; everything to resume: model,
EMA, optimiser, schedule, configs, epoch, history, MLflow ids) and `best.pth` (the reported weights of the best
epoch, with `weights` = "ema" or "raw"; moved into the MLflow run's artifacts when the run finishes, so it is
stored once). A NaN loss ends the run FAILED with the last good `last.pth` kept; Ctrl-C, SIGTERM and SIGHUP save
`interrupted.pth`, mark the MLflow run KILLED and re-raise; any other error marks it FAILED and re-raises. Outside
the epochs too (start-up, cost, recording the finished run) the run's MLflow record is closed before anything
propagates, so no run is left RUNNING by whatever stops it.

MLflow: a run records its configuration, the dataset as inputs (training and validation, described by metadata),
per-epoch metrics, and when it finishes its best weights twice: the raw checkpoint (`checkpoint/best.pth`, loaded
with `weights_only=True` by `experiments.runner.checkpoint.load_model`) and an MLflow logged model
(`mlflow.pytorch.load_model("models:/<id>")`, the Models column), which carries the same `pretrained_cfg`.

The reported accuracy (one rule, used by every table): `val_top1` of the raw weights, or `val_top1_ema` of the
EMA weights when the run keeps an EMA (`--model-ema`), as timm's train.py reports it. Both are logged per epoch on
the per-epoch validation images; after the last epoch the final weights are scored on the final validation images
(`TrainConfig.final_val_size`: 10000 for a generated dataset by default) and that score is the run's top-1
(`Result.final`, MLflow `final_val_top1` with `final_val_images`).
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from sepvit.config import SepViTConfig
from workbench.provenance import environment_params, pip_requirements
from workbench.tracking import STOP_SIGNALS, flatten, is_disk_full, mask_secrets, signals_held

from analysis.counters import count_params, explicit_attention_copy, fvcore_count
from experiments.data import build_datasets_for, final_val_images, generated_validation_set
from experiments.report import learning_curve_figure
from experiments.runner import engine
from experiments.runner.calls import RESULT_FILE, RUN_RECORD, PlannedRun, write_json
from experiments.runner.checkpoint import (data_pretrained_cfg, dataset_label_names, load_checkpoint, load_model,
                                           save_checkpoint, unsound_weights)
from experiments.train_config import TrainConfig

log = logging.getLogger("sepvit.run")

EpochCallback = Callable[[int, dict[str, float]], "bool | None"]
# what loading a logged model needs: the model package and the libraries its modules import
MODEL_DISTRIBUTIONS = ("torch", "torchvision", "timm", "sepvit-workbench")


class RunInterrupted(BaseException):
    """SIGTERM or SIGHUP, turned into an exception so that the run is checkpointed and marked KILLED. The message
    is "signal N" (the search reads N from it)."""

    def __init__(self, message: str = "", signum: int = signal.SIGTERM):
        super().__init__(message or f"signal {int(signum)}")
        self.signum = int(signum)


def stop_name(exc: BaseException) -> str:
    """How a run was stopped, in words: "Ctrl-C" or the signal's name (SIGTERM, SIGHUP)."""
    if isinstance(exc, RunInterrupted):
        try:
            return signal.Signals(exc.signum).name
        except ValueError:
            return f"signal {exc.signum}"
    return "Ctrl-C"


def stop_exit_code(exc: BaseException) -> int:
    """The exit code a shell expects of a process ended by this stop: 128 + the signal's number (Ctrl-C: 130)."""
    return 128 + (exc.signum if isinstance(exc, RunInterrupted) else signal.SIGINT)


def reported_metric(train_cfg: TrainConfig) -> str:
    """The per-epoch metric a run reports as its top-1: the EMA's when it keeps one, else the raw weights'."""
    return "val_top1_ema" if train_cfg.model_ema else "val_top1"


@dataclass
class Result:
    """What one training run produced. Accuracies are percentages; `history` holds one dict per epoch."""

    run_name: str
    status: str  # FINISHED, FAILED or KILLED (MLflow's words)
    model_cfg: SepViTConfig
    train_cfg: TrainConfig
    history: list[dict[str, float]] = field(default_factory=list)
    reason: str | None = None
    run_id: str | None = None
    run_dir: Path | None = None
    best: dict[str, float] = field(default_factory=lambda: {"top1": -1.0, "epoch": 0})
    cost: dict[str, float] = field(default_factory=dict)  # params, macs, latency_ms
    stopped_early: bool = False
    pretrained_cfg: dict[str, Any] = field(default_factory=dict)  # how the data reach the model; in checkpoints
    logged_epochs: set[int] = field(default_factory=set)  # epochs the MLflow record already holds (not relogged)
    last_good_epoch: int | None = None  # the epoch of the run's last.pth (sound weights, finite loss)
    # the final weights scored on more validation images (TrainConfig.final_val_size): "images", "epoch" and the
    # validation metrics (val_top1, ..., with the EMA's as *_ema); empty: not scored, the last epoch's score stands
    final: dict[str, float] = field(default_factory=dict)

    @property
    def metric(self) -> str:
        return reported_metric(self.train_cfg)

    @property
    def top1(self) -> float:
        """The reported top-1 of the final weights (less optimistic than the best epoch): on the final validation
        images when the run was scored on them, else on the last epoch's."""
        if self.final:
            return self.final[self.metric]
        return self.history[-1][self.metric] if self.history else float("nan")

    @property
    def top5(self) -> float:
        source = self.final or (self.history[-1] if self.history else {})
        return source.get(self.metric.replace("top1", "top5"), float("nan"))

    @property
    def scored_images(self) -> int | None:
        """How many validation images `top1` is measured on (None: the per-epoch set, of the dataset's size)."""
        return int(self.final["images"]) if self.final else None

    @property
    def best_top1(self) -> float:
        return self.best["top1"] if self.history else float("nan")

    @property
    def img_per_s(self) -> float:
        values = [h["img_per_s"] for h in self.history]
        return float(np.median(values)) if values else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """What `result.json` holds (the call's record of how the run ended)."""
        return {"run_name": self.run_name, "status": self.status, "reason": self.reason, "run_id": self.run_id,
                "model": self.model_cfg.to_dict(), "train": self.train_cfg.to_dict(), "history": self.history,
                "best": self.best, "cost": self.cost, "stopped_early": self.stopped_early, "final": self.final}

    @classmethod
    def from_dict(cls, data: dict[str, Any], run_dir: Path) -> "Result":
        return cls(data["run_name"], data["status"], SepViTConfig.from_dict(data["model"]),
                   TrainConfig.from_dict(data["train"]), list(data["history"]), data.get("reason"), data.get("run_id"),
                   Path(run_dir), dict(data["best"]), dict(data.get("cost", {})), bool(data.get("stopped_early")),
                   final=dict(data.get("final") or {}))


# ---------------------------------------------------------------------------------- cost
def model_cost(model_cfg: SepViTConfig, repeats: int = 10) -> dict[str, float]:
    """Parameters, MACs (fvcore on an explicit-attention copy, batch 1; multiply-add = 1) and batch-1 latency (ms).

    Cached per configuration: the seeds of one configuration share one measurement.
    """
    return dict(_model_cost(json.dumps(model_cfg.to_dict(), sort_keys=True), repeats))


@functools.lru_cache(maxsize=64)
def _model_cost(cfg_json: str, repeats: int) -> tuple:
    cfg = SepViTConfig.from_dict(json.loads(cfg_json))
    with torch.random.fork_rng():  # measuring must not move the training RNG
        model = cfg.build().eval()
        x = torch.randn(1, cfg.in_chans, cfg.img_size, cfg.img_size)
        macs = fvcore_count(explicit_attention_copy(model), x).total
        times = []
        with torch.inference_mode():
            for i in range(repeats + 3):
                start = time.perf_counter()
                model(x)
                if i >= 3:  # warm-up
                    times.append(time.perf_counter() - start)
    return tuple({"params": count_params(model), "macs": macs, "latency_ms": 1000 * float(np.median(times))}.items())


# ---------------------------------------------------------------------------------- checkpoints
def _resume_state(parts: engine.Parts, ckpt: dict[str, Any]) -> None:
    parts.model.load_state_dict(ckpt["model"])
    parts.optimizer.load_state_dict(ckpt["optimizer"])  # the schedule is rebuilt from the config, not loaded
    if parts.ema is not None and ckpt.get("ema") is not None:
        parts.ema.load_state_dict(ckpt["ema"])


def _last_state(parts: engine.Parts, result: Result, parent_run_id: str | None, epoch: int) -> dict[str, Any]:
    return {"model": parts.model.state_dict(), "optimizer": parts.optimizer.state_dict(),
            "ema": parts.ema.state_dict() if parts.ema is not None else None,
            "config": result.model_cfg.to_dict(), "train_config": result.train_cfg.to_dict(), "epoch": epoch,
            "history": result.history, "best": result.best, "run_id": result.run_id,
            "parent_run_id": parent_run_id, "run_name": result.run_name, "pretrained_cfg": result.pretrained_cfg}


def _save_best(parts: engine.Parts, result: Result, metrics: dict[str, float]) -> None:
    weights = parts.ema.module if parts.ema is not None else parts.model
    save_checkpoint({"model": weights.state_dict(), "weights": "ema" if parts.ema is not None else "raw",
                     "config": result.model_cfg.to_dict(), "train_config": result.train_cfg.to_dict(),
                     "epoch": int(metrics["epoch"]), "metrics": metrics, "pretrained_cfg": result.pretrained_cfg},
                    result.run_dir / "best.pth")


# ---------------------------------------------------------------------------------- MLflow
def _open_mlflow(tracker, result: Result, info, parent_run_id, tags, resumed: bool,
                 reuse: str | None = None) -> set[int]:
    """Open (or reopen) the run's MLflow record; sets `result.run_id` as soon as the run exists and records it in
    the run folder. `reuse`: the record of an earlier start of this run that never reached a checkpoint, reopened
    instead of a second run of the same name. Returns the epochs the record already holds."""
    if resumed:
        tracker.reopen_run(result.run_id)
        logged = tracker.logged_steps(result.run_id, "val_top1")
        for metrics in result.history:  # epochs checkpointed before a crash but never logged
            if int(metrics["epoch"]) not in logged:
                tracker.log_metrics(result.run_id, _epoch_metrics(metrics), step=int(metrics["epoch"]))
        return logged | {int(m["epoch"]) for m in result.history}
    data = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(info).items()}
    params = {**flatten(result.model_cfg.to_dict(), "model."), **flatten(result.train_cfg.to_dict(), "train."),
              **flatten(data, "data."), **environment_params()}
    if reuse is not None:
        tracker.reopen_run(reuse)
        result.run_id = reuse
        before = tracker.client.get_run(reuse)
        changed = {f"resume.{k}": f"{before.data.params[k]} -> {v}" for k, v in params.items()
                   if k in before.data.params and before.data.params[k] != str(v)}
        tracker.log_params(reuse, {k: v for k, v in params.items() if k not in before.data.params})
        tracker.set_tags(reuse, changed)  # MLflow keeps a param's first value: a change is said in a tag
        if not before.inputs.dataset_inputs:
            tracker.log_datasets(reuse, _dataset_inputs(info, result.train_cfg))
        tracker.log_json(reuse, {"model": result.model_cfg.to_dict(), "train": result.train_cfg.to_dict(),
                                 "data": data}, "config.json")
        return tracker.logged_steps(reuse, "val_top1")
    with signals_held():  # the record exists and its id is in the run folder, or neither
        run_id = result.run_id = tracker.start_run(
            result.run_name, parent_run_id=parent_run_id,
            tags={"kind": "train", "reported_metric": result.metric, **(tags or {})})
        result.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(result.run_dir / RUN_RECORD, {"run_id": run_id})
    tracker.log_params(run_id, params)
    tracker.log_json(run_id, {"model": result.model_cfg.to_dict(), "train": result.train_cfg.to_dict(),
                              "data": data}, "config.json")
    tracker.log_datasets(run_id, _dataset_inputs(info, result.train_cfg))
    return set()


def _dataset_inputs(info, train_cfg: TrainConfig) -> list[dict[str, Any]]:
    """The training, validation and final validation sets as MLflow dataset inputs: what defines them (name,
    description, seed, folder, size, normalisation), so equal data give equal digests; the images are not read."""
    about = {"dataset": info.name, "description": info.description, "img_size": info.img_size,
             "in_chans": info.in_chans, "num_classes": info.num_classes, "mean": list(info.mean),
             "std": list(info.std), "data_seed": train_cfg.data_seed,
             "data_dir": str(Path(train_cfg.data_dir).expanduser().resolve()) if train_cfg.data_dir else None}
    shape = (info.in_chans, info.img_size, info.img_size)
    sets = [("train", info.train_size, "training"), ("val", info.val_size, "validation")]
    final = final_val_images(train_cfg)
    if final:  # the images the reported top-1 is on: the per-epoch ones and more of the same split
        sets.append(("val-final", final, "final validation"))
    return [{"name": f"{info.name}-{split}", "size": size, "context": context, "shape": shape,
             "metadata": {**about, "split": split}} for split, size, context in sets]


def _epoch_metrics(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k != "epoch"}


def complete_record(tracker, result: Result) -> None:
    """The MLflow record of a run that finished training (its result.json says so) but whose record was not
    closed FINISHED (the process was stopped while recording it): reopened and completed (metrics, artifacts,
    status). What was recorded already is not recorded twice."""
    tracker.reopen_run(result.run_id)
    _finish_mlflow(tracker, result)


def _finish_mlflow(tracker, result: Result) -> None:
    run_id = result.run_id
    if result.history:
        last = result.history[-1]
        if int(last["epoch"]) not in tracker.logged_steps(run_id, "final_val_top1"):
            scored = {"final_val_images": result.final["images"]} if result.final else {}
            tracker.log_metrics(run_id, {"final_val_top1": result.top1, "final_val_top5": result.top5, **scored,
                                         "best_val_top1": result.best["top1"], "best_epoch": result.best["epoch"]},
                                step=int(last["epoch"]))
        figure = learning_curve_figure(result.history, result.run_dir / "learning_curve.png", title=result.run_name,
                                       metric=result.metric)
        tracker.log_artifact(run_id, figure)
    best = result.run_dir / "best.pth"
    if best.is_file() and result.status == "FINISHED":
        tracker.log_artifact(run_id, best, "checkpoint")
        _log_best_model(tracker, result, best)
        best.unlink()  # stored once: in the run's artifacts
    if result.stopped_early:
        tracker.set_tags(run_id, {"stopped_early": "true"})
    tracker.end_run(run_id, result.status, result.reason)


def _log_best_model(tracker, result: Result, best: Path) -> None:
    """The best weights as an MLflow logged model. The raw checkpoint is already stored, so a failure here costs
    only the convenience copy: it is logged and tagged on the run, and the run's result stands."""
    start = time.perf_counter()
    try:
        model = load_model(best)
        # one normalised-scale image; its own generator leaves the training RNG untouched
        example = torch.randn(1, *model.pretrained_cfg["input_size"], generator=torch.Generator().manual_seed(0))
        uri = tracker.log_pytorch_model(result.run_id, model, example, pip_requirements(MODEL_DISTRIBUTIONS))
    except Exception as exc:  # noqa: BLE001  (MLflow and pickling raise assorted types)
        log.error("%s: the best model was not logged as an MLflow model (%s: %s); its checkpoint is stored",
                  result.run_name, type(exc).__name__, exc)
        tracker.set_tags(result.run_id, {"logged_model_error": f"{type(exc).__name__}: {exc}"[:5000]})
        return
    log.info("%s: best model logged as %s (%.1f s)", result.run_name, uri, time.perf_counter() - start)


# ---------------------------------------------------------------------------------- signals
def raise_interrupted(signum, frame):
    """A signal handler: SIGTERM/SIGHUP as RunInterrupted."""
    raise RunInterrupted(signum=signum)


@contextlib.contextmanager
def stop_signals(handler: Callable = raise_interrupted):
    """Inside: SIGTERM and SIGHUP call `handler` (default: raise RunInterrupted) and SIGINT raises
    KeyboardInterrupt, so that whatever is open is checkpointed and closed by the code that handles them; the
    previous handlers are restored on exit. Only the main thread can set handlers: elsewhere (a search worker
    thread) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else handler)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


@contextlib.contextmanager
def stops_deferred(note: Callable[[str], None] | None = None):
    """Inside: a stop signal is noted (`note(name)`), not raised: the code that is already closing runs after a
    stop or an error finishes, instead of being cut short by a second Ctrl-C. Previous handlers restored on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def deferred(signum, frame):
        if note is not None:
            note(signal.Signals(signum).name)

    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        signal.signal(sig, deferred)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


# ---------------------------------------------------------------------------------- the run
@dataclass
class RunContext:
    """Where and with what one planned run trains: everything about it that is not its plan."""

    run_dir: Path | None = None  # its folder; None: <train.output>/<run name>
    tracker: Any = None  # a workbench.tracking.Tracker (rank 0 logs to it), or None: no MLflow
    datasets: tuple | None = None  # (train, val, DataInfo) built once for many runs; None: built for this run
    parent_run_id: str | None = None
    # on_epoch_end(epoch, metrics): after each epoch, on every rank; True stops the run early (it ends FINISHED,
    # tagged stopped_early=true)
    on_epoch_end: EpochCallback | None = None
    # a last.pth to continue: configs, epoch, history and MLflow ids come from it (loaded once), with
    # `resume_changes` (TrainConfig fields a resume may change, e.g. epochs, lr) applied and recorded
    resume_from: Path | None = None
    resume_changes: dict[str, Any] | None = None
    # MACs/latency known already (the search: analytic MACs, latency once per architecture), logged instead of
    # `model_cost`'s fvcore trace and timing; the parameter count is always taken from the model
    cost: dict[str, float] | None = None
    # the MLflow run of an earlier start of this run that ended before its first checkpoint: reopened (the run
    # starts again from epoch 1 under the same record) instead of a second run of the same name
    reuse_run_id: str | None = None


def train_and_evaluate(run: PlannedRun, context: RunContext | None = None) -> Result:
    """Train the planned run's model with its training configuration, evaluating every epoch; return a `Result`.

    Whatever ends the run, its MLflow record (if `context.tracker`) is closed with the reason and its
    `result.json` written before this returns or re-raises (module docstring)."""
    context = context or RunContext()
    model_cfg, train_cfg, run_name, run_dir = run.model, run.train, run.name, context.run_dir
    parent_run_id, ckpt = context.parent_run_id, None
    if context.resume_from is not None:
        ckpt = load_checkpoint(context.resume_from, required=("model", "optimizer", "config", "train_config",
                                                              "epoch", "history", "best", "run_name"))
        model_cfg = SepViTConfig.from_dict(ckpt["config"])
        train_cfg = TrainConfig.from_dict({**ckpt["train_config"], **(context.resume_changes or {})})
        run_name, run_dir = ckpt["run_name"], Path(context.resume_from).parent  # the folder may have moved since
        parent_run_id = parent_run_id or ckpt["parent_run_id"]
    datasets = context.datasets
    if datasets is None:
        datasets = build_datasets_for(train_cfg, img_size=train_cfg.img_size or model_cfg.img_size)
    parts = engine.build_parts(model_cfg, train_cfg, datasets)
    result = Result(run_name, "RUNNING", engine.fit_model_to_data(model_cfg, datasets[2]), train_cfg,
                    run_dir=Path(run_dir) if run_dir is not None else Path(train_cfg.output) / run_name,
                    pretrained_cfg=data_pretrained_cfg(datasets[2], dataset_label_names(datasets[1])))
    if ckpt is not None:
        _resume_state(parts, ckpt)
        result.history, result.best, result.run_id = list(ckpt["history"]), dict(ckpt["best"]), ckpt["run_id"]
        result.last_good_epoch = int(ckpt["epoch"])
    tracker = context.tracker if parts.rank == 0 else None
    with stop_signals():
        try:
            logged: set[int] = set()
            if tracker is not None:
                logged = _open_mlflow(tracker, result, datasets[2], parent_run_id, run.tags,
                                      resumed=result.run_id is not None, reuse=context.reuse_run_id)
                if context.resume_changes:
                    tracker.set_tags(result.run_id, {f"resume.{k}": f"{ckpt['train_config'][k]} -> {v}"
                                                     for k, v in context.resume_changes.items()})
            if parts.rank == 0:
                _record_cost(parts, result, tracker, context.cost)
            start = int(ckpt["epoch"]) + 1 if ckpt is not None else 1
            result.logged_epochs = logged
            _run_epochs(parts, result, tracker, parent_run_id, context.on_epoch_end, start)
            if tracker is not None:
                _finish_mlflow(tracker, result)
        except BaseException as exc:
            _close_unfinished(tracker, result, exc)
            raise
    return result


def _record_cost(parts: engine.Parts, result: Result, tracker, known: dict[str, float] | None) -> None:
    """The run's parameters, MACs and latency (measured, or `known`), logged once as step-0 metrics."""
    if known is None:
        result.cost = model_cost(result.model_cfg)
    else:
        result.cost = {"params": count_params(parts.model), **known}
    if tracker is not None and 0 not in tracker.logged_steps(result.run_id, "params"):
        tracker.log_metrics(result.run_id, result.cost, step=0)


def _close_unfinished(tracker, result: Result, exc: BaseException) -> None:
    """The run's MLflow record, if still open when `exc` ends the run outside its epochs (start-up, cost, or the
    recording of a finished run): KILLED for a stop, FAILED for an error, with the reason. Never raises."""
    if tracker is None or not tracker.is_open(result.run_id):
        return
    where = ("after its last epoch, while its results were recorded (--resume completes the record)"
             if result.status == "FINISHED" else "before its epochs began")
    if isinstance(exc, (KeyboardInterrupt, RunInterrupted)):
        status, reason = "KILLED", f"interrupted ({stop_name(exc)}) {where}; resume with --resume {result.run_dir.parent}"
    else:
        status, reason = "FAILED", _failure_reason(exc)
    tracker.close_run(result.run_id, status, reason)


def _failure_reason(exc: BaseException) -> str:
    text = mask_secrets(f"{type(exc).__name__}: {exc}")
    return f"no space left on device ({text}): free space, then resume" if is_disk_full(exc) else text


def _run_epochs(parts, result: Result, tracker, parent_run_id, on_epoch_end, start: int) -> None:
    """The epoch loop with its failure policy (see the module docstring); sets result.status and writes
    `result.json` however the run ends."""
    cfg, epoch, scoring = result.train_cfg, start, False
    try:
        for epoch in range(start, cfg.epochs + 1):
            metrics = _one_epoch(parts, result, tracker, parent_run_id, epoch)
            if on_epoch_end is not None and on_epoch_end(epoch, dict(metrics)):
                result.stopped_early = True
                break
        images = final_val_images(cfg)
        if images and result.history and not result.stopped_early:
            scoring = True
            _score_final(parts, result, images)
        result.status = "FINISHED"
    except engine.NonFiniteLoss as exc:
        result.status, result.reason = "FAILED", f"{exc}; {_last_good(result)}"
        log.error("%s: %s", result.run_name, result.reason)
    except (KeyboardInterrupt, RunInterrupted) as exc:
        during = "the scoring of its final weights" if scoring else f"epoch {epoch}"
        result.status, result.reason = "KILLED", f"interrupted during {during} ({stop_name(exc)})"
        if not scoring:  # last.pth already holds the final weights
            _save_interrupted(parts, result, parent_run_id, epoch)
        if tracker is not None:
            tracker.close_run(result.run_id, "KILLED", f"{result.reason}; resume with --resume {result.run_dir.parent}")
        raise
    except Exception as exc:
        result.status, result.reason = "FAILED", _failure_reason(exc)
        if scoring:
            result.reason = f"while scoring its final weights (--resume scores them without training): {result.reason}"
        if not is_disk_full(exc) and not scoring:  # a full disk would not take the extra checkpoint either
            _save_interrupted(parts, result, parent_run_id, epoch)
        if tracker is not None:
            tracker.close_run(result.run_id, "FAILED", result.reason)
        raise
    finally:
        if parts.rank == 0:
            _write_result(result, quiet=sys.exc_info()[1] is not None)


def _last_good(result: Result) -> str:
    if result.last_good_epoch is None:
        return "no good checkpoint yet: --resume starts the run again from epoch 1"
    return f"last good checkpoint: {result.run_dir / 'last.pth'} (epoch {result.last_good_epoch})"


def _write_result(result: Result, quiet: bool) -> None:
    """result.json, however the run ended; `quiet` (the run is already ending with an exception): a failed write is
    logged, so that the exception that ended the run (a stop, a full disk) is the one that reaches the caller."""
    try:
        result.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(result.run_dir / RESULT_FILE, result.to_dict())
    except OSError as exc:
        if not quiet:
            raise
        log.error("%s: its %s could not be written (%s)", result.run_name, RESULT_FILE, exc.strerror or exc)


def _one_epoch(parts, result: Result, tracker, parent_run_id, epoch: int) -> dict[str, float]:
    """Train, evaluate, checkpoint (first), then log to MLflow (a crash in between is repaired on resume)."""
    cfg = result.train_cfg
    engine.seed_epoch(cfg.seed, epoch, parts)
    start = time.perf_counter()
    metrics = engine.train_one_epoch(parts, cfg, epoch, desc=result.run_name)
    metrics.update(engine.evaluate_parts(parts, cfg))
    metrics["epoch_time"] = time.perf_counter() - start
    metrics["epoch"] = epoch
    _check_sound(parts, metrics, epoch)  # an unsound epoch is neither kept, nor logged, nor checkpointed
    result.history.append(metrics)
    log.info("%s epoch %d/%d: loss %.4f  val top-1 %.2f  top-5 %.2f%s  lr %.2e  %.0f img/s  %.1f s", result.run_name,
             epoch, cfg.epochs, metrics["train_loss"], metrics["val_top1"], metrics["val_top5"],
             f"  EMA top-1 {metrics['val_top1_ema']:.2f}" if "val_top1_ema" in metrics else "", metrics["lr"],
             metrics["img_per_s"], metrics["epoch_time"])
    if parts.rank == 0:
        if metrics[result.metric] > result.best["top1"]:
            result.best = {"top1": metrics[result.metric], "epoch": epoch}
            _save_best(parts, result, metrics)
        if epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs:
            save_checkpoint(_last_state(parts, result, parent_run_id, epoch), result.run_dir / "last.pth")
            result.last_good_epoch = epoch
        if tracker is not None and epoch not in result.logged_epochs:  # logged by a start that was cut short
            tracker.log_metrics(result.run_id, _epoch_metrics(metrics), step=epoch)
    return metrics


def _score_final(parts, result: Result, images: int) -> None:
    """The final weights (raw, and the EMA's when kept) scored on `images` final validation images: `result.final`."""
    start = time.perf_counter()
    loader = engine.evaluation_loader(generated_validation_set(result.train_cfg, images, result.model_cfg.img_size),
                                      result.train_cfg, parts.rank, parts.world)
    metrics = engine.evaluate_parts(parts, result.train_cfg, loader)
    result.final = {"images": images, "epoch": int(result.history[-1]["epoch"]), **metrics}
    log.info("%s: final weights on %d validation images: top-1 %.2f (%.2f on the per-epoch images), %.1f s",
             result.run_name, images, result.top1, result.history[-1][result.metric], time.perf_counter() - start)


def _check_sound(parts, metrics: dict[str, float], epoch: int) -> None:
    """NonFiniteLoss when the epoch ended with a non-finite loss or unsound weights (see checkpoint.unsound_weights):
    such an epoch must not become the "last good" checkpoint. Every rank holds the same weights and decides alike."""
    bad_loss = [k for k in ("train_loss", "val_loss") if k in metrics and not np.isfinite(metrics[k])]
    problem = f"{' and '.join(bad_loss)} not finite" if bad_loss else unsound_weights(parts.model.state_dict())
    if problem is None and parts.ema is not None:
        problem = unsound_weights(parts.ema.module.state_dict())
        problem = problem and f"EMA {problem}"
    if problem:
        raise engine.NonFiniteLoss(f"the weights diverged in epoch {epoch} ({problem}): lower --lr or set --clip-grad, "
                                   "then --resume")


def _save_interrupted(parts, result: Result, parent_run_id, epoch: int) -> None:
    """Keep the weights of the epoch in progress for inspection; resuming uses last.pth (a whole epoch)."""
    if parts.rank != 0:
        return
    try:
        state = _last_state(parts, result, parent_run_id, epoch - 1)
        save_checkpoint({**state, "interrupted_in_epoch": epoch, "reason": result.reason},
                        result.run_dir / "interrupted.pth")
    except Exception as exc:  # never hide the original error behind a failed save
        log.error("could not save interrupted.pth: %s", exc)
