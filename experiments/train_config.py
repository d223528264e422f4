"""`TrainConfig`: how a model is trained (the model itself is a `SepViTConfig`).

Drop path is a property of the model (`SepViTConfig.drop_path_rate`, set by `--drop-path`), not listed here.
Field names follow timm's `train.py` flags, so `--warmup-epochs` on the command line is `warmup_epochs` here,
in MLflow params (prefix "train.") and in an Optuna trial. `ablate.py` and the search build one of these and
hand it to `experiments.engine.train_and_evaluate`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from workbench.fields import check_known, check_types


@dataclass
class TrainConfig:
    # data
    dataset: str = "synthetic"
    data_dir: str | None = None
    img_size: int | None = None  # None: the dataset's native size
    train_size: int | None = None  # cap on training samples (None: the dataset's default)
    val_size: int | None = None
    workers: int = 0  # DataLoader workers; 0 keeps small CPU runs fast and deterministic
    # optimisation (timm train.py names)
    batch_size: int = 64
    epochs: int = 9  # the built-in task's budget on a 2-core CPU: about 2.7 min per run, --grid paper --seeds 2 < 30 min
    lr: float = 3e-3
    min_lr: float = 1e-5
    warmup_lr: float = 1e-6
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    opt: str = "adamw"
    sched: str = "cosine"
    smoothing: float = 0.1
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    clip_grad: float | None = 5.0
    model_ema: bool = False
    model_ema_decay: float = 0.998
    amp: bool = False  # bfloat16 autocast (CPU and GPU)
    seed: int = 0  # model init, data order, augmentation, dropout
    data_seed: int = 0  # the generated/sub-sampled data: fixed across --seeds so only training noise varies
    device: str = "auto"  # "auto": cuda when available, else cpu
    # bookkeeping
    output: str = "output"
    checkpoint_every: int = 1  # epochs between `last.pth` writes

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError saying what to change (a wrong type included)."""
        check_types(self)
        positive = {"batch_size": self.batch_size, "epochs": self.epochs, "checkpoint_every": self.checkpoint_every}
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}: pass --{name.replace('_', '-')} 1 or more")
        for name in ("train_size", "val_size", "img_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or unset, got {value!r}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {self.smoothing}")
        if self.mixup < 0 or self.cutmix < 0:
            raise ValueError("mixup and cutmix are Beta-distribution alphas: use 0 (off) or a positive value")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise ValueError(f"clip_grad must be > 0 or unset, got {self.clip_grad}")
        if not 0.0 < self.model_ema_decay < 1.0:
            raise ValueError(f"model_ema_decay must be in (0, 1), got {self.model_ema_decay}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")

    @property
    def uses_mixup(self) -> bool:
        return (self.mixup > 0 or self.cutmix > 0) and self.mixup_prob > 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        check_known(cls, list(data))
        return cls(**data)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)
