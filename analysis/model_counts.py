"""Whole models counted three ways, by name (workbench presets and any timm model): analytic, fvcore, ptflops.

All counts are MACs (multiply-add = 1), batch 1, one forward pass. `measure_model` gives one row: parameters,
the analytic count of our models (`analysis.analytic_macs`, paper and fvcore conventions), fvcore with an SDPA
handle (norms and attention matmuls split out) and ptflops (`analysis.counters`).
"""
from __future__ import annotations

import difflib
import functools
from typing import Any, Sequence

import timm
import torch

import sepvit  # noqa: F401  (registers the sepvit_* models with timm)
from sepvit.config import PRESETS, SepViTConfig
from workbench.cli import UsageError

from analysis.analytic_macs import model_macs
from analysis.counters import count_params, fvcore_count, ptflops_count


@functools.lru_cache(maxsize=1)
def known_model_names() -> tuple[str, ...]:
    return tuple(sorted(set(timm.list_models()) | set(PRESETS)))


def check_model_name(name: str) -> str:
    """`name` if timm or the workbench knows it, else UsageError listing the closest known names."""
    known = list(known_model_names())
    if name in known:
        return name
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    hint = f"closest known names: {', '.join(close)}" if close else "see timm.list_models() or the sepvit_* presets"
    raise UsageError(f"unknown model {name!r}; {hint}")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def build_config(name: str, img_size: int | None = None, **changes: Any) -> tuple[SepViTConfig, str]:
    """The config of workbench model `name` built for `img_size`, and a note.

    A model is built for the size it will run at. Where its config refuses that size (e.g. a group of 2x2
    windows does not fit a small map), it is built at its own size and run at `img_size`, which the model
    supports (padding, resized window tokens); the note says so.
    """
    try:
        base = SepViTConfig.preset(name, **changes)
    except (TypeError, ValueError) as error:
        raise UsageError(f"{name}: {error}") from None
    if img_size is None or img_size == base.img_size:
        return base, ""
    try:
        return base.replace(img_size=img_size), ""
    except ValueError as error:
        return base, f"built at {base.img_size} px and run at {img_size} px ({error})"


def build_model(name: str, img_size: int | None = None, **kwargs: Any):
    """(model in eval mode, SepViTConfig or None for timm models, input size, note) for a model name.

    timm models whose size is fixed at creation (Swin) are created for `img_size`; a model that cannot be
    created for it raises UsageError with one line.
    """
    check_model_name(name)
    if name in PRESETS:
        cfg, note = build_config(name, img_size, **kwargs)
        return cfg.build().eval(), cfg, img_size or cfg.img_size, note
    default = _timm_default_size(name)
    size = img_size or default
    extra = dict(kwargs)
    if size != default:
        extra["img_size"] = size
    try:
        model = timm.create_model(name, pretrained=False, **extra)
    except TypeError as error:
        if "img_size" not in extra:
            raise UsageError(f"{name}: {_first_line(error)}") from None
        extra.pop("img_size")  # the model takes any size at run time
        try:
            model = timm.create_model(name, pretrained=False, **extra)
        except Exception as error2:  # noqa: BLE001  (any construction failure is a usage error here)
            raise UsageError(f"{name}: {_first_line(error2)}") from None
    except Exception as error:  # noqa: BLE001
        raise UsageError(f"{name} cannot be built for {size} px input: {_first_line(error)}") from None
    return model.eval(), None, size, ""


def _timm_default_size(name: str) -> int:
    try:
        return int(timm.models.get_pretrained_cfg(name).input_size[-1])
    except Exception:  # noqa: BLE001  (no pretrained cfg: assume the ImageNet default)
        return 224


# ================================================================================== whole models, measured
def measure_model(name: str, img_size: int | None = None, *, with_ptflops: bool = True,
                  **kwargs: Any) -> dict[str, Any]:
    """One row of the whole-model table: params, analytic MACs (ours only), fvcore, ptflops (all MACs)."""
    model, cfg, size, note = build_model(name, img_size, **kwargs)
    in_chans = cfg.in_chans if cfg is not None else getattr(model, "in_chans", 3)
    shape = (in_chans, size, size)
    try:
        counted = fvcore_count(model, torch.zeros(1, *shape))
        ptflops = ptflops_count(model, shape) if with_ptflops else None
    except Exception as error:  # noqa: BLE001  (a model that cannot run on this input)
        raise UsageError(f"{name} cannot run on a {in_chans}x{size}x{size} input: {_first_line(error)}") from None
    analytic = model_macs(cfg, size) if cfg is not None else None
    return dict(
        model=name,
        img_size=size,
        params=count_params(model),
        macs_analytic=analytic.paper if analytic else None,
        macs_analytic_norms=analytic.fvcore if analytic else None,
        macs_fvcore=counted.total,
        fvcore_norms=counted.norms,
        macs_fvcore_no_norms=counted.without_norms,
        fvcore_attention_matmuls=counted.attention_matmuls,
        macs_ptflops=ptflops,
        note=note,
    )


def model_table(names: Sequence[str], img_size: int | None = None, *, with_ptflops: bool = True,
                **kwargs: Any) -> list[dict[str, Any]]:
    for name in names:  # fail on a bad name before counting anything
        check_model_name(name)
    if kwargs and not any(name in PRESETS for name in names):
        raise UsageError("--model-kwargs sets SepViTConfig fields: it needs at least one sepvit_* model")
    return [measure_model(name, img_size, with_ptflops=with_ptflops, **(kwargs if name in PRESETS else {}))
            for name in names]

