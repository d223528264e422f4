"""The one training/evaluation engine: `train_and_evaluate(model_cfg, train_cfg, ...)`.

Used by `experiments/ablate.py` (one call per configuration and seed) and by the hyper-parameter search
(an Optuna objective calls it with a trial's configs and an `on_epoch_end` callback that reports and asks for
pruning). It is deliberately one linear function, like nanoGPT's train.py: data, model, optimiser, loop.

Built from timm's parts: `create_optimizer_v2` (AdamW; honours `model.no_weight_decay()`), `create_scheduler_v2`
(cosine with warm-up, stepped per epoch), `LabelSmoothingCrossEntropy` / `SoftTargetCrossEntropy`, `Mixup`
(Mixup/CutMix), `ModelEmaV3`, `timm.utils.accuracy`.

Reproducibility: every epoch starts by re-seeding Python, NumPy, torch and the DataLoader generator from
(seed, epoch). An epoch therefore depends only on the state at its start, which the checkpoint holds, so a
run resumed from `last.pth` ends with the same metrics as one never interrupted (on the same machine and
thread count). MLflow steps are epoch numbers (1-based); a resumed run re-logs only the epochs that MLflow lacks.

Distributed: if `torch.distributed` is initialised (torchrun), the model is wrapped in DDP, the training set is
sharded with `DistributedSampler`, validation is sharded and summed, and only rank 0 logs and writes files.
"""
from __future__ import annotations

import functools
import logging
import math
import os
import random
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from sepvit.config import SepViTConfig

from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .train_config import TrainConfig

log = logging.getLogger("sepvit.engine")

# Test hooks (environment variables, so that they also reach a subprocess); never set in normal use.
#   SEPVIT_TEST_PAUSE_AT_EPOCH=N : at the first batch of epoch N, touch <run_dir>/paused and sleep (a test kills us)
#   SEPVIT_TEST_NAN_AT_EPOCH=N   : the loss of the first batch of epoch N becomes NaN
PAUSE_ENV, NAN_ENV = "SEPVIT_TEST_PAUSE_AT_EPOCH", "SEPVIT_TEST_NAN_AT_EPOCH"

EpochCallback = Callable[[int, dict[str, float]], "bool | None"]


class NonFiniteLoss(RuntimeError):
    pass


class RunInterrupted(BaseException):
    """SIGTERM, turned into an exception so that the run is checkpointed and marked KILLED."""


@dataclass
class Result:
    """What one training run produced. Metrics are percentages (top-1/top-5) and per-epoch dicts."""

    run_name: str
    status: str  # FINISHED, FAILED or KILLED (MLflow's words)
    model_cfg: SepViTConfig
    train_cfg: TrainConfig
    history: list[dict[str, float]] = field(default_factory=list)
    reason: str | None = None
    run_id: str | None = None
    run_dir: Path | None = None
    best_top1: float = float("nan")
    best_epoch: int = 0
    cost: dict[str, float] = field(default_factory=dict)  # params, macs, latency_ms
    stopped_early: bool = False

    @property
    def top1(self) -> float:
        """Top-1 of the last completed epoch (less optimistic than the best epoch)."""
        return self.history[-1]["val_top1"] if self.history else float("nan")

    @property
    def img_per_s(self) -> float:
        values = [h["img_per_s"] for h in self.history]
        return float(np.median(values)) if values else float("nan")


# ---------------------------------------------------------------------------------- helpers
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible seed per (run seed, epoch)."""
    return (seed * 1_000_003 + epoch * 7919 + 12345) % 2**31


def _worker_init(worker_id: int) -> None:
    # torch seeds each worker from the loader generator; derive NumPy's and Python's from it.
    base = torch.initial_seed() % 2**32
    np.random.seed(base)
    random.seed(base)


def fit_model_to_data(model_cfg: SepViTConfig, info) -> SepViTConfig:
    """The model config with classes, channels and image size taken from the dataset (a DataInfo)."""
    return model_cfg.replace(num_classes=info.num_classes, in_chans=info.in_chans, img_size=info.img_size)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", 0))
            return torch.device("cuda", local)
        return torch.device("cpu")
    return torch.device(name)


def dist_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_sum(values: list[float], device: torch.device, world: int) -> list[float]:
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def model_cost(model_cfg: SepViTConfig, repeats: int = 10) -> dict[str, float]:
    """Parameters, MACs (fvcore, explicit attention, batch 1; multiply-add = 1) and batch-1 CPU latency (ms).

    Cached per configuration: the seeds of one configuration share one measurement.
    """
    import json

    return dict(_model_cost(json.dumps(model_cfg.to_dict(), sort_keys=True), repeats))


@functools.lru_cache(maxsize=64)
def _model_cost(cfg_json: str, repeats: int) -> tuple:
    import json

    from analysis.counters import count_params, explicit_attention_copy, fvcore_count

    model_cfg = SepViTConfig.from_dict(json.loads(cfg_json))
    with torch.random.fork_rng():  # measuring must not move the training RNG
        model = model_cfg.build().eval()
        x = torch.randn(1, model_cfg.in_chans, model_cfg.img_size, model_cfg.img_size)
        macs = fvcore_count(explicit_attention_copy(model), x).total
        times = []
        with torch.inference_mode():
            for i in range(repeats + 3):
                start = time.perf_counter()
                model(x)
                if i >= 3:  # warm-up
                    times.append(time.perf_counter() - start)
    return tuple({"params": count_params(model), "macs": macs, "latency_ms": 1000 * float(np.median(times))}.items())


def evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device, amp: bool, world: int) -> dict[str, float]:
    """Loss, top-1 and top-5 (percent) over the loader; sums across ranks when distributed."""
    from timm.utils import accuracy

    model.eval()
    loss_sum = top1 = top5 = count = 0.0
    with torch.inference_mode():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            with _autocast(device, amp):
                out = model(x)
            k = min(5, out.shape[-1])
            acc1, acck = accuracy(out.float(), y, topk=(1, k))
            n = y.shape[0]
            loss_sum += F.cross_entropy(out.float(), y, reduction="sum").item()
            top1 += round(acc1.item() * n / 100)
            top5 += round(acck.item() * n / 100)
            count += n
    loss_sum, top1, top5, count = _all_sum([loss_sum, top1, top5, count], device, world)
    count = max(count, 1)
    return {"val_loss": loss_sum / count, "val_top1": 100 * top1 / count, "val_top5": 100 * top5 / count}


def _autocast(device: torch.device, amp: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()


def _test_hook(name: str, epoch: int) -> bool:
    value = os.environ.get(name)
    return value is not None and value.strip() == str(epoch)


def _progress(total: int, desc: str, rank: int):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True,
                disable=rank != 0 or not sys.stdout.isatty())


# ---------------------------------------------------------------------------------- the engine
def train_and_evaluate(
    model_cfg: SepViTConfig,
    train_cfg: TrainConfig,
    tracker=None,
    on_epoch_end: EpochCallback | None = None,
    resume_from: str | os.PathLike | None = None,
    *,
    run_name: str = "run",
    run_dir: str | os.PathLike | None = None,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    datasets: tuple[Dataset, Dataset, Any] | None = None,
) -> Result:
    """Train `model_cfg` with `train_cfg`, evaluating every epoch; return a `Result`.

    tracker: an `experiments.tracking.Tracker` (rank 0 logs to it) or None (no MLflow).
    on_epoch_end(epoch, metrics): called after each epoch on every rank; return True to stop early (an Optuna
        objective reports the metric there and returns `trial.should_prune()`). The run then ends FINISHED
        with the tag stopped_early=true.
    resume_from: a `last.pth`; the configs, epoch, history and MLflow run id come from it.
    datasets: (train, val, DataInfo) already built (the runner builds them once for many runs).
    A NaN/inf loss stops the run: it returns with status FAILED (last good checkpoint kept). Ctrl-C, SIGTERM
    and errors save `interrupted.pth`, mark the MLflow run KILLED/FAILED with the reason, and re-raise.
    """
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    from timm.utils import ModelEmaV3

    ckpt = None
    if resume_from is not None:
        ckpt = load_checkpoint(resume_from)
        model_cfg = SepViTConfig.from_dict(ckpt["config"])
        train_cfg = TrainConfig.from_dict(ckpt["train_config"])
        run_name = ckpt.get("run_name", run_name)
        run_dir = Path(resume_from).parent
    rank, world = dist_info()
    is_main = rank == 0
    tracker = tracker if is_main else None
    device = resolve_device(train_cfg.device)
    run_dir = Path(run_dir) if run_dir is not None else Path(train_cfg.output) / run_name

    # ---- data
    if datasets is None:
        from .data import build_datasets

        datasets = build_datasets(train_cfg.dataset, train_cfg.data_dir, train_cfg.img_size or model_cfg.img_size,
                                  train_cfg.train_size, train_cfg.val_size, seed=train_cfg.data_seed)
    train_ds, val_ds, info = datasets
    model_cfg = fit_model_to_data(model_cfg, info)
    if train_cfg.uses_mixup and len(train_ds) < train_cfg.batch_size * world:
        raise ValueError(f"mixup/cutmix drop the last partial batch, and the {len(train_ds)} training images do not "
                         f"fill one batch of {train_cfg.batch_size}: lower --batch-size or raise --train-size")
    loader_gen = torch.Generator()
    if world > 1:
        from torch.utils.data.distributed import DistributedSampler

        train_sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=train_cfg.seed,
                                           drop_last=train_cfg.uses_mixup)
        val_ds = Subset(val_ds, list(range(rank, len(val_ds), world)))  # disjoint shards, summed in evaluate()
    else:
        train_sampler = None
    train_loader = DataLoader(train_ds, batch_size=train_cfg.batch_size, shuffle=train_sampler is None,
                              sampler=train_sampler, num_workers=train_cfg.workers, generator=loader_gen,
                              worker_init_fn=_worker_init, drop_last=train_cfg.uses_mixup,
                              persistent_workers=False, pin_memory=device.type == "cuda")
    val_loader = DataLoader(val_ds, batch_size=train_cfg.batch_size, shuffle=False, num_workers=train_cfg.workers,
                            worker_init_fn=_worker_init)

    # ---- model, optimiser, schedule, loss, EMA
    seed_everything(train_cfg.seed)
    model = model_cfg.build().to(device)
    optimizer = create_optimizer_v2(model, opt=train_cfg.opt, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    scheduler, _ = create_scheduler_v2(optimizer, sched=train_cfg.sched, num_epochs=train_cfg.epochs,
                                       warmup_epochs=train_cfg.warmup_epochs, warmup_lr=train_cfg.warmup_lr,
                                       min_lr=train_cfg.min_lr, step_on_epochs=False,
                                       updates_per_epoch=len(train_loader))  # warm-up ramps per step
    ema = ModelEmaV3(model, decay=train_cfg.model_ema_decay) if train_cfg.model_ema else None
    mixup = None
    if train_cfg.uses_mixup:
        mixup = Mixup(mixup_alpha=train_cfg.mixup, cutmix_alpha=train_cfg.cutmix, prob=train_cfg.mixup_prob,
                      switch_prob=train_cfg.mixup_switch_prob, label_smoothing=train_cfg.smoothing,
                      num_classes=model_cfg.num_classes)
        criterion = SoftTargetCrossEntropy()
    elif train_cfg.smoothing > 0:
        criterion = LabelSmoothingCrossEntropy(smoothing=train_cfg.smoothing)
    else:
        criterion = torch.nn.CrossEntropyLoss()
    train_model = model
    if world > 1:
        import warnings

        from torch.nn.parallel import DistributedDataParallel

        # CPE's depthwise conv gradients come out channels-last: a DDP performance note, not an error
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    # ---- state: fresh or resumed
    start_epoch, history, best = 1, [], {"top1": -1.0, "epoch": 0}
    run_id = None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.load_state_dict(ckpt["ema"])
        set_rng_state(ckpt["rng"])
        start_epoch, history, best = ckpt["epoch"] + 1, list(ckpt["history"]), dict(ckpt["best"])
        run_id, parent_run_id = ckpt.get("run_id"), ckpt.get("parent_run_id")
    result = Result(run_name, "RUNNING", model_cfg, train_cfg, history=history, run_dir=run_dir)

    # ---- MLflow: open (or reopen) the run, log what is known before training
    if tracker is not None:
        if run_id is None:
            from .tracking import environment_params, flatten

            run_id = tracker.start_run(run_name, parent_run_id=parent_run_id, tags={"kind": "train", **(tags or {})})
            tracker.log_params(run_id, {**flatten(model_cfg.to_dict(), "model."),
                                        **flatten(train_cfg.to_dict(), "train."),
                                        **flatten({k: v for k, v in vars(info).items()}, "data."),
                                        **environment_params()})
            tracker.log_json(run_id, {"model": model_cfg.to_dict(), "train": train_cfg.to_dict(),
                                      "data": {k: (list(v) if isinstance(v, tuple) else v)
                                               for k, v in vars(info).items()}}, "config.json")
        else:
            tracker.reopen_run(run_id)
            _relog_missing_epochs(tracker, run_id, history)
    result.run_id = run_id
    if is_main:
        result.cost = model_cost(model_cfg)
        if tracker is not None:
            tracker.log_metrics(run_id, result.cost, step=0)

    def checkpoint_state(epoch: int) -> dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                "rng": rng_state(), "config": model_cfg.to_dict(), "train_config": train_cfg.to_dict(),
                "epoch": epoch, "history": history, "best": best, "run_id": run_id,
                "parent_run_id": parent_run_id, "run_name": run_name,
                "tracking_uri": getattr(tracker, "tracking_uri", None), "experiment": getattr(tracker, "experiment", None)}

    previous_sigterm = _install_sigterm()
    epoch = start_epoch
    try:
        for epoch in range(start_epoch, train_cfg.epochs + 1):
            # Everything random in this epoch follows from (seed, epoch): resuming reproduces it exactly.
            seed_everything(epoch_seed(train_cfg.seed, epoch))
            loader_gen.manual_seed(epoch_seed(train_cfg.seed, epoch))
            if train_sampler is not None:
                train_sampler.set_epoch(epoch)
            updates = (epoch - 1) * len(train_loader)  # optimiser steps before this epoch
            train_model.train()
            start = time.perf_counter()
            loss_sum = seen = correct = 0.0
            lr = optimizer.param_groups[0]["lr"]
            bar = _progress(len(train_loader), f"{run_name} {epoch}/{train_cfg.epochs}", rank)
            for step, (x, y) in enumerate(train_loader):
                if step == 0 and _test_hook(PAUSE_ENV, epoch) and is_main:
                    (run_dir / "paused").touch()
                    time.sleep(120)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                hard = y
                if mixup is not None:
                    x, y = mixup(x, y)
                with _autocast(device, train_cfg.amp):
                    out = train_model(x)
                    loss = criterion(out, y)
                if step == 0 and _test_hook(NAN_ENV, epoch):
                    loss = loss * float("nan")
                bad = float(not torch.isfinite(loss).item())
                if _all_sum([bad], device, world)[0]:
                    raise NonFiniteLoss(f"loss is {loss.item()} at epoch {epoch}, batch {step + 1}: "
                                        f"lower --lr (now {train_cfg.lr:g}) or set --clip-grad")
                scheduler.step_update(num_updates=updates + step)  # a pure function of the step: resumable
                lr = optimizer.param_groups[0]["lr"]
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if train_cfg.clip_grad is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.clip_grad)
                optimizer.step()
                if ema is not None:
                    ema.update(model, step=updates + step)
                n = x.shape[0]
                loss_sum += loss.item() * n
                seen += n
                correct += (out.argmax(-1) == hard).sum().item()
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}",
                                img_s=f"{seen * world / (time.perf_counter() - start):.0f}")
            bar.close()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_time = time.perf_counter() - start
            loss_sum, seen, correct = _all_sum([loss_sum, seen, correct], device, world)
            metrics = {"train_loss": loss_sum / max(seen, 1), "train_top1": 100 * correct / max(seen, 1), "lr": lr,
                       "img_per_s": seen / max(train_time, 1e-9)}
            if ema is not None:
                raw = evaluate(model, val_loader, device, train_cfg.amp, world)
                metrics.update({f"{k}_raw": v for k, v in raw.items()})
                metrics.update(evaluate(ema.module, val_loader, device, train_cfg.amp, world))  # timm: EMA wins
            else:
                metrics.update(evaluate(model, val_loader, device, train_cfg.amp, world))
            metrics["epoch_time"] = time.perf_counter() - start
            metrics["epoch"] = epoch
            history.append(metrics)
            log.info("%s epoch %d/%d: loss %.4f  val top-1 %.2f  top-5 %.2f  lr %.2e  %.0f img/s  %.1f s", run_name,
                     epoch, train_cfg.epochs, metrics["train_loss"], metrics["val_top1"], metrics["val_top5"], lr,
                     metrics["img_per_s"], metrics["epoch_time"])
            if is_main:
                # checkpoint first, then MLflow: a crash in between is repaired by _relog_missing_epochs on resume
                if metrics["val_top1"] > best["top1"]:
                    best = {"top1": metrics["val_top1"], "epoch": epoch}
                    eval_model = ema.module if ema is not None else model
                    save_checkpoint({"model": eval_model.state_dict(), "config": model_cfg.to_dict(),
                                     "train_config": train_cfg.to_dict(), "epoch": epoch, "metrics": metrics},
                                    run_dir / "best.pth")
                if epoch % train_cfg.checkpoint_every == 0 or epoch == train_cfg.epochs:
                    save_checkpoint(checkpoint_state(epoch), run_dir / "last.pth")
                if tracker is not None:
                    tracker.log_metrics(run_id, _epoch_metrics(metrics), step=epoch)
            result.history, result.best_top1, result.best_epoch = history, best["top1"], best["epoch"]
            if on_epoch_end is not None and on_epoch_end(epoch, dict(metrics)):
                result.stopped_early = True
                break
        result.status = "FINISHED"
    except NonFiniteLoss as exc:
        result.status, result.reason = "FAILED", f"{exc}; last good checkpoint: {run_dir / 'last.pth'}"
        log.error("%s: %s", run_name, result.reason)
    except (KeyboardInterrupt, RunInterrupted) as exc:
        result.status = "KILLED"
        result.reason = f"interrupted during epoch {epoch} ({'SIGTERM' if isinstance(exc, RunInterrupted) else 'Ctrl-C'})"
        _save_interrupted(is_main, run_dir, checkpoint_state, epoch, result)
        if tracker is not None:
            tracker.end_run(run_id, "KILLED", result.reason + f"; resume with --resume {run_dir / 'last.pth'}")
        raise
    except Exception as exc:
        result.status, result.reason = "FAILED", f"{type(exc).__name__}: {exc}"
        _save_interrupted(is_main, run_dir, checkpoint_state, epoch, result)
        if tracker is not None:
            tracker.end_run(run_id, "FAILED", result.reason)
        raise
    finally:
        _restore_sigterm(previous_sigterm)

    if tracker is not None:
        _finish_run(tracker, result, run_dir, best)
    return result


def _epoch_metrics(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k != "epoch"}


def _relog_missing_epochs(tracker, run_id: str, history: list[dict[str, float]]) -> None:
    logged = tracker.logged_steps(run_id, "val_top1")
    for metrics in history:
        if int(metrics["epoch"]) not in logged:
            tracker.log_metrics(run_id, _epoch_metrics(metrics), step=int(metrics["epoch"]))


def _finish_run(tracker, result: Result, run_dir: Path, best: dict) -> None:
    from .report import learning_curve_figure

    run_id = result.run_id
    if result.history:
        last = result.history[-1]
        tracker.log_metrics(run_id, {"final_val_top1": last["val_top1"], "final_val_top5": last["val_top5"],
                                     "best_val_top1": best["top1"], "best_epoch": best["epoch"]},
                            step=int(last["epoch"]))
        figure = learning_curve_figure(result.history, run_dir / "learning_curve.png", title=result.run_name)
        tracker.log_artifact(run_id, figure)
    if (run_dir / "best.pth").is_file():
        tracker.log_artifact(run_id, run_dir / "best.pth", "checkpoint")
    if result.stopped_early:
        tracker.set_tags(run_id, {"stopped_early": "true"})
    tracker.end_run(run_id, result.status, result.reason)


def _save_interrupted(is_main: bool, run_dir: Path, state_fn, epoch: int, result: Result) -> None:
    """Keep the weights of the epoch in progress for inspection; resuming uses last.pth (a whole epoch)."""
    if not is_main:
        return
    try:
        state = state_fn(epoch - 1)
        state["interrupted_in_epoch"] = epoch
        state["reason"] = result.reason
        save_checkpoint(state, run_dir / "interrupted.pth")
    except Exception as exc:  # never hide the original error behind a failed save
        log.error("could not save interrupted.pth: %s", exc)


def _raise_interrupted(signum, frame):
    raise RunInterrupted(f"signal {signum}")


def _install_sigterm():
    try:
        return signal.signal(signal.SIGTERM, _raise_interrupted)
    except ValueError:  # not the main thread (e.g. an Optuna worker thread): leave signals alone
        return None


def _restore_sigterm(previous) -> None:
    if previous is not None:
        try:
            signal.signal(signal.SIGTERM, previous)
        except ValueError:
            pass
