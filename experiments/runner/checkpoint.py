"""Checkpoints: written atomically, read with `torch.load(weights_only=True)`, refused in one clear line.

Two kinds, both plain dicts of tensors and JSON-like values (so `weights_only=True` loads them):
- `last.pth`: everything needed to resume: model, optimiser, EMA, model/training configs, the epoch just finished,
  the metric history, the best epoch and the MLflow run ids. (The schedule is a pure function of the update count
  and the training config, so it is rebuilt, not stored; so are RNG states, which every epoch re-seeds.)
- `best.pth`: {"model", "weights" ("raw" or "ema"), "config", "train_config", "epoch", "metrics",
  "pretrained_cfg"}: what `load_model` needs.

Both carry `pretrained_cfg`, timm's name for how data reach the model (input size, mean/std, crop, interpolation,
num_classes, label_names): `load_model` attaches it, so `timm.data.resolve_model_data_config(model)` and
`create_transform(**that)` prepare images as the run's evaluation did, not at timm's 224 px / crop 0.875.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from timm.data import DEFAULT_CROP_PCT

from sepvit.config import SepViTConfig

# How experiments/data.py's evaluation transform brings an image to the model: an ImageFolder goes through timm's
# create_transform defaults (resize to size / 0.875, centre crop, bilinear); the other datasets are fed whole, at
# their size (CIFAR resized bilinearly when the size is not 32).
_EVAL_CROP = {"imagefolder": (DEFAULT_CROP_PCT, "bilinear")}
_WHOLE_IMAGE = (1.0, "bilinear")


# Weights of a sound run stay far below this (|w| of a few units); a run whose weights pass it has diverged even if
# its loss is still finite (lr 1e8 gave |w| ~ 5e7 and a finite loss, then NaN at the next step after a resume).
WEIGHT_BOUND = 1e4


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the one-line message says which file, why, and what to do."""


def unsound_weights(state: dict[str, Any], bound: float = WEIGHT_BOUND) -> str | None:
    """Why the floating-point tensors of a state dict are not weights to keep (non-finite, or |w| >= bound), in
    words naming the first such tensor; None when they are sound."""
    for name, tensor in state.items():
        if not torch.is_tensor(tensor) or not tensor.is_floating_point() or tensor.numel() == 0:
            continue
        if not torch.isfinite(tensor).all():
            return f"{name} is not finite"
        largest = float(tensor.detach().abs().max())
        if largest >= bound:
            return f"{name} reaches |w| = {largest:.3g} (sound weights stay below {bound:g})"
    return None


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write `state` to `path` atomically: a reader (or a crash) never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            _save(state, handle)
        os.replace(tmp, path)  # atomic on POSIX and Windows when on the same file system
    except BaseException:  # a full disk or a stop mid-write: no half file left behind
        tmp.unlink(missing_ok=True)
        raise
    return path


class _RecordingWriter:
    """A file for torch.save that keeps the OS's error: torch reports a failed write as "unexpected pos", and the
    caller must hear "No space left on device"."""

    def __init__(self, handle):
        self.handle, self.error = handle, None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.handle.flush()


def _save(state: dict[str, Any], handle) -> None:
    writer = _RecordingWriter(handle)
    try:
        torch.save(state, writer)
    except RuntimeError as exc:
        if writer.error is not None:
            raise writer.error from exc
        raise


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    required: tuple[str, ...] = ("model", "config")) -> dict[str, Any]:
    """Load a workbench checkpoint safely (`weights_only=True`: tensors and plain types only).

    Raises CheckpointError for a missing, truncated, unsafe or foreign file, or one lacking `required` keys.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: pass the path of a last.pth or best.pth file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            raise CheckpointError(f"{path} holds Python objects beyond tensors and plain values, which safe loading "
                                  "refuses (unpickling them could run code): it was not written by this workbench; "
                                  "load only checkpoints whose origin you trust, converted to a plain state dict"
                                  ) from None
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({exc}); pass a last.pth or best.pth") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is truncated or damaged and cannot be read ({first}); use the run's other "
                              "checkpoint or start the run again") from None
    if not isinstance(state, dict) or any(key not in state for key in required):
        found = sorted(state)[:6] if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not a workbench checkpoint (it needs {', '.join(required)}; found "
                              f"{found}); pass a last.pth or best.pth written by experiments/ablate.py")
    return state


def config_differences(stored: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """'field: stored -> expected' for every field that differs between two config dicts."""
    return [f"{k}: {stored.get(k)!r} -> {expected.get(k)!r}" for k in sorted(set(stored) | set(expected))
            if stored.get(k) != expected.get(k)]


def check_resumable_checkpoint(path: str | os.PathLike, model_cfg: SepViTConfig, train_cfg,
                               may_differ: tuple[str, ...] = ("epochs", "lr", "clip_grad", "workers", "device")) -> int:
    """The number of epochs `path` (a last.pth) has trained, if it can continue the planned run; else
    CheckpointError naming the fields in which it belongs to another configuration."""
    state = load_checkpoint(path, required=("model", "optimizer", "config", "train_config", "epoch", "history"))
    problem = unsound_weights(state["model"])
    if problem:
        raise CheckpointError(f"{path} holds diverged weights ({problem}): continuing from it would fail at once; "
                              "move it away to start that run again (with a lower --lr or --clip-grad)")
    model_diff = config_differences(state["config"], model_cfg.to_dict())
    # a field added to TrainConfig after the checkpoint was written takes its default, which by convention is the
    # behaviour of the code that wrote it (e.g. amp_dtype: the old --amp was bfloat16)
    stored_train = {**type(train_cfg)().to_dict(), **state["train_config"]}
    train_diff = config_differences({k: v for k, v in stored_train.items() if k not in may_differ},
                                    {k: v for k, v in train_cfg.to_dict().items() if k not in may_differ})
    if model_diff or train_diff:
        raise CheckpointError(f"{path} belongs to another configuration than the call planned "
                              f"({'; '.join(model_diff + train_diff)[:400]}): move it away or start a new call")
    return int(state["epoch"])


def data_pretrained_cfg(info, label_names: list[str] | None = None) -> dict[str, Any]:
    """The `pretrained_cfg` entries (plain lists, so `weights_only` loading reads them) of a run on the dataset
    `info` (an `experiments.data.DataInfo`) describes; `label_names`: class names, index order, if the data have
    them."""
    crop_pct, interpolation = _EVAL_CROP.get(info.name, _WHOLE_IMAGE)
    cfg = {"input_size": [int(info.in_chans), int(info.img_size), int(info.img_size)],
           "mean": [float(v) for v in info.mean], "std": [float(v) for v in info.std],
           "crop_pct": crop_pct, "crop_mode": "center", "interpolation": interpolation,
           "num_classes": int(info.num_classes)}
    if label_names is not None:
        cfg["label_names"] = [str(name) for name in label_names]
    return cfg


def dataset_label_names(dataset) -> list[str] | None:
    """The class names of a torchvision-style dataset (ImageFolder, CIFAR: `.classes`), looking through
    `Subset`s; None when it has none (the built-in synthetic and digits sets: their labels are numbers)."""
    while not hasattr(dataset, "classes") and hasattr(dataset, "dataset"):
        dataset = dataset.dataset
    classes = getattr(dataset, "classes", None)
    return [str(name) for name in classes] if classes is not None else None


def _attached_cfg(ckpt: dict[str, Any], config: SepViTConfig) -> dict[str, Any]:
    """timm's types (tuples) for a stored pretrained_cfg; a checkpoint from before it was stored still gets the
    model's own input size and classes (its normalisation is unknown, so timm's defaults stay)."""
    stored = ckpt.get("pretrained_cfg") or {"input_size": [config.in_chans, config.img_size, config.img_size],
                                            "num_classes": config.num_classes}
    return {key: tuple(value) if isinstance(value, list) else value for key, value in stored.items()}


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu"):
    """The `SepViT` stored in a checkpoint (best.pth or last.pth), in eval mode, with the run's `pretrained_cfg`."""
    return model_from_checkpoint(load_checkpoint(path, map_location), path)


def model_from_checkpoint(ckpt: dict[str, Any], path: str | os.PathLike, ema: bool = False):
    """The `SepViT` of a loaded checkpoint (read from `path`), in eval mode, with the run's `pretrained_cfg`: its
    raw weights, or with `ema` those of the EMA that a last.pth keeps for a run trained with --model-ema."""
    config = SepViTConfig.from_dict(ckpt["config"])
    state = ckpt["model"]
    if ema:
        if ckpt.get("ema") is None:
            raise CheckpointError(f"{path}: the run kept an EMA, but the checkpoint holds none")
        state = {k.removeprefix("module."): v for k, v in ckpt["ema"].items()}  # timm's ModelEmaV3 wraps the model
    model = config.build()
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: its weights do not fit its own configuration "
                              f"({str(exc).splitlines()[0]}): the file was edited or written by other code") from None
    model.pretrained_cfg = model.default_cfg = _attached_cfg(ckpt, config)  # both names, as timm's builder sets
    return model.eval()
