"""Checkpoints: written atomically, read with `torch.load(weights_only=True)`.

Two kinds, both plain dicts of tensors and JSON-like values (so `weights_only=True` loads them):
- `last.pth` (every epoch): everything needed to resume — model, optimizer, scheduler, EMA, RNG states,
  model/training configs, the epoch just finished, the metric history and the MLflow run ids.
- `best.pth`: {"model", "config", "train_config", "epoch", "metrics"} — what `load_model` needs.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sepvit.config import SepViTConfig


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write `state` to `path` atomically: a reader (or a crash) never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic on POSIX and Windows when on the same file system
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict safely (`weights_only=True`: tensors and plain types only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: pass the path of a last.pth or best.pth file")
    return torch.load(path, map_location=map_location, weights_only=True)


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu"):
    """The `SepViT` stored in a checkpoint (best.pth or last.pth), in eval mode."""
    ckpt = load_checkpoint(path, map_location)
    model = SepViTConfig.from_dict(ckpt["config"]).build()
    model.load_state_dict(ckpt["model"])
    return model.eval()


# ---------------------------------------------------------------------------------- RNG states
def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as tensors and plain values (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    state = {
        "python": _to_plain(random.getstate()),
        "numpy": {
            "kind": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_to_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_plain(value):
    return [_to_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


def _to_tuple(value):
    return tuple(_to_tuple(v) for v in value) if isinstance(value, list) else value
