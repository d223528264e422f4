"""`TrainConfig`: how a model is trained (the model itself is a `SepViTConfig`).

Field names follow timm's `train.py` flags (`warmup_epochs` is `--warmup-epochs`), and the runner's and the
search's training flags are generated from these fields (`experiments.flags`), so every field is settable on
the command line, in MLflow params (prefix "train.") and in an Optuna trial, and none is copied by hand.
Each field's `metadata["help"]` is its documentation; `metadata["flags"]` adds short aliases.

Drop path and dropout are properties of the model (`SepViTConfig.drop_path_rate`, ...), not listed here.
The image size belongs to the data: `img_size` here is the one owner (unset: the model preset's size); the
model is built for it, and the runner refuses a model field that contradicts it.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from experiments.synthetic import DEFAULT_CUE, GENERATED_DATASETS, SIZES, check_cue
from workbench.fields import check_known, check_types


def _f(default: Any, help: str, *flags: str, **extra: Any) -> Any:  # noqa: A002 (argparse's word)
    return field(default=default, metadata={"help": help, "flags": flags, **extra})


@dataclass
class TrainConfig:
    # data
    dataset: str = _f("synthetic", "synthetic (the default benchmark), aligned-pairs, mirror-pairs or top-half (the "
                                   "PWA, GSA and position probes), digits, cifar10, cifar100 or imagefolder (nothing "
                                   "is downloaded)")
    data_dir: str | None = _f(None, "folder holding the dataset (cifar*, imagefolder)")
    synthetic_cue: str = _f(DEFAULT_CUE, "the built-in task's cue, what names the colour to count: frame (the "
                                         "image's border; the default: every seed learns it) or ring (one far "
                                         "cell; the default before 2026-12-06, learnt at a random epoch); seed "
                                         "noise of each: docs/results.md, docs/benchmark-log.md", before="ring",
                           before_datasets=("synthetic",))
    img_size: int | None = _f(None, "input side in pixels; unset: the model preset's (the model is built for it)")
    train_size: int | None = _f(None, "cap on training images (unset: the dataset's default)")
    val_size: int | None = _f(None, "cap on validation images (the per-epoch set)")
    final_val_size: int | None = _f(None, "validation images the final weights are scored on after the last epoch "
                                          "(generated datasets only; the per-epoch images are its first ones); the "
                                          "run reports that score. Unset: 10000 on a generated dataset whose "
                                          "--val-size is its default 1000, else none; 0: none (the last epoch's score stands, "
                                          "as before 2026-12-07)", before=0)
    workers: int = _f(0, "DataLoader worker processes (0 keeps small CPU runs fast and deterministic)", "-j")
    # optimisation (timm train.py names)
    batch_size: int = _f(64, "batch size per process", "-b")
    epochs: int = _f(9, "epochs per run (the built-in task's budget: about 2.5-3.5 min per run on one core, by "
                        "CPU: docs/benchmark-log.md)")
    lr: float = _f(3e-3, "peak learning rate")
    min_lr: float = _f(1e-5, "learning-rate floor of the cosine schedule")
    warmup_lr: float = _f(1e-6, "learning rate at the start of the warm-up")
    warmup_epochs: int = _f(1, "linear warm-up epochs (stepped per update)")
    weight_decay: float = _f(0.05, "weight decay (never on norms and biases; see decay_tokens_cpe)")
    decay_tokens_cpe: bool = _f(True, "weight decay on window tokens and CPE weights, as the authors' training "
                                      "does (their optimiser never sees no_weight_decay); off: the model's "
                                      "no_weight_decay() list is excluded, as timm's factory does")
    opt: str = _f("adamw", "timm optimiser name")
    opt_eps: float | None = _f(None, "optimiser epsilon (unset: the optimiser's default)")
    opt_betas: tuple[float, ...] | None = _f(None, "optimiser betas (unset: the optimiser's default)")
    momentum: float = _f(0.9, "SGD momentum (timm's default)")
    sched: str = _f("cosine", "timm scheduler name")
    sched_on_updates: bool = _f(True, "step the schedule every update (off: every epoch). Default on here, off in "
                                      "timm: with few epochs, per-epoch steps make the warm-up and decay coarse")
    smoothing: float = _f(0.1, "label smoothing")
    mixup: float = _f(0.0, "Mixup alpha (0: off)")
    cutmix: float = _f(0.0, "CutMix alpha (0: off)")
    mixup_prob: float = _f(1.0, "probability of applying Mixup/CutMix to a batch")
    mixup_switch_prob: float = _f(0.5, "probability of CutMix instead of Mixup when both are on")
    clip_grad: float | None = _f(5.0, "max gradient norm (none: no clipping). Default 5 here, none in timm: the "
                                      "built-in task's short high-lr schedule spikes without it")
    model_ema: bool = _f(False, "keep an exponential moving average of the weights (timm ModelEmaV3); the report "
                                "then uses the EMA's accuracy")
    model_ema_decay: float = _f(0.998, "EMA decay")
    model_ema_warmup: bool = _f(True, "EMA decay warm-up (timm's use_warmup): early averages do not hold the init")
    amp: bool = _f(False, "mixed precision (timm's --amp): autocast to --amp-dtype, CPU and GPU")
    amp_dtype: str = _f("bfloat16", "autocast dtype of --amp. timm defaults to float16 with a loss scaler; this runner "
                                    "has no loss scaler, so only bfloat16 (no scaling needed, runs on CPUs) is taken")
    seed: int = _f(0, "training seed: model init, data order, augmentation, dropout (per rank: seed + rank)")
    init_by_name: bool = _f(True, "draw each module's initial weights from (seed, module name), so configurations "
                                  "trained at one seed share the init of every module they share and a per-seed "
                                  "difference measures the change, not the draw; off: the model's own init from "
                                  "the global seed")
    data_seed: int = _f(0, "seed of the generated/sub-sampled data: fixed across --seeds so only training varies")
    device: str = _f("auto", "auto (cuda when available), cpu, cuda or cuda:N")
    # bookkeeping
    output: str = _f("output", "folder for checkpoints, the MLflow database and artifacts")
    checkpoint_every: int = _f(1, "epochs between last.pth writes")

    def __post_init__(self) -> None:
        if isinstance(self.opt_betas, list):
            self.opt_betas = tuple(self.opt_betas)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError saying what to change (a wrong type included)."""
        check_types(self)
        for name in ("batch_size", "epochs", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}: "
                                 f"pass --{name.replace('_', '-')} 1 or more")
        for name in ("train_size", "val_size", "img_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be a positive integer or unset, got {value!r}")
        self._check_final_val_size()
        for name in ("workers", "warmup_epochs", "weight_decay", "min_lr", "warmup_lr", "momentum"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}: pass --{name.replace('_', '-')} 0 "
                                 "or more")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr:g}) is above lr ({self.lr:g}): lower --min-lr")
        for name in ("smoothing", "mixup_prob", "mixup_switch_prob"):
            limit_ok = 0.0 <= getattr(self, name) < 1.0 if name == "smoothing" else 0.0 <= getattr(self, name) <= 1.0
            if not limit_ok:
                raise ValueError(f"{name} must be a probability{' below 1' if name == 'smoothing' else ''}, "
                                 f"got {getattr(self, name)}")
        if self.mixup < 0 or self.cutmix < 0:
            raise ValueError("mixup and cutmix are Beta-distribution alphas: use 0 (off) or a positive value")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise ValueError(f"clip_grad must be > 0 or none, got {self.clip_grad}")
        if not 0.0 < self.model_ema_decay < 1.0:
            raise ValueError(f"model_ema_decay must be in (0, 1), got {self.model_ema_decay}")
        if self.opt_eps is not None and self.opt_eps <= 0:
            raise ValueError(f"opt_eps must be > 0 or none, got {self.opt_eps}")
        if self.device not in ("auto", "cpu", "cuda") and not (self.device.startswith("cuda:")
                                                              and self.device[5:].isdigit()):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        check_cue(self.synthetic_cue, self.dataset)
        if self.amp_dtype != "bfloat16":
            raise ValueError(f"amp_dtype {self.amp_dtype!r} is not supported: float16 needs a loss scaler, which this "
                             "runner does not have; use --amp-dtype bfloat16")
        if not self.output.strip():
            raise ValueError("output must name a folder, got an empty string")

    def _check_final_val_size(self) -> None:
        if self.final_val_size is None or self.final_val_size == 0:
            return
        if self.final_val_size < 0:
            raise ValueError(f"final_val_size must be a positive integer, 0 (off) or unset, got {self.final_val_size}")
        if self.dataset not in GENERATED_DATASETS:
            raise ValueError(f"final_val_size {self.final_val_size}: {self.dataset!r} is read from files and has no "
                             "more validation images to draw; pass --final-val-size 0 or leave it unset")
        per_epoch = self.val_size or SIZES[1]
        if self.final_val_size <= per_epoch:
            raise ValueError(f"final_val_size {self.final_val_size} is not above val_size {per_epoch} (the "
                             "per-epoch images are its first ones): raise --final-val-size or pass 0")

    @property
    def uses_mixup(self) -> bool:
        return (self.mixup > 0 or self.cutmix > 0) and self.mixup_prob > 0

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def before_logged(cls, dataset: str = "synthetic") -> dict[str, Any]:
        """Fields added after runs were first saved, with the value those runs had (the code's behaviour before
        the field existed, which its default need not be): `from_dict` fills them in where a saved config lacks
        them, and the zoo matches a run that did not log one only against this value. A field whose metadata
        names `before_datasets` mattered to those datasets alone (synthetic_cue: the synthetic one); configs of
        other datasets take its default."""
        return {f.name: f.metadata["before"] for f in dataclasses.fields(cls) if "before" in f.metadata
                and dataset in f.metadata.get("before_datasets", (dataset,))}

    @classmethod
    def as_logged_before(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """A saved config (dict) completed: each field it lacks takes the value its runs had (`before_logged`,
        else the field's default, which then is the behaviour before the field existed), so that configs saved
        before and after a field was added compare equal when they trained alike (the study check, the search's
        stored confirmations, the report's pooling and `from_dict` all use this)."""
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        return {**defaults, **cls.before_logged(data.get("dataset", cls.dataset)), **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        check_known(cls, list(data))
        return cls(**cls.as_logged_before(data))

    def replace(self, **changes: Any) -> "TrainConfig":
        check_known(type(self), list(changes))
        return dataclasses.replace(self, **changes)
