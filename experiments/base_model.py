"""The base model of a training command: --model, --model-kwargs, --drop-path and --img-size as a SepViTConfig.

The flags are declared by `workbench.cli.add_model_flags` (and `--img-size` by TrainConfig's flags); every
configuration a command trains (an ablation's switches, a search's trials) starts from this one.
"""
from __future__ import annotations

import argparse

from sepvit.config import PRESETS, SepViTConfig
from workbench.cli import UsageError
from workbench.fields import parse_assignments

DEFAULT_MODEL = "sepvit_nano_32"
# Model fields the data decides: the dataset sets classes and channels, --img-size the input size.
DATA_OWNED = {"img_size": "--img-size", "in_chans": "the dataset", "num_classes": "the dataset"}


def base_config(args: argparse.Namespace) -> SepViTConfig:
    """--model + --model-kwargs + --drop-path + --img-size: the configuration every change starts from."""
    if args.model not in PRESETS:
        raise UsageError(f"unknown model {args.model!r}: use one of {', '.join(PRESETS)}")
    overrides = parse_assignments(SepViTConfig, args.model_kwargs)
    for name, owner in DATA_OWNED.items():
        if name in overrides:
            raise UsageError(f"--model-kwargs {name}: the {name.replace('_', ' ')} is set by {owner}, not the model: "
                             f"drop it{' and pass --img-size' if owner == '--img-size' else ''}")
    if args.drop_path is not None:
        overrides["drop_path_rate"] = args.drop_path
    if args.img_size is not None:
        overrides["img_size"] = args.img_size
    return SepViTConfig.preset(args.model, **overrides)
