"""The training engine, read like timm's train.py: build the parts, then `train_one_epoch` and `evaluate`.

    parts = build_parts(model_cfg, train_cfg, datasets)
    for epoch in range(1, train_cfg.epochs + 1):
        seed_epoch(train_cfg.seed, epoch, parts)
        metrics = train_one_epoch(parts, train_cfg, epoch)
        metrics.update(evaluate_parts(parts, train_cfg))

The run around it (resume, checkpoints, MLflow, signals) is `experiments.runner.run.train_and_evaluate`.

Built from timm's parts: `create_optimizer_v2` + `optimizer_kwargs`, `create_scheduler_v2` + `scheduler_kwargs`,
`LabelSmoothingCrossEntropy` / `SoftTargetCrossEntropy`, `Mixup` (Mixup/CutMix), `ModelEmaV3` with decay warm-up,
`timm.utils.accuracy` and `random_seed(seed, rank)`.

Reproducibility: every epoch re-seeds Python, NumPy and torch from (seed, epoch) plus the rank, and the data order
from (seed, epoch) alone, so an epoch depends only on the state at its start (which `last.pth` holds) and a
resumed run ends exactly like an uninterrupted one on the same machine and thread count.

Distributed (torchrun): the model is wrapped in DDP, each rank takes every world-th position of one shuffled
order (`ShardedShuffle`), so the ranks' k-th batches together are the single-process k-th batch of world x
batch images; validation is sharded and summed.
"""
from __future__ import annotations

import functools
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from sepvit.config import SepViTConfig
from sepvit.layers import init_by_name

from experiments.train_config import TrainConfig


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite; the message says where and what to change."""


# ---------------------------------------------------------------------------------- distributed helpers
def dist_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_sum(values: list[float], device: torch.device, world: int) -> list[float]:
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def check_training_settings(cfg: TrainConfig) -> None:
    """Refuse, before anything runs, settings that would only fail later: a device this machine lacks, an
    optimiser or schedule that timm cannot build from the config (built once on a one-parameter model)."""
    if cfg.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {cfg.device}: no CUDA GPU is visible to torch here; use --device cpu or auto")
        index = int(cfg.device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ValueError(f"--device {cfg.device}: this machine has {torch.cuda.device_count()} GPU(s)")
    probe = nn.Linear(1, 1)
    try:
        build_scheduler(build_optimizer(probe, cfg), cfg, updates_per_epoch=1)
    except Exception as exc:  # noqa: BLE001  (timm raises assorted types for unknown names/arguments)
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"--opt {cfg.opt} / --sched {cfg.sched}: timm cannot build them ({message})") from None


def check_mixup_batch(cfg: TrainConfig, train_images: int, world: int = 1) -> None:
    """Mixup/CutMix need whole batches (the last partial one is dropped): refuse a training set smaller than one
    batch over all ranks, which would train on nothing."""
    if cfg.uses_mixup and train_images < cfg.batch_size * world:
        raise ValueError(f"mixup/cutmix drop the last partial batch, and the {train_images} training images do not "
                         f"fill one batch of {cfg.batch_size}{f' x {world} ranks' if world > 1 else ''}: lower "
                         "--batch-size or raise --train-size")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    return torch.device(name)


# ---------------------------------------------------------------------------------- data
class ShardedShuffle(Sampler[int]):
    """One rank's share of one shuffled order: positions rank, rank + world, ... of a permutation of the dataset.

    The permutation is drawn from `generator` (re-seeded every epoch, the same on every rank), so the ranks' k-th
    batches of b images together are the single-process k-th batch of world * b images. With world = 1 it is
    exactly a shuffling DataLoader's order. The order is padded by repeating its start so every rank gets as many
    images (as DistributedSampler does).
    """

    def __init__(self, size: int, rank: int, world: int, generator: torch.Generator):
        self.size, self.rank, self.world, self.generator = size, rank, world, generator

    def __len__(self) -> int:
        return math.ceil(self.size / self.world)

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.size, generator=self.generator).tolist()
        order += order[: len(self) * self.world - self.size]
        return iter(order[self.rank::self.world])


def _seed_worker(worker_id: int, rank: int) -> None:
    # torch seeds each worker from the loader's generator (equal on all ranks): add the rank, derive NumPy's/Python's
    seed = torch.initial_seed() + rank
    if rank:
        torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed % 2**32)


def build_loaders(train_ds: Dataset, val_ds: Dataset, cfg: TrainConfig, rank: int, world: int,
                  device: torch.device) -> tuple[DataLoader, DataLoader, torch.Generator]:
    """Training and validation loaders and the generator that fixes the training order (seeded per epoch)."""
    generator = torch.Generator()
    init = functools.partial(_seed_worker, rank=rank)
    train = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=ShardedShuffle(len(train_ds), rank, world, generator),
                       num_workers=cfg.workers, generator=generator, worker_init_fn=init,
                       drop_last=cfg.uses_mixup, pin_memory=device.type == "cuda")
    return train, evaluation_loader(val_ds, cfg, rank, world), generator


def evaluation_loader(val_ds: Dataset, cfg: TrainConfig, rank: int, world: int) -> DataLoader:
    """Validation images in order; each rank its disjoint shard (summed in `evaluate`)."""
    if world > 1:
        val_ds = Subset(val_ds, list(range(rank, len(val_ds), world)))
    return DataLoader(val_ds, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.workers,
                      worker_init_fn=functools.partial(_seed_worker, rank=rank))


def seed_epoch(seed: int, epoch: int, parts: "Parts") -> None:
    """Everything random in an epoch follows from (seed, epoch), and the rank for what differs per rank."""
    from timm.utils import random_seed

    random_seed(epoch_seed(seed, epoch), parts.rank)
    parts.loader_generator.manual_seed(epoch_seed(seed, epoch))  # the data order: the same on every rank


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible seed per (run seed, epoch)."""
    return (seed * 1_000_003 + epoch * 7919 + 12345) % 2**31


# ---------------------------------------------------------------------------------- model, optimiser, loss
def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """timm's optimiser from the config; weight decay on window tokens and CPE per `cfg.decay_tokens_cpe`."""
    from timm.optim import create_optimizer_v2, optimizer_kwargs, param_groups_weight_decay

    if cfg.decay_tokens_cpe:  # the authors' training: only 1-D parameters and biases skip weight decay
        return create_optimizer_v2(param_groups_weight_decay(model, cfg.weight_decay), **optimizer_kwargs(cfg))
    return create_optimizer_v2(model, **optimizer_kwargs(cfg))  # excludes model.no_weight_decay() too


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, updates_per_epoch: int):
    from timm.scheduler import create_scheduler_v2, scheduler_kwargs

    scheduler, _ = create_scheduler_v2(optimizer, **scheduler_kwargs(cfg), updates_per_epoch=updates_per_epoch)
    return scheduler


def build_criterion(cfg: TrainConfig, num_classes: int):
    """(training loss, Mixup/CutMix or None)."""
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if cfg.uses_mixup:
        mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                      switch_prob=cfg.mixup_switch_prob, label_smoothing=cfg.smoothing, num_classes=num_classes)
        return SoftTargetCrossEntropy(), mixup
    if cfg.smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=cfg.smoothing), None
    return nn.CrossEntropyLoss(), None


@dataclass
class Parts:
    """Everything one training run works with."""

    model: nn.Module  # the model itself (checkpoints, EMA, evaluation)
    train_model: nn.Module  # what the loop calls: the model, or DDP around it
    optimizer: torch.optim.Optimizer
    scheduler: Any
    criterion: nn.Module
    mixup: Any
    ema: Any  # timm ModelEmaV3 or None
    train_loader: DataLoader
    val_loader: DataLoader
    loader_generator: torch.Generator
    device: torch.device
    rank: int
    world: int
    label_groups: dict[str, tuple[int, int]] | None = None  # sub-task class ranges (DataInfo.groups)


def fit_model_to_data(model_cfg: SepViTConfig, info) -> SepViTConfig:
    """The model config with classes, channels and image size taken from the dataset (a DataInfo)."""
    return model_cfg.replace(num_classes=info.num_classes, in_chans=info.in_chans, img_size=info.img_size)


def build_parts(model_cfg: SepViTConfig, train_cfg: TrainConfig, datasets) -> Parts:
    """Loaders, model (seeded by `train_cfg.seed`), optimiser, schedule, loss, Mixup and EMA for one run."""
    from timm.utils import ModelEmaV3, random_seed

    train_ds, val_ds, info = datasets
    rank, world = dist_info()
    device = resolve_device(train_cfg.device)
    check_mixup_batch(train_cfg, len(train_ds), world)
    train_loader, val_loader, generator = build_loaders(train_ds, val_ds, train_cfg, rank, world, device)
    random_seed(train_cfg.seed, 0)  # the same init on every rank (DDP would broadcast rank 0's anyway)
    model = fit_model_to_data(model_cfg, info).build()
    if train_cfg.init_by_name:
        init_by_name(model, train_cfg.seed)
    model = model.to(device)
    optimizer = build_optimizer(model, train_cfg)
    scheduler = build_scheduler(optimizer, train_cfg, len(train_loader))
    criterion, mixup = build_criterion(train_cfg, info.num_classes)
    ema = (ModelEmaV3(model, decay=train_cfg.model_ema_decay, use_warmup=train_cfg.model_ema_warmup)
           if train_cfg.model_ema else None)
    train_model = model
    if world > 1:
        import warnings

        from torch.nn.parallel import DistributedDataParallel

        # CPE's depthwise conv gradients come out channels-last: a DDP performance note, not an error
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return Parts(model, train_model, optimizer, scheduler, criterion, mixup, ema, train_loader, val_loader,
                 generator, device, rank, world, getattr(info, "groups", None))


# ---------------------------------------------------------------------------------- the loop
def autocast(device: torch.device, amp: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()


def _progress(total: int, desc: str, rank: int):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, disable=rank != 0 or not sys.stdout.isatty())


def train_one_epoch(parts: Parts, cfg: TrainConfig, epoch: int, desc: str = "train") -> dict[str, float]:
    """One pass over the training data; returns train_loss, train_top1 (on hard labels), lr, img_per_s."""
    p = parts
    p.train_model.train()
    updates = (epoch - 1) * len(p.train_loader)  # optimiser steps before this epoch: the schedule is resumable
    loss_sum = seen = correct = 0.0
    lr = p.optimizer.param_groups[0]["lr"]
    bar = _progress(len(p.train_loader), f"{desc} {epoch}/{cfg.epochs}", p.rank)
    start = time.perf_counter()
    for step, (x, y) in enumerate(p.train_loader):
        x, y = x.to(p.device, non_blocking=True), y.to(p.device, non_blocking=True)
        hard = y
        if p.mixup is not None:
            x, y = p.mixup(x, y)
        with autocast(p.device, cfg.amp):
            out = p.train_model(x)
            loss = p.criterion(out, y)
        if all_sum([float(not torch.isfinite(loss).item())], p.device, p.world)[0]:
            raise NonFiniteLoss(f"loss is {loss.item()} at epoch {epoch}, batch {step + 1}: lower --lr "
                                f"(now {cfg.lr:g}) or set --clip-grad, then --resume")
        if cfg.sched_on_updates:
            p.scheduler.step_update(num_updates=updates + step)
        lr = p.optimizer.param_groups[0]["lr"]
        p.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(p.model.parameters(), cfg.clip_grad)
        p.optimizer.step()
        if p.ema is not None:
            p.ema.update(p.model, step=updates + step)
        n = x.shape[0]
        loss_sum += loss.item() * n
        seen += n
        correct += (out.argmax(-1) == hard).sum().item()
        bar.update(1)
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}")
    bar.close()
    if p.device.type == "cuda":
        torch.cuda.synchronize(p.device)
    elapsed = time.perf_counter() - start
    if not cfg.sched_on_updates:
        p.scheduler.step(epoch)
    loss_sum, seen, correct = all_sum([loss_sum, seen, correct], p.device, p.world)
    return {"train_loss": loss_sum / max(seen, 1), "train_top1": 100 * correct / max(seen, 1), "lr": lr,
            "img_per_s": seen / max(elapsed, 1e-9)}


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, amp: bool, world: int,
             groups: dict[str, tuple[int, int]] | None = None) -> dict[str, float]:
    """Loss, top-1 and top-5 (percent) over the loader; summed across ranks when distributed.

    groups: name -> [first, end) class range of a sub-task (the probe suite's tasks): adds `val_top1.<name>`,
    the top-1 over the images whose true class lies in that range (argmax over all classes).
    """
    from timm.utils import accuracy

    model.eval()
    groups = groups or {}
    loss_sum = top1 = top5 = count = 0.0
    hits = {name: [0.0, 0.0] for name in groups}  # correct, images
    with torch.inference_mode():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            with autocast(device, amp):
                out = model(x)
            acc1, acck = accuracy(out.float(), y, topk=(1, min(5, out.shape[-1])))
            n = y.shape[0]
            loss_sum += F.cross_entropy(out.float(), y, reduction="sum").item()
            top1 += round(acc1.item() * n / 100)
            top5 += round(acck.item() * n / 100)
            count += n
            correct = out.argmax(-1) == y
            for name, (first, end) in groups.items():
                member = (y >= first) & (y < end)
                hits[name][0] += correct[member].sum().item()
                hits[name][1] += member.sum().item()
    totals = all_sum([loss_sum, top1, top5, count, *(v for pair in hits.values() for v in pair)], device, world)
    loss_sum, top1, top5, count = totals[:4]
    count = max(count, 1)
    metrics = {"val_loss": loss_sum / count, "val_top1": 100 * top1 / count, "val_top5": 100 * top5 / count}
    for i, name in enumerate(hits):
        correct, images = totals[4 + 2 * i], totals[5 + 2 * i]
        metrics[f"val_top1.{name}"] = 100 * correct / max(images, 1)
    return metrics


def evaluate_parts(parts: Parts, cfg: TrainConfig, loader: DataLoader | None = None) -> dict[str, float]:
    """val_loss/val_top1/val_top5 (and per sub-task top-1) of the raw weights and, with EMA, the same for the EMA
    (suffix `_ema`), on `loader` (default: the per-epoch validation loader)."""
    loader = parts.val_loader if loader is None else loader
    metrics = evaluate(parts.model, loader, parts.device, cfg.amp, parts.world, parts.label_groups)
    if parts.ema is not None:
        ema = evaluate(parts.ema.module, loader, parts.device, cfg.amp, parts.world, parts.label_groups)
        metrics.update({f"{k}_ema": v for k, v in ema.items()})
    return metrics
